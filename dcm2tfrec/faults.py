"""Test-only fault injection: make a worker or the parent misbehave at a named point.

Tests set ``DCM2TFREC_TEST_FAULTS`` to a JSON object. Keys are image ids (a worker acts on that
row: ``abort``, ``segfault``, ``kill``, ``hang``, ``memory``) or parent points starting with
``@`` (``kill``: SIGKILL the parent there, e.g. ``@row:15``, ``@publish:1``,
``@journal:1``, ``@write:manifest.json``). Unset, every check is one dictionary lookup.
Row faults act only in worker processes that an engine armed with :func:`arm` when it started them.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time

FAULTS_ENV = "DCM2TFREC_TEST_FAULTS"


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


_armed: dict[str, str] = {}


def arm(faults: str) -> None:
    """Set this worker process's row faults from a fault spec (the engine's start-up hook)."""
    _armed.clear()
    _armed.update(json.loads(faults) if faults else {})


def inject_row_fault(image_id: str) -> None:
    """Act out the fault armed for ``image_id``, if any (a worker-side hook)."""
    action = _armed.get(image_id)
    if action == "abort":
        os.abort()
    elif action == "segfault":
        ctypes.string_at(0)
    elif action == "kill":
        _kill_self()
    elif action == "hang":
        time.sleep(3600)
    elif action == "memory":
        bytearray(1 << 40)


def fault_point(point: str, where: object) -> None:
    """SIGKILL this process when the environment's fault spec says ``{"@point:where": "kill"}``
    (the name is only built when a spec is set: this runs once per record)."""
    faults = os.environ.get(FAULTS_ENV)
    if faults and json.loads(faults).get(f"@{point}:{where}") == "kill":
        _kill_self()
