"""The catalog's database: per-row writes, concurrent writers, migration of ``catalog.json``."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from dpl_assets.catalog import Catalog, fingerprint
from dpl_assets.discovery import parse_inputs


def make_videos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.mp4").write_bytes(b"stand-in " + name.encode())


def rows_written(catalog: Catalog, action) -> int:
    """The rows inserted, updated or deleted by ``action()`` on the catalog's connection."""
    conn = catalog._conn(create=True)
    assert conn is not None
    before = conn.total_changes
    action()
    return conn.total_changes - before


def test_a_scan_writes_only_the_rows_that_changed(tmp_path):
    videos = tmp_path / "videos"
    make_videos(videos, [f"clip{i:03d}" for i in range(200)])
    inputs = parse_inputs({"video": str(videos)})
    catalog = Catalog(tmp_path / "out")
    first = rows_written(catalog, lambda: catalog.register(inputs))
    assert first >= 200 * 3  # a video, its source and its fingerprint each

    assert rows_written(catalog, lambda: catalog.register(inputs)) == 0  # unchanged: nothing

    (videos / "clip007.mp4").write_bytes(b"new content, longer")
    changed = []
    assert rows_written(catalog, lambda: changed.append(catalog.register(inputs))) == 1
    assert changed[0].changed_ids == ["clip007"]

    make_videos(videos, ["late"])
    assert rows_written(catalog, lambda: catalog.register(inputs)) == 3  # video, source, print

    (videos / "clip011.mp4").unlink()
    assert rows_written(catalog, lambda: catalog.register(inputs)) == 1  # the removed mark
    assert "clip011" not in Catalog(tmp_path / "out").entries()
    assert "clip011" in Catalog(tmp_path / "out").entries(include_removed=True)

    catalog.save_graph([{"name": "VideoToWavNode", "params": {}}])
    assert rows_written(catalog, lambda: catalog.save_graph(catalog.saved_graph() or [])) == 0


def _register_many(out: str, videos: str, prefix: str, rounds: int) -> None:
    """One writer process: add a file, register, repeat (a fresh Catalog each time)."""
    for index in range(rounds):
        make_videos(Path(videos), [f"{prefix}{index:02d}"])
        Catalog(out).register(parse_inputs({"video": videos}))


def test_processes_registering_at_once_leave_a_consistent_catalog(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    make_videos(videos, ["old"])
    out.mkdir()  # an output dir from before the database: the writers race to migrate it
    (out / "catalog.json").write_text(json.dumps(old_catalog_json(videos, ["old"])))
    spawn = multiprocessing.get_context("spawn")
    writers = [
        spawn.Process(target=_register_many, args=(str(out), str(videos), prefix, 15))
        for prefix in ("a", "b", "c")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
        assert writer.exitcode == 0

    entries = Catalog(out).entries()
    paths = [entry.sources["video"] for entry in entries.values()]
    assert sorted(paths) == sorted(str(p) for p in videos.glob("*.mp4"))  # each file, once
    assert len(entries) == 1 + 3 * 15 and next(iter(entries)) == "old"  # order kept
    again = Catalog(out).register(parse_inputs({"video": str(videos)}))
    assert again.new_ids == [] and again.changed_ids == []
    assert not (out / "catalog.json").exists() and (out / "catalog.json.migrated").exists()


def old_catalog_json(videos: Path, names: list[str]) -> dict:
    """A ``catalog.json`` as the code before the database wrote it (same keys, same order)."""
    entries = {}
    for name in names:
        path = videos / f"{name}.mp4"
        entries[name] = {
            "stem": name,
            "sources": {"video": str(path)},
            "fingerprints": {"video": fingerprint(path)},
        }
    return {"videos": entries, "inputs": parse_inputs({"video": str(videos)}).to_json()}


def test_an_existing_catalog_json_is_migrated_on_first_open(tmp_path):
    videos, out = tmp_path / "videos", tmp_path / "out"
    make_videos(videos, ["b_first", "a_second", "gone"])
    data = old_catalog_json(videos, ["b_first", "a_second", "gone"])
    data["videos"]["gone"]["removed"] = True
    (videos / "gone.mp4").unlink()
    data["refused"] = [
        {"video_id": "link", "datatype": "video", "path": str(videos / "link.mp4"),
         "reason": "a symbolic link"},
    ]  # fmt: skip
    data["graph"] = [{"name": "VideoToWavNode", "params": {}}]
    out.mkdir()
    (out / "catalog.json").write_text(json.dumps(data, indent=1), encoding="utf-8")

    catalog = Catalog(out)
    assert list(catalog.entries()) == ["b_first", "a_second"]  # registration order kept
    assert catalog.entry("gone").sources["video"] == str(videos / "gone.mp4")
    assert catalog.saved_graph() == data["graph"]
    assert catalog.saved_inputs() == data["inputs"]
    assert [vars(entry) for entry in catalog.refused()] == data["refused"]
    assert catalog.snapshot() == data
    assert not (out / "catalog.json").exists()
    assert json.loads((out / "catalog.json.migrated").read_text()) == data  # kept, renamed

    registration = []
    written = rows_written(
        catalog, lambda: registration.append(catalog.register(parse_inputs({"video": str(videos)})))
    )
    # The fingerprints came along: nothing looks new or changed; the one row written is
    # the refused link, gone from the folder (it was never there).
    assert written == 1 and catalog.refused() == []
    assert registration[0].new_ids == registration[0].changed_ids == []


def test_an_empty_catalog_json_migrates_to_an_empty_catalog(tmp_path):
    (tmp_path / "catalog.json").write_text("{}")
    catalog = Catalog(tmp_path)
    assert catalog.entries() == {} and catalog.saved_graph() is None
    assert catalog.refused() == [] and (tmp_path / "catalog.sqlite").exists()


def test_reading_a_missing_catalog_creates_nothing(tmp_path):
    catalog = Catalog(tmp_path / "out")
    assert catalog.entries() == {} and catalog.saved_inputs() is None
    assert not (tmp_path / "out").exists()
