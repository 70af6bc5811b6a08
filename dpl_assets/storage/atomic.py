"""Atomic file writes: write to a temp name in the same folder, fsync, then rename.

A killed run therefore leaves either the previous complete file or none, never a partial
file under the final name; leftover temp files start with ``.tmp-{pid}-`` (the writer's
process id), are never read, and :func:`remove_dead_temps` deletes those whose writer is
gone.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: the only way to learn the umask is to set it


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside ``final``; on success it is renamed onto ``final``.

    The temp name keeps ``final``'s extension, so writers that infer a format from the
    suffix (soundfile, numpy) still work.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{TEMP_PREFIX}{os.getpid()}-"
    fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=final.suffix, dir=final.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    os.close(fd)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_path(final) as temp:
        temp.write_bytes(data)


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def remove_dead_temps(root: Path, skip: tuple[str, ...] = (".dagster",)) -> list[Path]:
    """Delete temp files under ``root`` left by writers that no longer run (killed runs).

    Only names ``.tmp-{pid}-...`` whose process is gone are removed, so concurrent writers
    are never disturbed. Folders named in ``skip`` are not entered. Returns what was removed.
    """
    removed = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in skip]
        for name in files:
            if not name.startswith(TEMP_PREFIX):
                continue
            pid = name[len(TEMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                path = Path(folder) / name
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
