"""Discovery and the catalog: which files count, and the ids they get (stable, unique, safe).

Discovery never opens the files, so placeholders of a few bytes stand in for media here.
"""

import json
import os
import re
from pathlib import Path

import pytest

from dpl_assets.catalog import Catalog
from dpl_assets.datatypes import DATATYPES
from dpl_assets.discovery import (
    MAX_ID_BYTES,
    InputsError,
    SourceFile,
    find_source_files,
    hashed_id,
    parse_inputs,
    readable_id,
)


def touch(root: Path, *relatives: str) -> list[Path]:
    paths = []
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder")
        paths.append(path)
    return paths


def found(spec: dict, datatype: str = "video") -> set[str]:
    inputs = parse_inputs(spec)
    return {s.relative.as_posix() for s in find_source_files(inputs, datatype)}


def register(out: Path, spec: dict) -> dict[str, str]:
    """Register with a fresh Catalog object (as a new process would); id -> video path."""
    Catalog(out).register(parse_inputs(spec))
    return {vid: e.sources["video"] for vid, e in Catalog(out).entries().items()}


def catalog_on_disk(out: Path) -> dict:
    return Catalog(out).snapshot()


def assert_safe_id(video_id: str) -> None:
    assert video_id
    assert "/" not in video_id and "\\" not in video_id
    assert not video_id.startswith(".") and not video_id.startswith("-")
    assert "..." not in video_id and "," not in video_id
    assert not any(ord(c) < 32 or ord(c) == 127 for c in video_id)
    assert len(video_id.encode("utf-8")) <= MAX_ID_BYTES


# ---------------------------------------------------------------------------------------
# Which files count
# ---------------------------------------------------------------------------------------


def test_every_video_extension_is_found_in_any_case_and_nothing_else(tmp_path):
    videos = tmp_path / "videos"
    touch(videos, "a.mp4", "b.MOV", "c.mkv", "d.webm", "g.Mp4", "sub/i.webm")
    touch(videos, "e.txt", "f.mp4.txt", "mp4", ".hidden.mp4", ".cache/h.mp4", "notes.json")

    assert found({"video": str(videos)}) == {
        "a.mp4", "b.MOV", "c.mkv", "d.webm", "g.Mp4", "sub/i.webm"
    }  # fmt: skip
    ids = register(tmp_path / "out", {"video": str(videos)})
    assert sorted(ids) == ["a", "b", "c", "d", "g", "sub_i"]


def test_audio_roots_accept_their_own_extensions(tmp_path):
    touch(tmp_path / "aac", "a.m4a", "b.AAC", "c.mp4", "d.wav")
    touch(tmp_path / "wav", "a.wav", "b.WAV", "c.m4a")

    assert found({"aac": str(tmp_path / "aac")}, "aac") == {"a.m4a", "b.AAC"}
    assert found({"wav": str(tmp_path / "wav")}, "wav") == {"a.wav", "b.WAV"}


def test_include_and_exclude_filters_select_by_relative_path(tmp_path):
    videos = tmp_path / "videos"
    touch(videos, "speaker1/a.mp4", "speaker1/skip_b.mp4", "speaker2/c.mp4", "top.mp4")
    root = str(videos)

    assert found({"video": root, "filters": {"include": ["speaker1/*"]}}) == {
        "speaker1/a.mp4", "speaker1/skip_b.mp4"
    }  # fmt: skip
    assert found(
        {"video": root, "filters": {"include": ["speaker1/*"], "exclude": ["*skip*"]}}
    ) == {"speaker1/a.mp4"}
    assert found({"video": root, "filters": {"exclude": ["speaker2/*"]}}) == {
        "speaker1/a.mp4", "speaker1/skip_b.mp4", "top.mp4"
    }  # fmt: skip
    assert found({"video": root, "filters": {"include": ["*.mkv"]}}) == set()


# ---------------------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------------------


def test_nested_path_id_joins_its_parts(tmp_path):
    touch(tmp_path / "v", "a/b.mp4", "x/y/z.mov")

    ids = register(tmp_path / "out", {"video": str(tmp_path / "v")})

    assert ids == {"a_b": str(tmp_path / "v/a/b.mp4"), "x_y_z": str(tmp_path / "v/x/y/z.mov")}


