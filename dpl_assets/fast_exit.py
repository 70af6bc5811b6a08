"""Ending a finished process without the interpreter's teardown.

A process that imported torch, transformers, MediaPipe and Dagster spends 1.5-2 s on one
core when it exits (measured here: torch alone 0.6 s, torch + a wav2vec2 model 1.1 s),
tearing down modules and collecting garbage, after everything it made is saved. ``dpl run``
waits for its workers to exit and then exits itself, so that was ~3-4 s of one idle core
at the end of every run.

:func:`install` registers an ``atexit`` handler that ends the process with ``os._exit``
once the status is known (:func:`set_status`). ``atexit`` runs handlers last-registered
first, so the libraries imported after :func:`install` (Dagster, torch, ...) still run
their own exit handlers before it; the handler then shuts logging down, flushes the
standard streams and exits with the recorded status. Without a recorded status
(:func:`set_status` never called), or when an exception escaped (the interpreter printed
it: status 1), the process exits as usual.
Call :func:`install` early: handlers registered before it are skipped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

_state: dict[str, int | bool | None] = {"installed": False, "status": None}


def install() -> None:
    """Register the handler (once per process); see the module docstring."""
    if not _state["installed"]:
        atexit.register(_exit_now)
        _state["installed"] = True


def set_status(status: int) -> None:
    """The exit status the handler ends the process with (0-255)."""
    _state["status"] = int(status)


def _exit_now() -> None:
    status = _state["status"]
    if status is None or getattr(sys, "last_value", None) is not None:
        return  # no status recorded, or an exception escaped (status 1): the usual teardown
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
    os._exit(int(status))
