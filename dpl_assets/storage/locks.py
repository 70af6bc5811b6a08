"""Inter-process locks on lock files: ``fcntl.flock``, freed by the OS when the holder dies.

Three uses, one mechanism (the GPU leases of :mod:`dpl_assets.devices` and the catalog lock
work the same way):

- :func:`exclusive`: a blocking lock around a short critical section (creating the Dagster
  instance, see :func:`dpl_assets.cli.open_instance`);
- :class:`Claim`: a non-blocking claim on one piece of work (a video's asset being computed,
  see :mod:`dpl_assets.assets.batch`); the file is deleted when the claim is released, so
  claims leave nothing behind;
- :func:`writer_token` / :func:`writer_alive`: each process holds a lock on a marker file of
  its own while it lives; files it stages carry its token, and another process deletes them
  only once it can take that lock (the writer is dead). A process id alone could be reused
  by an unrelated process; a token is never reused (pid plus random bytes).

``flock`` belongs to an open file description: two opens of one file in the same process do
exclude each other, and a killed process's locks are released at once (also with SIGKILL).
Keep lock files on a local file system (flock over NFS depends on the server).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.1


def _open_locked(path: Path, blocking: bool) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if needed), or None when another
    open file holds it and ``blocking`` is off. The fd's file is ``path`` on return: a file
    unlinked by its last holder between our open and our lock is retried."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # locked a file its holder had just removed: try the new one


@contextlib.contextmanager
def exclusive(path: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the ``with`` block; wait for other holders
    (at most ``timeout_s`` seconds, then :class:`TimeoutError`). The file stays."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while (fd := _open_locked(path, blocking=deadline is None)) is None:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{path} stayed locked for {timeout_s} s")
        time.sleep(POLL_S)
    try:
        yield
    finally:
        os.close(fd)  # closing the only fd releases the lock


class Claim:
    """A claim on one piece of work, held by this process until :meth:`release`.

    :meth:`try_acquire` never waits; :meth:`wait` waits until the holder releases the claim
    (or dies) and then holds it. Release deletes the file.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is None:
            self._fd = _open_locked(self.path, blocking=False)
        return self._fd is not None

    def wait(self, poll_s: float = POLL_S) -> None:
        """Block until the claim is ours (polling, so a waiting thread can be abandoned)."""
        while not self.try_acquire():
            time.sleep(poll_s)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked: a waiter then retries on a new file
        os.close(self._fd)
        self._fd = None


# --------------------------------------------------------------------------------------
# Writer tokens: which process staged a file, and whether it still lives
# --------------------------------------------------------------------------------------

_tokens_lock = threading.Lock()
_token: tuple[int, str] | None = None  # (pid, token): a forked child makes its own
_markers: dict[Path, int] = {}  # marker folder -> fd holding this process's marker lock


def writer_token(marker_dir: Path) -> str:
    """This process's token (``{pid}-{8 hex}``), with its marker in ``marker_dir`` locked
    for as long as the process lives. Name files you may leave behind with it."""
    global _token
    with _tokens_lock:
        pid = os.getpid()
        if _token is None or _token[0] != pid:
            _token = (pid, f"{pid}-{secrets.token_hex(4)}")
            _markers.clear()  # the parent's fds are not our locks
        marker_dir = marker_dir.resolve()
        if marker_dir not in _markers:
            fd = _open_locked(marker_dir / f"{_token[1]}.lock", blocking=False)
            if fd is None:  # nobody else ever opens a live token's marker to lock it long
                raise RuntimeError(f"cannot lock this process's marker in {marker_dir}")
            _markers[marker_dir] = fd
        return _token[1]


def writer_alive(marker_dir: Path, token: str) -> bool:
    """Whether the process that took ``token`` may still write (its marker is locked).

    A token without a marker never had one (the marker is made before any file named with
    the token) or its writer was found dead already: dead.
    """
    marker = marker_dir / f"{token}.lock"
    if not marker.exists():
        return False
    fd = _open_locked(marker, blocking=False)
    if fd is None:
        return True
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()  # dead: its marker goes too (we hold it, so no one is misled)
    os.close(fd)
    return False
