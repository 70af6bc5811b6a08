"""Keep mediapipe's harmless C++ start-up lines out of the user's terminal.

mediapipe 0.10.21 writes, straight to file descriptor 2 and from its graph threads:

- ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` (TFLite, at the first model);
- ``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR``;
- ``W0000 ... inference_feedback_manager.cc:114] Feedback manager requires a model with a
  single signature inference...`` (absl, once per model and graph, at its first frame);
- ``W0000 ... landmark_projection_calculator.cc:186] Using NORM_RECT without
  IMAGE_DIMENSIONS...`` (absl, at the first face found; the mesh's ROI is square here).

No setting reaches them: the wheel's C++ absl logging reads no environment variable
(``GLOG_minloglevel`` only reaches its glog part, ``TF_CPP_MIN_LOG_LEVEL`` is not read),
Python's ``absl.logging`` is a different library, and the extension exports no symbol to
call ``absl::SetMinLogLevel`` or ``absl::InitializeLog``. So while mediapipe graphs exist
(:func:`quiet_native_logs` is entered when a model is created and left when it is
closed), file descriptor 2 is a pipe, and a thread copies everything written to it to the
real stderr except exactly those lines. Nothing else is dropped: Python's own output,
errors (``E...``), and every other warning pass through in order. Several models (one per
worker thread) share one pipe; the last one closed restores descriptor 2. A fatal error's
dump (:mod:`faulthandler`, where ``dpl`` turned it on:
:func:`dpl_assets.processes.show_native_crashes`) goes to the real stderr meanwhile: the
pump thread dies with the process before it could copy it.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import re
import sys
import threading
from collections.abc import Iterator

from dpl_assets import processes

NOISE = re.compile(
    rb"^(?:INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:. ]+\d+ (?:inference_feedback_manager|landmark_projection_calculator)"
    rb"\.cc:\d+\] )"
)
"""Lines dropped: the known start-up lines listed above, nothing else."""

_lock = threading.Lock()
_users = 0
_saved_fd = -1
_pump: threading.Thread | None = None


def is_noise(line: bytes) -> bool:
    """Whether one line written to stderr is one of mediapipe's known start-up lines."""
    return NOISE.match(line) is not None


def _copy_lines(read_fd: int, out_fd: int) -> None:
    """Copy ``read_fd`` to ``out_fd`` line by line without the noise, until end of file."""
    pending = b""
    try:
        while chunk := os.read(read_fd, 65536):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
            # A partial line (a progress bar's "\r...") goes out at once unless it may be
            # the start of a noise line (they start with I, W or INFO/WARNING).
            if pending and pending[:1] not in (b"I", b"W"):
                kept, pending = kept + pending, b""
            if kept:
                os.write(out_fd, kept)
        if pending and not is_noise(pending):
            os.write(out_fd, pending)
    finally:
        os.close(read_fd)
        os.close(out_fd)


def _start() -> None:
    global _saved_fd, _pump
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    _saved_fd = os.dup(2)
    _pump = threading.Thread(
        target=_copy_lines, args=(read_fd, os.dup(_saved_fd)), name="dpl-stderr", daemon=True
    )
    _pump.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    if processes.native_crashes_shown():  # a fatal error's dump must not wait on the pump
        faulthandler.enable(file=_saved_fd)


def _stop() -> None:
    global _saved_fd, _pump
    sys.stderr.flush()
    os.dup2(_saved_fd, 2)  # the pipe's last write end in this process: the pump sees EOF
    if processes.native_crashes_shown():
        faulthandler.enable(file=2)  # not the saved copy, closed below
    os.close(_saved_fd)
    _saved_fd = -1
    if _pump is not None:
        # A child process started meanwhile may still hold the pipe: do not wait for it.
        _pump.join(timeout=2.0)
        _pump = None


def acquire() -> None:
    """Start filtering descriptor 2 (nested: every call needs one :func:`release`)."""
    global _users
    with _lock:
        _users += 1
        if _users == 1:
            _start()


def release() -> None:
    """End one :func:`acquire`; the last restores descriptor 2 and flushes the copy."""
    global _users
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0:
            _stop()


@atexit.register
def _restore_at_exit() -> None:
    """A model never closed: put descriptor 2 back so the last lines are not lost."""
    global _users
    with _lock:
        if _users:
            _users = 0
            _stop()


@contextlib.contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Filter mediapipe's start-up lines from descriptor 2 within the block."""
    acquire()
    try:
        yield
    finally:
        release()
