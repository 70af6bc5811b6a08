"""The incremental report (:mod:`dpl_assets.report_cache`) against a full rebuild.

Reference: every entry made afresh with :func:`dpl_assets.report.video_report` and the
whole document dumped with ``json.dumps(..., indent=1)``, as ``report.json`` was written
before entries were kept. After each change (a video re-run, a video removed and brought
back, a new rejection, a failed check, a new video) the incremental ``report.json`` must be
the same text, byte for byte; with nothing changed it must recompute nothing and leave the
file alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dpl_assets import report_cache
from dpl_assets.discovery import parse_inputs
from dpl_assets.outcomes import Rejected
from dpl_assets.report import refused_reports, video_report
from dpl_assets.report_cache import ReportCache
from dpl_assets.storage.store import ArtifactStore

DATATYPES = ["probe", "wav", "volume"]


def full_rebuild(store: ArtifactStore, video_ids: list[str]) -> str:
    entries = [asdict(video_report(store, vid, DATATYPES)) for vid in video_ids]
    entries += [asdict(r) for r in refused_reports(store)]
    statuses = ("processed", "rejected", "failed")
    summary = {s: sum(e["status"] == s for e in entries) for s in statuses}
    summary["failed_checks"] = sum(bool(e["failed_checks"]) for e in entries)
    document = {"summary": summary, "dataset": {}, "videos": entries}
    return json.dumps(document, indent=1, ensure_ascii=False)


def finish(store: ArtifactStore, video_id: str, seconds: float = 0.1) -> None:
    """What a finished run leaves for one video (written directly: nothing decoded)."""
    store.save("probe", video_id, {"video_id": video_id})
    store.save("wav", video_id, np.zeros(int(16000 * seconds), np.float32))
    store.save("volume", video_id, np.zeros(4, np.float32))


def report_once(store: ArtifactStore, inputs, path: Path) -> tuple[int, list[str]]:
    """Register, update the entries (only new videos named dirty: the rest must be found
    from the files), write; returns (entries recomputed, registered ids)."""
    registration = store.catalog.register(inputs, on_changed=store.forget)
    cache = ReportCache(store, DATATYPES)
    try:
        recomputed = cache.update(registration.all_ids, dirty=registration.new_ids)
        cache.write(path)
    finally:
        cache.close()
    return recomputed, registration.all_ids


def test_the_incremental_report_equals_a_full_rebuild_after_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(report_cache, "BATCH", 2)  # entries saved over several batches
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    names = [f"clip{index}" for index in range(6)]
    for name in names:
        (videos / f"{name}.mp4").write_bytes(b"stand-in " + name.encode())
    (videos / "outside.mp4").symlink_to(tmp_path / "elsewhere.mp4")  # refused: out of roots
    (tmp_path / "elsewhere.mp4").write_bytes(b"x")
    inputs = parse_inputs({"video": str(videos)})
    store = ArtifactStore(out)
    report = out / "report.json"
    store.catalog.register(inputs)
    for name in names[:5]:
        finish(store, name)

    recomputed, ids = report_once(store, inputs, report)
    assert recomputed == 6 and report.read_text() == full_rebuild(store, ids)
    assert json.loads(report.read_text())["videos"][-1]["status"] == "rejected"  # the link

    # A video re-run (longer audio), a new rejection, a failed check, a failure, a video
    # removed, one new; none of them named to the cache but the new one.
    finish(store, "clip0", seconds=0.5)
    store.save("volume", "clip2", Rejected(reason="clip2: too quiet", origin="volume"))
    store.save_check("wav", "clip3", ["all samples zero"])
    store.record_failure("volume", "clip5", "RuntimeError: boom")
    (videos / "clip1.mp4").unlink()
    (videos / "new.mp4").write_bytes(b"new")
    recomputed, ids = report_once(store, inputs, report)
    assert "clip1" not in ids and "new" in ids
    assert report.read_text() == full_rebuild(store, ids)
    document = json.loads(report.read_text())
    by_id = {entry["video_id"]: entry for entry in document["videos"]}
    assert by_id["clip0"]["stats"]["audio_s"] == 0.5
    assert by_id["clip2"]["status"] == "rejected" and by_id["clip3"]["failed_checks"]
    assert "boom" in by_id["clip5"]["reason"]

    # Nothing changed (past the clock's granularity): nothing recomputed, file untouched.
    time.sleep(0.3)
    report_once(store, inputs, report)  # folders now older than the clock: trusted
    before = report.stat().st_mtime_ns
    recomputed, ids = report_once(store, inputs, report)
    assert recomputed == 0 and report.stat().st_mtime_ns == before
    assert report.read_text() == full_rebuild(store, ids)

    # One change in a trusted folder: found from that folder alone; the removed video back
    # in its old place (the report's order is the catalog's).
    time.sleep(0.3)
    finish(store, "clip4", seconds=0.25)
    store.save("volume", "clip2", np.zeros(4, np.float32))  # the rejection replaced
    (videos / "clip1.mp4").write_bytes(b"stand-in clip1")
    recomputed, ids = report_once(store, inputs, report)
    assert ids.index("clip1") == 1
    assert recomputed == 3  # clip4, clip2, clip1 (restored)
    assert report.read_text() == full_rebuild(store, ids)


def test_entries_are_rebuilt_for_another_list_of_datatypes(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"a")
    store = ArtifactStore(out)
    ids = store.catalog.register(parse_inputs({"video": str(videos)})).all_ids
    finish(store, "a")
    for datatypes in (DATATYPES, ["wav"]):
        cache = ReportCache(store, datatypes)
        assert cache.update(ids) == 1
        assert [asdict(r) for r in cache.reports()] == [asdict(video_report(store, "a", datatypes))]
        cache.close()


def test_pending_videos_from_listings_equal_a_check_per_file(tmp_path):
    """Reference: the definition checked file by file (artefact exists, or a rejection)."""
    from dpl_assets.registration import pending_videos

    store = ArtifactStore(tmp_path / "out")
    ids = ["done", "rejected", "failed", "half", "none", "wav.only"]
    finish(store, "done")
    store.save("probe", "rejected", Rejected(reason="no", origin="probe"))
    store.save("wav", "rejected", Rejected(reason="no", origin="probe"))
    store.save("volume", "rejected", Rejected(reason="no", origin="probe"))
    store.record_failure("wav", "failed", "boom")
    store.save("probe", "half", {"video_id": "half"})
    store.save("wav", "wav.only", np.zeros(4, np.float32))

    def reference(include_rejected: bool) -> list[str]:
        def done(key: str, vid: str) -> bool:
            rejected = store.rejection_record_path(key, vid).exists() and not include_rejected
            return store.artifact_path(key, vid).exists() or rejected

        return [vid for vid in ids if not all(done(key, vid) for key in DATATYPES)]

    for include_rejected in (False, True):
        found = pending_videos(store, ids, DATATYPES, include_rejected=include_rejected)
        assert found == reference(include_rejected)
    assert pending_videos(store, ids, DATATYPES) == ["failed", "half", "none", "wav.only"]
    assert pending_videos(store, ids, DATATYPES, recompute=True) == ids


def test_pending_videos_are_reused_while_no_folder_changed(tmp_path, monkeypatch):
    from dpl_assets import pending_index
    from dpl_assets.registration import pending_videos

    store = ArtifactStore(tmp_path / "out")
    ids = ["a", "b", "c"]
    finish(store, "a")
    listed = []

    def counted(*args, **kwargs):
        listed.append(1)
        return pending_videos(*args, **kwargs)

    monkeypatch.setattr(pending_index, "pending_videos", counted)

    def pending() -> list[str]:
        return pending_index.pending_videos_cached(store, ids, DATATYPES, recompute=False)

    assert pending() == ["b", "c"] and len(listed) == 1
    time.sleep(0.3)  # past the clock's granularity
    assert pending() == ["b", "c"] and len(listed) == 2  # the folders were too new to trust
    assert pending() == ["b", "c"] and len(listed) == 2  # reused: nothing listed
    finish(store, "b")
    assert pending() == ["c"] and len(listed) == 3  # a folder changed
    time.sleep(0.3)
    pending()
    store.save("wav", "c", Rejected(reason="no", origin="wav"))  # _status/wav is new
    assert pending() == ["c"] and len(listed) == 5
    ids.append("d")  # another list of videos
    assert pending() == ["c", "d"] and len(listed) == 6
    assert pending_index.pending_videos_cached(store, ids, DATATYPES, recompute=True) == ids
