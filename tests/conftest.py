"""pytest fixtures; the shared helpers live in :mod:`tests.helpers`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def dataset(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Factory: ``dataset(files: dict[id, (writer kwargs)], extra_rows=[...])`` -> (labels, images)."""
    from .helpers import build_dataset

    def build(
        files: dict[str, dict[str, Any]], extra_rows: Iterable[dict[str, Any]] = ()
    ) -> tuple[Path, Path]:
        return build_dataset(tmp_path, files, extra_rows)

    return build


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A real S3 API (moto's server) on 127.0.0.1, for the whole session; yields the storage options
    that reach it (fake credentials, its endpoint), which tests pass explicitly so that worker
    processes started before this fixture reach it too."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in _AWS}
    os.environ.update(_AWS)
    try:
        yield {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
