"""Inter-process locks on lock files: filelock's ``UnixFileLock`` (``fcntl.flock``), freed by
the OS when the holder dies (also of SIGKILL), so a crash never leaves a stale lock.

Every lock in the project is made here, by :func:`file_lock`, with the filelock settings
it relies on:

- ``thread_local=False``: one lock object, whichever thread holds it (claims taken by the
  per-video loop's worker threads are released by the step's thread, see
  :mod:`dpl_assets.assets.batch`);
- ``fallback_to_soft=False``: on a file system without ``flock``, fail instead of falling
  back to marker files, which a killed process would leave locked;
- one lock object per holder (no singleton): ``flock`` belongs to an open file description,
  so two lock objects on one file exclude each other, also within one process.

Uses:

- :func:`exclusive`: a lock around a short critical section, waiting for other holders
  (creating the Dagster instance, updating the catalog, appending to a dataset pack);
- :func:`try_lock`: one attempt, never waiting (the GPU leases of :mod:`dpl_assets.devices`);
- :class:`Claim`: a non-blocking claim on one piece of work (a video's asset being computed);
  the file is deleted when the claim is released, so claims leave nothing behind;
- :func:`writer_token` / :func:`writer_alive`: each process holds a lock on a marker file of
  its own while it lives; files it stages carry its token, and another process deletes them
  only once it can take that lock (the writer is dead). A process id alone could be reused
  by an unrelated process; a token is never reused (pid plus random bytes).

A forked child does not inherit its parent's locks (filelock closes the child's copies of the
descriptors without unlocking them). Keep lock files on a local file system (``flock`` over
NFS depends on the server).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import Timeout, UnixFileLock

POLL_S = 0.05
"""Seconds between attempts while waiting for a lock another process holds."""


def file_lock(
    path: Path, *, mode: int | None = None, on_acquired: Callable[[int], None] | None = None
) -> UnixFileLock:
    """A lock on ``path`` (created, with its folder, on first acquire; not yet held).

    ``mode``: the lock file's permissions (default: 0o666 less the umask);
    ``on_acquired``: called with the file's descriptor each time the lock is taken (it may
    write to the file, e.g. who holds it).
    """
    if mode is None:  # filelock's default: 0o666 less the umask
        return UnixFileLock(
            path, thread_local=False, fallback_to_soft=False, on_acquired=on_acquired
        )
    return UnixFileLock(
        path, mode=mode, thread_local=False, fallback_to_soft=False, on_acquired=on_acquired
    )


def try_lock(lock: UnixFileLock) -> bool:
    """Take ``lock`` if no one else holds it, without waiting; whether it is held now."""
    if lock.is_locked:
        return True
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return False
    return True


@contextlib.contextmanager
def exclusive(path: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the ``with`` block; wait for other holders
    (at most ``timeout_s`` seconds, then :class:`TimeoutError`). The file stays."""
    lock = file_lock(path)
    try:
        lock.acquire(timeout=-1 if timeout_s is None else timeout_s, poll_interval=POLL_S)
    except Timeout:
        raise TimeoutError(f"{path} stayed locked for {timeout_s} s") from None
    try:
        yield
    finally:
        lock.release()


class Claim:
    """A claim on one piece of work, held by this process until :meth:`release`.

    :meth:`try_acquire` never waits; :meth:`wait` waits until the holder releases the claim
    (or dies) and then holds it. Release deletes the file. Any thread may release it.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = file_lock(path)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def try_acquire(self) -> bool:
        return try_lock(self._lock)

    def wait(self, poll_s: float = POLL_S) -> None:
        """Block until the claim is ours (polling, so a waiting thread can be abandoned)."""
        while not self.try_acquire():
            time.sleep(poll_s)

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        # Deleted while still locked: a process that opened the old file before it went
        # finds it unlinked once it has the lock, and filelock does not count that as held.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._lock.release()


# --------------------------------------------------------------------------------------
# Writer tokens: which process staged a file, and whether it still lives
# --------------------------------------------------------------------------------------

_tokens_lock = threading.Lock()
_token: tuple[int, str] | None = None  # (pid, token): a forked child makes its own
_markers: dict[Path, UnixFileLock] = {}  # marker folder -> this process's marker lock


def writer_token(marker_dir: Path) -> str:
    """This process's token (``{pid}-{8 hex}``), with its marker in ``marker_dir`` locked
    for as long as the process lives. Name files you may leave behind with it."""
    global _token
    with _tokens_lock:
        pid = os.getpid()
        if _token is None or _token[0] != pid:
            _token = (pid, f"{pid}-{secrets.token_hex(4)}")
            _markers.clear()  # the parent's locks are not ours
        marker_dir = marker_dir.resolve()
        if marker_dir not in _markers:
            marker = file_lock(marker_dir / f"{_token[1]}.lock")
            if not try_lock(marker):  # nobody else ever holds a live token's marker long
                raise RuntimeError(f"cannot lock this process's marker in {marker_dir}")
            _markers[marker_dir] = marker
        return _token[1]


def writer_alive(marker_dir: Path, token: str) -> bool:
    """Whether the process that took ``token`` may still write (its marker is locked).

    A token without a marker never had one (the marker is made before any file named with
    the token) or its writer was found dead already: dead.
    """
    marker = marker_dir / f"{token}.lock"
    if not marker.exists():
        return False
    probe = file_lock(marker)
    if not try_lock(probe):
        return True
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()  # dead: its marker goes too (we hold it, so no one is misled)
    probe.release()
    return False
