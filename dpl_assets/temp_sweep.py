"""Removing dead writers' temp files from an output dir without listing every folder each time.

:func:`dpl_assets.storage.atomic.remove_dead_temps` lists every folder of the output dir: a
million videos make folders of a million names each, seconds per rerun. A temp file can
only appear by being created in its folder, which changes the folder's mtime; so
:func:`sweep_dead_temps` remembers each folder's (inode, mtime) in
``{output_dir}/_index/temp_sweep.json`` and lists only folders that changed since the last
sweep (see :mod:`dpl_assets.folder_stamps`), or that still held a live writer's temp files
then.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dpl_assets.folder_stamps import INDEX_DIR, folder_stamp, fs_clock, unchanged
from dpl_assets.storage.atomic import TEMP_PREFIX, atomic_write_text, remove_dead_temps

STATE_NAME = "temp_sweep.json"


def sweep_dead_temps(root: Path, skip: tuple[str, ...] = (".dagster",)) -> list[Path]:
    """Delete the temp files of writers that no longer run under ``root`` (as
    :func:`~dpl_assets.storage.atomic.remove_dead_temps` does, folders named in ``skip``
    not entered), listing only the folders that changed since the last sweep. Returns what
    was removed."""
    state_path = root / INDEX_DIR / STATE_NAME
    try:
        old = json.loads(state_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        old = {}
    folders = old.get("folders", {})
    old_clock = old.get("clock")
    state_path.parent.mkdir(parents=True, exist_ok=True)
    clock = fs_clock(state_path)
    removed: list[Path] = []
    seen: dict[str, list] = {}
    stack = [""]
    while stack:
        relative = stack.pop()
        folder = root / relative if relative else root
        stamp = folder_stamp(folder)
        if stamp is None:
            continue
        before = folders.get(relative)
        # unchanged, and no live writer's temp file was left there
        if before is not None and unchanged(before[:2], stamp, old_clock) and before[2]:
            seen[relative] = before
            stack.extend(f"{relative}/{name}" if relative else name for name in before[3])
            continue
        clean, children = True, []
        for entry in _entries(folder):
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in skip:
                    children.append(entry.name)
                    stack.append(f"{relative}/{entry.name}" if relative else entry.name)
            elif entry.name.startswith(TEMP_PREFIX):
                clean = False  # decided below, by the same rule as remove_dead_temps
        if not clean:
            removed += remove_dead_temps(folder, skip=(*skip, *children))
            clean = not any(e.name.startswith(TEMP_PREFIX) for e in _entries(folder))
        seen[relative] = [*stamp, clean, children]
    atomic_write_text(state_path, json.dumps({"clock": clock, "folders": seen}))
    return removed


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as listing:
            return list(listing)
    except OSError:
        return []  # gone, unreadable: as os.walk does
