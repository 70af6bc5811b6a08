"""``Catalog.register`` compares the scan with the catalog by column, statting each file once
(the steady rescan of a million files). It must register exactly what the straightforward
per-video algorithm it replaced registered: that algorithm is kept here as the reference
and both run side by side on one tree through new, changed, removed, restored, filtered,
linked, colliding and settling files, other roots, and a change of the primary datatype."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dpl_assets import catalog_db
from dpl_assets.catalog import Catalog, RefusedEntry, Registration, fingerprint
from dpl_assets.discovery import InputRoots, assign_ids, parse_inputs, scan_source_files


def reference_register(
    catalog: Catalog, inputs: InputRoots, on_changed, settle_s: float = 0.0
) -> Registration:
    """The registration before the columnar one: a dict per video, diffed before/after."""
    conn = catalog._conn(create=True)
    assert conn is not None
    before = catalog_db.load_videos(conn)
    videos = {
        vid: {
            "stem": row["stem"],
            "sources": dict(row["sources"]),
            "fingerprints": dict(row["fingerprints"]),
            "removed": row["removed"],
        }
        for vid, row in before.items()
    }
    primary = inputs.primary_key
    taken = {vid: e["sources"].get(primary, "") for vid, e in videos.items()}
    found, refused = scan_source_files(inputs, primary)
    if settle_s > 0:
        known, now = set(taken.values()), time.time()
        found = [
            f for f in found if str(f.path) in known or now - f.path.stat().st_mtime >= settle_s
        ]
    assignment = assign_ids(found, taken)
    for vid, source in assignment.new.items():
        videos[vid] = {"stem": source.stem, "sources": {primary: str(source.path)},
                       "fingerprints": {}, "removed": False}  # fmt: skip
    by_stem: dict[str, list[str]] = {}
    for vid, entry in videos.items():
        by_stem.setdefault(entry["stem"], []).append(vid)
        if primary in entry["sources"]:
            entry["sources"] = {primary: entry["sources"][primary]}
    for key in inputs.roots:
        if key != primary:
            others, refused_here = scan_source_files(inputs, key)
            refused += refused_here
            for source in others:
                for vid in by_stem.get(source.stem, []):
                    videos[vid]["sources"][key] = str(source.path)
    changed, removed, restored = [], [], []
    for vid, entry in videos.items():
        prints = entry["fingerprints"]
        current = {key: fingerprint(path) for key, path in entry["sources"].items()}
        if current.get(primary) is None:
            if not entry["removed"]:
                entry["removed"] = True
                removed.append(vid)
            continue
        if entry["removed"]:
            entry["removed"] = False
            restored.append(vid)
        if (vid not in assignment.new and prints) and (
            set(prints) != {key for key, value in current.items() if value is not None}
            or any(key in prints and prints[key] != value for key, value in current.items())
        ):
            changed.append(vid)
        entry["fingerprints"] = {k: v for k, v in current.items() if v is not None}
    for vid in changed:
        on_changed(vid)
    entries = [RefusedEntry.of(file) for file in refused]
    conn.execute("BEGIN IMMEDIATE")
    for vid, row in videos.items():
        if vid not in before:
            catalog_db.insert_video(conn, vid, row)
        elif before[vid] != row:
            catalog_db.update_video(conn, vid, before[vid], row)
    catalog_db.set_meta(conn, "inputs", inputs.to_json())
    catalog_db.replace_refused(conn, [vars(e) for e in entries])
    conn.execute("COMMIT")
    return Registration(
        new_ids=list(assignment.new),
        all_ids=[vid for vid, entry in videos.items() if not entry["removed"]],
        disambiguated=[str(s.path) for s in assignment.disambiguated],
        changed_ids=changed,
        removed_ids=removed,
        restored_ids=restored,
        refused=entries,
    )


def write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


@pytest.fixture
def tree(tmp_path):
    videos, more, wavs, aacs, outside = (tmp_path / name for name in (
        "videos", "more", "wavs", "aacs", "outside"))  # fmt: skip
    for relative in ("a.mp4", "b.MOV", "s1/c.mp4", "s1/deep/d.mkv", "s2/e.mp4", "skip/f.mp4",
                     ".hidden.mp4", ".cache/g.mp4", "notes.txt", "x.mp4", "gone.mp4"):  # fmt: skip
        write(videos / relative, f"video {relative}")
    write(more / "x.mp4", "another x")  # the same relative path under a second video root
    for relative in ("a.wav", "s1/c.wav", "nobody.wav"):
        write(wavs / relative, f"wav {relative}")
    write(aacs / "a.m4a", "aac")
    write(aacs / "a.aac", "aac, the same stem")
    write(outside / "o.mp4", "outside")
    (videos / "inside_link.mp4").symlink_to(videos / "s2" / "e.mp4")
    (videos / "escape.mp4").symlink_to(outside / "o.mp4")
    (videos / "broken.mp4").symlink_to(videos / "nothing.mp4")
    (videos / "folder_link").symlink_to(outside)
    return tmp_path


def test_register_gives_the_registration_and_catalog_of_the_reference(tree):
    videos, wavs, aacs = tree / "videos", tree / "wavs", tree / "aacs"
    catalog, reference = Catalog(tree / "out"), Catalog(tree / "reference")
    full = {"video": [str(videos), str(tree / "more")], "wav": str(wavs), "aac": str(aacs),
            "filters": {"exclude": ["skip/*"]}}  # fmt: skip

    def step(spec: dict, settle_s: float = 0.0) -> Registration:
        inputs = parse_inputs(spec)
        seen: list[str] = []
        expected: list[str] = []
        got = catalog.register(inputs, on_changed=seen.append, settle_s=settle_s)
        want = reference_register(reference, inputs, expected.append, settle_s)
        assert got == want
        assert seen == expected == want.changed_ids
        assert catalog.snapshot() == reference.snapshot()
        assert catalog.entries(include_removed=True) == reference.entries(include_removed=True)
        return got

    first = step(full)
    assert "a" in first.all_ids and "skip_f" not in first.all_ids and first.disambiguated
    assert step(full).new_ids == []  # steady: nothing new, nothing changed
    # new files (one colliding with a registered id), changed video and wav, removals
    write(videos / "late.mp4", "late")
    write(videos / "a.mkv", "a's other extension")
    write(videos / "s1" / "c.mp4", "changed video content")
    write(wavs / "a.wav", "changed wav content")
    (videos / "gone.mp4").unlink()
    (wavs / "s1" / "c.wav").unlink()
    write(wavs / "s2" / "e.wav", "a wav appears")
    busy = step(full)
    assert busy.new_ids and busy.changed_ids and busy.removed_ids == ["gone"]
    # restored with other content; a registered file now excluded by a filter; a file too
    # fresh to register; the escaping link fixed into a real file
    write(videos / "gone.mp4", "back, and different")
    write(videos / "fresh.mp4", "still being copied")
    (videos / "escape.mp4").unlink()
    write(videos / "escape.mp4", "now a real file")
    filtered = {**full, "filters": {"exclude": ["skip/*", "s2/*"]}}
    restored = step(filtered, settle_s=3600)
    assert restored.restored_ids == ["gone"] and "fresh" not in restored.all_ids
    step(filtered)
    # the wav root dropped: the videos with a wav change (their set of sources)
    no_wav = {"video": full["video"], "aac": str(aacs)}
    assert step(no_wav).changed_ids
    # the primary datatype changes to wav: the videos without a wav are removed
    step({"wav": str(wavs), "aac": str(aacs)})
    step({"wav": str(wavs), "aac": str(aacs)})
    step(full)  # and back
    os.utime(videos / "a.mp4", ns=(1, 1))  # the same size, another modification time
    assert step(full).changed_ids == ["a"]
    step(full)


def test_video_only_rescans_match_the_reference_too(tmp_path):
    """Only a video root (the path-by-path comparison decides which videos to look at),
    and a catalog with a video without its fingerprint (the per-video comparison)."""
    videos = tmp_path / "videos"
    for index in range(30):
        write(videos / f"s{index % 3}" / f"v{index:02d}.mp4", f"video {index}")
    catalog, reference = Catalog(tmp_path / "out"), Catalog(tmp_path / "reference")
    inputs = parse_inputs({"video": str(videos)})

    def step() -> Registration:
        seen: list[str] = []
        got = catalog.register(inputs, on_changed=seen.append)
        assert got == reference_register(reference, inputs, lambda _: None)
        assert catalog.snapshot() == reference.snapshot() and seen == got.changed_ids
        return got

    step()
    assert step().all_ids and not step().changed_ids  # steady
    write(videos / "s1" / "v01.mp4", "changed, longer")
    write(videos / "s9" / "late.mp4", "new")
    (videos / "s2" / "v02.mp4").unlink()
    busy = step()
    assert (busy.changed_ids, busy.new_ids, busy.removed_ids) == (
        ["s1_v01"],
        ["s9_late"],
        ["s2_v02"],
    )
    write(videos / "s2" / "v02.mp4", "back")
    assert step().restored_ids == ["s2_v02"]
    for out in (catalog, reference):  # a video registered before fingerprints were kept
        conn = out._conn()
        assert conn is not None
        conn.execute("DELETE FROM fingerprints WHERE video_id = 's0_v00'")
    write(videos / "s0" / "v00.mp4", "changed while it had no fingerprint")
    assert step().changed_ids == []  # just gets one
    step()
