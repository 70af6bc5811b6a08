"""Telling whether a folder changed since an earlier look, without listing it.

Creating, removing or renaming a file in a folder changes the folder's mtime (and the
pipeline writes every file by renaming a finished temp file into place). A folder whose
(inode, mtime) is the same as at an earlier look, and whose mtime was then already older
than the file system's clock by more than its timestamp granularity, has had no entry
created, removed or renamed since. Clock readings are the file system's own (the mtime of
a file just touched), so a network file system's server clock is what counts. Used by the
incremental report (:mod:`dpl_assets.report_cache`) and the temp-file sweep
(:mod:`dpl_assets.temp_sweep`), which keep their records in ``{output_dir}/_index/``.
"""

from __future__ import annotations

import os
from pathlib import Path

INDEX_DIR = "_index"
"""Derived bookkeeping of an output dir (rebuilt when deleted; never an artefact)."""


def fs_clock(path: Path) -> int:
    """The file system's time now (ns): the mtime of ``path``, touched (created if
    missing)."""
    path.touch()
    os.utime(path)
    return os.stat(path).st_mtime_ns


def granularity(clock_ns: int) -> int:
    """Nanoseconds within which two changes may get the same timestamp: 2 s on a file
    system with whole-second times (its clock reads a whole second), else 0.1 s."""
    return 2_000_000_000 if clock_ns % 1_000_000_000 == 0 else 100_000_000


def folder_stamp(path: Path) -> list[int] | None:
    """``[inode, mtime_ns]`` of a folder, or None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return [stat.st_ino, stat.st_mtime_ns]


def unchanged(before: object, now: list[int] | None, clock_before: object) -> bool:
    """Whether a folder stamped ``now`` had no entry made, removed or renamed since it was
    stamped ``before`` at a look whose clock read ``clock_before``."""
    return (
        isinstance(clock_before, int)
        and before == now
        and (now is None or now[1] < clock_before - granularity(clock_before))
    )
