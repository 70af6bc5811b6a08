"""A rescan that finds the tree of the last complete scan answers from the catalog without
walking (:mod:`dpl_assets.tree_digest`). Each step here registers the same tree twice: in
a catalog that may take that shortcut and in one that walks every time (``find``
unavailable), which must agree on every registration and every catalog row; and the
shortcut must be taken exactly when nothing changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dpl_assets import catalog as catalog_module
from dpl_assets import tree_digest as tree_digest_module
from dpl_assets.catalog import Catalog, Registration
from dpl_assets.discovery import parse_inputs
from dpl_assets.tree_digest import tree_digest


def write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def keep_folder_mtime(path: Path, action) -> None:
    """Run ``action()`` and give ``path``'s folder its modification time back (a rewrite
    in place leaves it alone; so does this, whatever the action did)."""
    folder = path.parent.stat()
    action()
    os.utime(path.parent, ns=(folder.st_atime_ns, folder.st_mtime_ns))


class Walks:
    """Counts the catalog's directory walks (0 for a rescan answered from the digest)."""

    def __init__(self, monkeypatch):
        self.count = 0
        walk = catalog_module.walk_source_files

        def counted(*args, **kwargs):
            self.count += 1
            return walk(*args, **kwargs)

        monkeypatch.setattr(catalog_module, "walk_source_files", counted)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


@pytest.fixture
def twin(tmp_path, monkeypatch):
    """``step(spec, settle_s)``: register in a catalog that may use the digest and in one
    that cannot (``find`` missing for it); both must agree. Returns the registration and
    the number of walks the first one made."""
    walks = Walks(monkeypatch)
    fast, slow = Catalog(tmp_path / "fast"), Catalog(tmp_path / "slow")

    def step(spec: dict, settle_s: float = 0.0) -> tuple[Registration, int]:
        inputs = parse_inputs(spec)
        seen: list[str] = []
        got = fast.register(inputs, on_changed=seen.append, settle_s=settle_s)
        walked = walks.take()
        with monkeypatch.context() as patch:
            patch.setattr(tree_digest_module, "find_executable", lambda: None)
            want = slow.register(inputs, settle_s=settle_s)
        assert walks.take() >= 1  # without find: always a walk
        assert got == want and seen == got.changed_ids
        assert fast.snapshot() == slow.snapshot()
        return got, walked

    return step


def test_a_rescan_walks_only_when_the_tree_changed_and_misses_no_change(tmp_path, twin):
    videos, wavs = tmp_path / "videos", tmp_path / "wavs"
    for index in range(12):
        write(videos / f"s{index % 3}" / f"v{index:02d}.mp4", f"video {index}")
    write(wavs / "s0" / "v00.wav", "wav")
    spec = {"video": str(videos), "wav": str(wavs)}

    first, walked = twin(spec)
    assert len(first.new_ids) == 12 and walked == 2  # the video root, the wav root
    steady, walked = twin(spec)
    assert (steady.all_ids, steady.new_ids, walked) == (first.all_ids, [], 0)

    write(videos / "s1" / "late.mp4", "new")
    got, walked = twin(spec)
    assert got.new_ids == ["s1_late"] and walked
    (videos / "s2" / "v02.mp4").unlink()
    got, walked = twin(spec)
    assert got.removed_ids == ["s2_v02"] and "s2_v02" not in got.all_ids and walked
    assert twin(spec)[1] == 0  # a removed video stays removed, without a walk

    # rewritten in place, the folder's mtime unchanged: a new size, then only a new mtime
    target = videos / "s1" / "v04.mp4"
    keep_folder_mtime(target, lambda: target.write_text("video 4, rewritten longer"))
    got, walked = twin(spec)
    assert got.changed_ids == ["s1_v04"] and walked
    keep_folder_mtime(target, lambda: os.utime(target, ns=(1, 10**18)))
    assert twin(spec)[0].changed_ids == ["s1_v04"]
    wav = wavs / "s0" / "v00.wav"
    keep_folder_mtime(wav, lambda: wav.write_text("wav, rewritten"))
    assert twin(spec)[0].changed_ids == ["s0_v00"]  # another root's file too
    assert twin(spec)[1] == 0

    write(videos / "s2" / "v02.mp4", "back")
    assert twin(spec)[0].restored_ids == ["s2_v02"]
    # a new filter, the same files: the inputs are part of the digest
    filtered = {**spec, "filters": {"exclude": ["s0/*"]}}
    assert twin(filtered)[1] and twin(filtered)[1] == 0


