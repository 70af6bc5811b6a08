"""Which videos are pending, remembered: a rerun whose output folders did not change reuses
the last answer instead of listing folders of a million names.

:func:`pending_videos_cached` answers as :func:`dpl_assets.registration.pending_videos`
does (without ``include_rejected``) and keeps the answer in
``{output_dir}/_index/pending.json`` with the (inode, mtime) of every folder it was read
from (``{asset}/``, ``_status/{asset}/``), the assets and a digest of the video ids. The
answer is reused while the ids and assets are the same and no folder changed (see
:mod:`dpl_assets.folder_stamps`); answers longer than :data:`MAX_KEPT` ids are not kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from dpl_assets.folder_stamps import INDEX_DIR, folder_stamp, fs_clock, unchanged
from dpl_assets.registration import pending_videos
from dpl_assets.storage.atomic import atomic_write_text
from dpl_assets.storage.store import STATUS_DIR, ArtifactStore

STATE_NAME = "pending.json"
MAX_KEPT = 10_000


def pending_videos_cached(
    store: ArtifactStore, video_ids: Sequence[str], assets: Sequence[str], *, recompute: bool
) -> list[str]:
    """The videos some of ``assets`` is not done for, in order (see
    :func:`~dpl_assets.registration.pending_videos`); every video with ``recompute``."""
    if recompute:
        return list(video_ids)
    path = store.output_dir / INDEX_DIR / STATE_NAME
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        old = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    clock = fs_clock(path)
    folders = [folder for key in assets for folder in (key, f"{STATUS_DIR}/{key}")]
    # stamped before the folders are read: a change made meanwhile shows next time
    stamps = {folder: folder_stamp(store.output_dir / folder) for folder in folders}
    ids = hashlib.sha256("\n".join(video_ids).encode()).hexdigest()
    before = old.get("folders", {})
    if (
        old.get("assets") == list(assets)
        and old.get("ids") == ids
        and isinstance(old.get("pending"), list)
        and all(
            folder in before and unchanged(before[folder], stamp, old.get("clock"))
            for folder, stamp in stamps.items()
        )
    ):
        return list(old["pending"])
    pending = pending_videos(store, video_ids, assets)
    state = {"assets": list(assets), "ids": ids, "clock": clock, "folders": stamps,
             "pending": pending if len(pending) <= MAX_KEPT else None}  # fmt: skip
    atomic_write_text(path, json.dumps(state))
    return pending