@pytest.mark.parametrize(
    "relatives",
    [("a/b_c.mp4", "a_b/c.mp4"), ("x.mp4", "x.mov"), ("clip.mp4", "clip.MP4", "clip.mkv")],
    ids=["same-joined-path", "same-stem-other-extension", "three-extensions"],
)
def test_colliding_files_get_distinct_hashed_ids_and_are_all_kept(tmp_path, relatives):
    videos = tmp_path / "v"
    paths = touch(videos, *relatives)

    ids = register(tmp_path / "out", {"video": str(videos)})

    assert sorted(ids.values()) == sorted(str(p) for p in paths)
    assert len(set(ids)) == len(paths)
    readable = {readable_id(Path(r).with_suffix("").as_posix()) for r in relatives}
    assert len(readable) == 1  # they really do collide
    (collided,) = readable
    for video_id in ids:
        assert video_id != collided and video_id.startswith(collided + "-")
        assert_safe_id(video_id)


def test_same_relative_path_under_two_video_roots_gets_two_ids(tmp_path):
    first, second = touch(tmp_path, "root1/a.mp4", "root2/a.mp4")

    ids = register(tmp_path / "out", {"video": [str(tmp_path / "root1"), str(tmp_path / "root2")]})

    assert sorted(ids.values()) == sorted([str(first), str(second)])


def test_ids_are_stable_across_re_registration(tmp_path):
    videos = tmp_path / "v"
    touch(videos, "a/b_c.mp4", "a_b/c.mp4", "plain.mp4", "n/e/s/t.webm")
    spec = {"video": str(videos)}

    first = register(tmp_path / "out", spec)
    again = Catalog(tmp_path / "out").register(parse_inputs(spec))

    assert again.new_ids == [] and again.disambiguated == []
    assert {vid: e.sources["video"] for vid, e in Catalog(tmp_path / "out").entries().items()} == (
        first
    )
    # A second output dir registering the same files from scratch agrees: ids depend on
    # the files, not on the catalog's history.
    assert register(tmp_path / "out2", spec) == first


def test_a_later_colliding_file_leaves_the_old_id_with_its_file(tmp_path):
    videos = tmp_path / "v"
    out = tmp_path / "out"
    (old,) = touch(videos, "a/b_c.mp4")
    assert register(out, {"video": str(videos)}) == {"a_b_c": str(old)}

    (newcomer,) = touch(videos, "a_b/c.mp4")
    registration = Catalog(out).register(parse_inputs({"video": str(videos)}))
    ids = {vid: e.sources["video"] for vid, e in Catalog(out).entries().items()}

    assert ids["a_b_c"] == str(old)
    (new_id,) = registration.new_ids
    assert new_id != "a_b_c" and ids[new_id] == str(newcomer)
    assert registration.disambiguated == [str(newcomer)]


def test_a_later_file_with_another_extension_leaves_the_old_id_with_its_file(tmp_path):
    videos = tmp_path / "v"
    out = tmp_path / "out"
    (old,) = touch(videos, "x.mp4")
    register(out, {"video": str(videos)})

    (newcomer,) = touch(videos, "x.mov")
    ids = register(out, {"video": str(videos)})

    assert ids["x"] == str(old)
    assert sorted(ids.values()) == sorted([str(old), str(newcomer)])


ODD_STEMS = [
    "ünï cödé 日本語",
    "with  spaces ",
    'it\'s "quoted"',
    "$(touch pwned)",
    "`touch pwned`; rm -rf x",
    "a,b,c",
    "brackets [1] and |pipe|",
    "back\\slash",
    "new\nline\ttab",
    "-leading dash",
    "dots...in....name...",
    "trailing.",
    "ü" * 120,  # 240 bytes: longer than an id may be
]


