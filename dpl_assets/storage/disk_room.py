"""Free space kept on the output's file system, so no write meets a full disk.

HDF5 does not survive a full disk: a write refused with ENOSPC can leave the library's
state broken, and the process dies of a segmentation fault at a later HDF5 call or at exit
(h5py issues 914 and 1120, "bug in external lib"). Measured here: ``dpl run`` into a
40 MB tmpfs exited 139 with no message, in ``h5py.Dataset.__setitem__`` of the frame
stack. So each HDF5 writer asks :func:`ensure_room` before it writes a block or creates a
file, and each step asks before each video: below the reserve, the write is refused with
:class:`NoRoom` (an :class:`OSError`, ``errno.ENOSPC``) naming the folder and the numbers,
before any library meets the full disk. What was saved before is kept: outputs are written
under temp names and renamed only once complete.

The reserve, ``DPL_MIN_FREE_MB`` (MB, default :data:`DEFAULT_MIN_FREE_MB`), is room for what
is written after the last check: HDF5's metadata on close, Dagster's event log, the
catalog and the report. ``DPL_MIN_FREE_MB=0`` turns the checks off, for file systems that
do not report their free space (some network and FUSE mounts say 0). Another process
filling the disk between a check and the write can still beat it; a check is a statvfs
call (microseconds locally, a round trip on NFS), made per block of frames.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import h5py

from dpl_assets.settings import bytes_from_mb_env

MIN_FREE_ENV = "DPL_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 512
_MB = 2**20


class NoRoom(OSError):
    """A write refused because the file system of ``folder`` would be left with less
    free space than the reserve. ``free`` and ``need`` are bytes."""

    def __init__(self, folder: Path, free: int, need: int, reserve: int):
        keeps = f"dpl keeps {reserve / _MB:.0f} MB free ({MIN_FREE_ENV})"
        needs = f"this write needs {need / _MB:.1f} MB and " if need >= _MB // 10 else ""
        short = needs + keeps
        message = (
            f"{folder}: {free / _MB:.0f} MB free on its file system; {short}: free some "
            f"space, or lower {MIN_FREE_ENV} (0 turns the check off), and run again (what "
            "was saved is kept)"
        )
        super().__init__(errno.ENOSPC, message)
        self.folder, self.free, self.need, self.reserve = folder, free, need, reserve

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple:  # crosses process boundaries (workers, Celery) intact
        return (type(self), (self.folder, self.free, self.need, self.reserve))


def reserve_bytes() -> int:
    """Bytes kept free: ``DPL_MIN_FREE_MB`` x 2**20, else :data:`DEFAULT_MIN_FREE_MB` MB.
    ValueError naming the variable when it is not a whole number >= 0 (``dpl run`` checks
    it before any work)."""
    given = bytes_from_mb_env(MIN_FREE_ENV)
    return DEFAULT_MIN_FREE_MB * _MB if given is None else given


def ensure_room(path: Path | str, need_bytes: int = 0) -> None:
    """Raise :class:`NoRoom` unless the file system holding ``path`` (a file or folder,
    existing or about to be made: its nearest existing folder is asked, and named) has
    ``need_bytes`` + the reserve free; nothing is checked with a reserve of 0. ValueError
    for a bad ``DPL_MIN_FREE_MB``."""
    reserve = reserve_bytes()
    if reserve == 0:
        return
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < need_bytes + reserve:
        raise NoRoom(folder, free, need_bytes, reserve)


def ensure_room_in(file: h5py.File, need_bytes: int = 0) -> None:
    """:func:`ensure_room` for an open HDF5 ``file`` about to grow by ``need_bytes``; files
    that never reach a disk (a Python file object, the core driver without a backing
    store) are not checked."""
    if file.driver == "fileobj":
        return
    if file.driver == "core" and not file.id.get_access_plist().get_fapl_core()[1]:
        return
    ensure_room(file.filename, need_bytes)


def no_room(path: Path | str) -> NoRoom | None:
    """The :class:`NoRoom` :func:`ensure_room` would raise for ``path`` (nothing more
    needed than the reserve), or None: whether an error met now may be the full disk's."""
    try:
        ensure_room(path)
    except NoRoom as full:
        return full
    except ValueError:  # a bad DPL_MIN_FREE_MB: said where the reserve is checked
        return None
    return None


__all__ = [
    "DEFAULT_MIN_FREE_MB",
    "MIN_FREE_ENV",
    "NoRoom",
    "ensure_room",
    "no_room",
    "reserve_bytes",
]