def test_a_file_left_to_settle_is_registered_by_a_later_scan_of_the_same_tree(tmp_path, twin):
    videos = tmp_path / "videos"
    write(videos / "old.mp4", "old")
    spec = {"video": str(videos)}
    twin(spec)
    write(videos / "copying.mp4", "still being copied")
    held, _ = twin(spec, settle_s=3600)
    assert "copying" not in held.all_ids
    settled, walked = twin(spec)  # the same tree, settled now
    assert settled.new_ids == ["copying"] and walked


def test_videos_of_a_root_no_longer_given_are_still_watched(tmp_path, twin):
    first_root, second_root = tmp_path / "first", tmp_path / "second"
    write(first_root / "a.mp4", "a")
    write(second_root / "b.mp4", "b")
    twin({"video": str(first_root)})
    spec = {"video": str(second_root)}
    assert twin(spec)[0].all_ids == ["a", "b"]  # a's file is not under the roots now
    assert twin(spec)[1]  # so it is statted by path: a walk every time
    write(first_root / "a.mp4", "a, changed")
    assert twin(spec)[0].changed_ids == ["a"]


def test_a_new_catalog_is_not_answered_from_the_old_ones_record(tmp_path, monkeypatch):
    videos, out = tmp_path / "videos", tmp_path / "out"
    write(videos / "a.mp4", "a")
    inputs = parse_inputs({"video": str(videos)})
    Catalog(out).register(inputs)
    walks = Walks(monkeypatch)
    assert Catalog(out).register(inputs).all_ids == ["a"] and walks.take() == 0
    for name in os.listdir(out):
        if name.startswith("catalog.sqlite"):
            os.remove(out / name)
    again = Catalog(out).register(inputs)
    assert again.new_ids == ["a"] and walks.take() == 1


def test_a_tree_with_a_symbolic_link_is_always_walked(tmp_path, monkeypatch):
    videos, out = tmp_path / "videos", tmp_path / "out"
    write(videos / "a.mp4", "a")
    (videos / "b.mp4").symlink_to(videos / "a.mp4")
    inputs = parse_inputs({"video": str(videos)})
    assert tree_digest(inputs) is None
    walks = Walks(monkeypatch)
    for _ in range(2):
        assert Catalog(out).register(inputs).all_ids == ["a", "b"] and walks.take() == 1


def test_the_digest_follows_every_entry_and_is_none_without_gnu_find(tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    write(videos / "s" / "a.mp4", "a")
    inputs = parse_inputs({"video": str(videos)})
    seen = {tree_digest(inputs)}
    assert tree_digest(inputs) in seen and None not in seen
    changes = [
        lambda: write(videos / "s" / "b.mp4", "b"),  # new
        lambda: write(videos / "s" / ".hidden", "h"),  # anything, hidden or not
        lambda: os.utime(videos / "s" / "a.mp4", ns=(1, 5)),  # mtime, by 1 ns below
        lambda: os.utime(videos / "s" / "a.mp4", ns=(1, 6)),
        lambda: (videos / "s" / "a.mp4").write_text("same"),  # size
        lambda: (videos / "s" / "b.mp4").rename(videos / "s" / "c.mp4"),
        lambda: (videos / "s" / "c.mp4").unlink(),
    ]
    for change in changes:
        change()
        digest = tree_digest(inputs)
        assert digest is not None and digest not in seen
        seen.add(digest)
    monkeypatch.setattr(tree_digest_module, "find_executable", lambda: "/bin/false")
    assert tree_digest(inputs) is None  # find failed (as BSD find on -printf)
    monkeypatch.setattr(tree_digest_module, "find_executable", lambda: None)
    assert tree_digest(inputs) is None


def test_settle_keeps_working_with_the_clock(tmp_path, twin, monkeypatch):
    """A file too fresh at one scan and settled at the next, with no change on disk in
    between: only the clock moved."""
    videos = tmp_path / "videos"
    write(videos / "a.mp4", "a")
    spec = {"video": str(videos)}
    assert twin(spec, settle_s=60)[0].all_ids == []
    later = time.time() + 120
    monkeypatch.setattr(catalog_module.time, "time", lambda: later)
    assert twin(spec, settle_s=60)[0].new_ids == ["a"]