def test_odd_names_give_safe_ids_that_are_usable_as_file_names(tmp_path):
    videos = tmp_path / "v"
    paths = touch(videos, *(f"{stem}.mp4" for stem in ODD_STEMS), "nested dir/$(x)/y,z.mkv")
    output = tmp_path / "output"
    output.mkdir()

    ids = register(tmp_path / "out", {"video": str(videos)})

    assert sorted(ids.values()) == sorted(str(p) for p in paths)
    for video_id in ids:
        assert_safe_id(video_id)
        target = output / f"{video_id}.npy"
        assert target.resolve().parent == output.resolve()
        target.write_bytes(b"x")
    assert len(os.listdir(output)) == len(ids)  # one file each, none overwrote another


@pytest.mark.parametrize(
    "stem",
    [*ODD_STEMS, ".hidden", "..", "...", "....", "../../etc/passwd", "a/../b", "", "-", ","],
)
def test_readable_and_hashed_ids_are_safe_for_any_stem(stem):
    assert_safe_id(readable_id(stem))
    source = SourceFile("video", Path("/root"), Path("/root") / (stem + ".mp4"))
    assert_safe_id(hashed_id(source))


def test_long_nested_path_id_is_cut_to_the_byte_limit_on_a_character_boundary(tmp_path):
    part = "é" * 100  # 200 bytes: each folder name is legal, the joined id is not
    (path,) = touch(tmp_path / "v", f"{part}/{part}/clip.mp4")

    ids = register(tmp_path / "out", {"video": str(tmp_path / "v")})

    ((video_id, source),) = ids.items()
    assert source == str(path)
    assert_safe_id(video_id)
    assert video_id == ("é" * 75)  # 150 bytes, no half character
    (tmp_path / f"{video_id}.npy").write_bytes(b"x")


# ---------------------------------------------------------------------------------------
# Inputs specification
# ---------------------------------------------------------------------------------------


def test_unknown_key_is_an_error_listing_the_valid_keys(tmp_path):
    with pytest.raises(InputsError) as caught:
        parse_inputs({"vidoe": str(tmp_path)})

    message = str(caught.value)
    assert "vidoe" in message
    assert DATATYPES  # the registry lists keys, and the message names each one
    for key in ("video", "wav", "aac", *DATATYPES):
        assert key in message


def test_missing_folder_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "no such folder"
    with pytest.raises(InputsError, match="no such folder"):
        parse_inputs({"video": str(missing)})
    (a_file,) = touch(tmp_path, "file.mp4")
    with pytest.raises(InputsError, match=re.escape(str(a_file))):
        parse_inputs({"video": str(a_file)})


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"video": []},
        {"video": 3},
        {"filters": {"include": ["*"]}},
        {"video": ".", "filters": {"include": "*.mp4"}},
        {"video": ".", "filters": {"only": ["*.mp4"]}},
    ],
    ids=["empty", "no-roots", "not-a-path", "only-filters", "glob-not-list", "unknown-filter"],
)
def test_malformed_inputs_raise_inputs_error(tmp_path, spec):
    with pytest.raises(InputsError):
        parse_inputs(spec, base_dir=tmp_path)


def test_relative_roots_resolve_against_base_dir(tmp_path):
    (path,) = touch(tmp_path / "project" / "videos", "a.mp4")

    inputs = parse_inputs({"video": "videos"}, base_dir=tmp_path / "project")

    assert [s.path for s in find_source_files(inputs, "video")] == [path]


# ---------------------------------------------------------------------------------------
# Other roots attach to videos
# ---------------------------------------------------------------------------------------


def test_wav_root_attaches_to_videos_with_the_same_relative_stem(tmp_path):
    videos, wavs = tmp_path / "videos", tmp_path / "wavs"
    touch(videos, "a/b.mp4", "c.mov", "d.mkv")
    touch(wavs, "a/b.wav", "c.WAV", "orphan.wav", "b.wav", "a/d.wav")
    out = tmp_path / "out"

    registration = Catalog(out).register(parse_inputs({"video": str(videos), "wav": str(wavs)}))

    entries = Catalog(out).entries()
    assert sorted(registration.new_ids) == sorted(entries) == ["a_b", "c", "d"]
    assert entries["a_b"].sources == {
        "video": str(videos / "a/b.mp4"), "wav": str(wavs / "a/b.wav")
    }  # fmt: skip
    assert entries["c"].sources["wav"] == str(wavs / "c.WAV")
    assert "wav" not in entries["d"].sources  # a/d.wav is another relative path
    # What is on disk says the same (not just the object's view of it).
    on_disk = catalog_on_disk(out)["videos"]
    assert on_disk["a_b"]["sources"]["wav"] == str(wavs / "a/b.wav")


