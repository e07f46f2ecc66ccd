"""pytest fixtures; the shared helpers live in :mod:`tests.helpers`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
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