def test_wav_added_later_attaches_on_re_registration(tmp_path):
    videos, wavs = tmp_path / "videos", tmp_path / "wavs"
    touch(videos, "a.mp4")
    wavs.mkdir()
    spec = {"video": str(videos), "wav": str(wavs)}
    out = tmp_path / "out"
    Catalog(out).register(parse_inputs(spec))
    assert "wav" not in Catalog(out).entry("a").sources

    touch(wavs, "a.wav")
    registration = Catalog(out).register(parse_inputs(spec))

    assert registration.new_ids == []
    assert Catalog(out).entry("a").sources["wav"] == str(wavs / "a.wav")


# ---------------------------------------------------------------------------------------
# Symbolic links: inside the roots followed; outside refused unless follow_symlinks;
# broken and looping links refused; every refusal has a reason naming the file
# ---------------------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path):
    """A video root with a real file and links of every kind; an outside folder."""
    videos, outside = tmp_path / "videos", tmp_path / "outside"
    touch(videos, "real.mp4", "sub/deep.mp4")
    touch(outside, "secret.mp4", "folder/inner.mp4")
    (videos / "inside_link.mp4").symlink_to(videos / "sub" / "deep.mp4")
    (videos / "escape.mp4").symlink_to(outside / "secret.mp4")
    (videos / "relative_escape.mp4").symlink_to(Path("..") / "outside" / "secret.mp4")
    (videos / "broken.mp4").symlink_to(videos / "gone.mp4")
    (videos / "loop_a.mp4").symlink_to(videos / "loop_b.mp4")
    (videos / "loop_b.mp4").symlink_to(videos / "loop_a.mp4")
    (videos / "linked_folder").symlink_to(outside / "folder")
    (videos / "up").symlink_to(videos)  # a folder link back to the root: a cycle
    (videos / "notes.txt").symlink_to(videos / "gone.txt")  # not a video: not reported
    return videos, outside


def scan(spec: dict):
    from dpl_assets.discovery import scan_source_files

    files, refused = scan_source_files(parse_inputs(spec), "video")
    return (
        {s.relative.as_posix() for s in files},
        {r.relative_posix: r.reason for r in refused},
    )


def test_symlinks_outside_the_roots_broken_or_looping_are_refused_with_a_reason(linked):
    videos, outside = linked
    files, refused = scan({"video": str(videos)})
    assert files == {"real.mp4", "sub/deep.mp4", "inside_link.mp4"}
    assert set(refused) == {"escape.mp4", "relative_escape.mp4", "broken.mp4", "loop_a.mp4",
                            "loop_b.mp4", "linked_folder", "up"}  # fmt: skip
    for relative, reason in refused.items():
        assert reason.startswith(str(videos / relative) + ": "), reason  # names the file
    assert "outside the input roots" in refused["escape.mp4"]
    assert str(outside / "secret.mp4") in refused["relative_escape.mp4"]
    assert "follow_symlinks" in refused["escape.mp4"]
    assert "broken symbolic link" in refused["broken.mp4"]
    assert "loop" in refused["loop_a.mp4"] and "loop" in refused["loop_b.mp4"]
    assert "not entered" in refused["linked_folder"]


def test_a_link_into_another_input_root_is_inside(linked):
    videos, outside = linked
    files, refused = scan({"video": str(videos), "wav": str(outside)})
    assert "escape.mp4" in files and "escape.mp4" not in refused


def test_follow_symlinks_follows_outside_targets_and_folders_once(linked):
    videos, _ = linked
    files, refused = scan({"video": str(videos), "follow_symlinks": True})
    assert files == {"real.mp4", "sub/deep.mp4", "inside_link.mp4", "escape.mp4",
                     "relative_escape.mp4", "linked_folder/inner.mp4"}  # fmt: skip
    assert set(refused) == {"broken.mp4", "loop_a.mp4", "loop_b.mp4", "up"}
    assert "scanned already" in refused["up"]  # the cycle is not walked


def test_follow_symlinks_must_be_a_boolean_and_is_saved(linked):
    videos, _ = linked
    with pytest.raises(InputsError, match="follow_symlinks"):
        parse_inputs({"video": str(videos), "follow_symlinks": "yes"})
    spec = parse_inputs({"video": str(videos), "follow_symlinks": True}).to_json()
    assert spec["follow_symlinks"] is True and parse_inputs(spec).follow_symlinks


def test_filters_apply_to_refused_links_too(linked):
    videos, _ = linked
    _, refused = scan({"video": str(videos), "filters": {"exclude": ["loop_*", "escape*"]}})
    assert set(refused) == {"relative_escape.mp4", "broken.mp4", "linked_folder", "up"}


def test_refused_files_are_kept_in_the_catalog_and_never_registered(linked, tmp_path):
    videos, _ = linked
    out = tmp_path / "out"
    registration = Catalog(out).register(parse_inputs({"video": str(videos)}))
    assert sorted(registration.all_ids) == ["inside_link", "real", "sub_deep"]
    on_disk = {entry["path"]: entry["reason"] for entry in catalog_on_disk(out)["refused"]}
    assert set(on_disk) == {str(videos / name) for name in (
        "escape.mp4", "relative_escape.mp4", "broken.mp4", "loop_a.mp4", "loop_b.mp4",
        "linked_folder", "up")}  # fmt: skip
    assert [e.path for e in Catalog(out).refused()] == [e.path for e in registration.refused]
    (videos / "broken.mp4").unlink()  # fixed: no longer refused
    Catalog(out).register(parse_inputs({"video": str(videos)}))
    assert str(videos / "broken.mp4") not in {e.path for e in Catalog(out).refused()}


def test_dpl_run_reports_refused_links_as_rejected_at_discovery(tmp_path):
    from dpl_assets import cli
    from dpl_assets_tests import media_factory

    videos, outside = tmp_path / "videos", tmp_path / "outside"
    media_factory.make_talking_clip(videos / "good.mp4", seconds=1.0)
    media_factory.make_talking_clip(outside / "elsewhere.mp4", seconds=1.0)
    (videos / "escape.mp4").symlink_to(outside / "elsewhere.mp4")
    (videos / "broken.mp4").symlink_to(videos / "gone.mp4")
    graph, inputs, out = tmp_path / "graph.json", tmp_path / "inputs.json", tmp_path / "out"
    graph.write_text(json.dumps([{"name": "VideoToWavNode", "params": {}}]))
    arguments = ["run", "--graph", str(graph), "--inputs", str(inputs), "--output_dir", str(out)]

    inputs.write_text(json.dumps({"video": str(videos)}))
    assert cli.main(arguments) == 0  # refusals are outcomes, not failures
    report = json.loads((out / "report.json").read_text())
    by_source = {v["source"]: v for v in report["videos"]}
    assert by_source[str(videos / "good.mp4")]["status"] == "processed"
    for name, cause in (("escape.mp4", "outside the input roots"), ("broken.mp4", "broken")):
        entry = by_source[str(videos / name)]
        assert entry["status"] == "rejected" and entry["outputs"] == {}
        assert entry["reason"].startswith(str(videos / name)) and cause in entry["reason"]
    assert report["summary"]["rejected"] == 2 and report["summary"]["processed"] == 1
    assert not (out / "wav" / "escape.wav").exists()

    inputs.write_text(json.dumps({"video": str(videos), "follow_symlinks": True}))
    assert cli.main(arguments) == 0
    report = json.loads((out / "report.json").read_text())
    statuses = {v["source"]: v["status"] for v in report["videos"]}
    assert statuses[str(videos / "escape.mp4")] == "processed"
    assert statuses[str(videos / "broken.mp4")] == "rejected"
    assert (out / "wav" / "escape.wav").exists()
