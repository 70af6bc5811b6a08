"""Decoded frames kept between the steps of a run (``dpl_assets.storage.frame_cache``): what
is kept reads back as PyAV decodes it, a changed file or another recipe is never served,
bounds and failures keep nothing, and a run's later steps read the frames its ``images``
step kept, with the same outputs as decoding again."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dpl_assets.assets.video_step import steps_share_the_run_process
from dpl_assets.media.frames import DecodeRecipe, VideoFrame
from dpl_assets.processes import process_tag
from dpl_assets.storage import frame_cache
from dpl_assets.storage.frame_cache import FrameCache
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.dpl_runs import assert_same_outputs, run_graph
from dpl_assets_tests.test_vision_pipeline import moving_astronaut, write_clip


@pytest.fixture
def shm(tmp_path) -> Iterator[Path]:
    """A folder for caches: on tmpfs where there is one (as in use), else in tmp_path."""
    if not frame_cache.DEFAULT_DIR.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir=frame_cache.DEFAULT_DIR, prefix="dpl-test-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frame_cache") / "clip.mp4"
    media.make_video_only(path, seconds=0.6)  # 160 x 120, 25 fps
    return path


def keep_all(cache: FrameCache, video: Path, recipe: DecodeRecipe) -> list[VideoFrame]:
    frames = list(recipe.frames(video))
    with cache.writer(video, recipe, "run-1") as writer:
        for frame in frames:
            writer.add(frame)
    return frames


def test_kept_frames_read_back_as_pyav_decodes_them(tmp_path, shm, clip):
    cache = FrameCache(shm / "cache", 2**30)
    recipe = DecodeRecipe(fps=10.0)
    decoded = keep_all(cache, clip, recipe)
    kept = cache.frames(clip, recipe, "run-1")
    assert kept is not None
    kept_frames = list(kept)
    assert len(kept_frames) == len(decoded) == 6  # 0.6 s at 10 fps
    for a, b in zip(kept_frames, decoded, strict=True):
        assert a.time_s == b.time_s
        np.testing.assert_array_equal(a.rgb, b.rgb)
        assert a.rgb.flags.writeable and a.rgb.shape == (120, 160, 3)
    assert cache.used_bytes == 6 * 120 * 160 * 3


def test_writing_into_a_frame_read_back_changes_nothing_kept(shm, clip):
    cache = FrameCache(shm / "cache", 2**30)
    decoded = keep_all(cache, clip, DecodeRecipe())
    first = cache.frames(clip, DecodeRecipe(), "run-1")
    assert first is not None
    frame = next(first)
    frame.rgb[:] = 255 - frame.rgb  # a node drawing on its frame
    first.close()
    np.testing.assert_array_equal(frame.rgb, 255 - decoded[0].rgb)  # still readable
    again = cache.frames(clip, DecodeRecipe(), "run-1")
    assert again is not None
    np.testing.assert_array_equal(next(again).rgb, decoded[0].rgb)
    again.close()
    cache.clear()  # the files are gone; a frame the caller holds is still whole
    np.testing.assert_array_equal(frame.rgb, 255 - decoded[0].rgb)


def test_another_recipe_or_a_changed_file_is_not_served(tmp_path, shm, clip):
    cache = FrameCache(shm / "cache", 2**30)
    video = tmp_path / "clip.mp4"
    video.write_bytes(clip.read_bytes())
    keep_all(cache, video, DecodeRecipe())
    assert cache.frames(video, DecodeRecipe(max_side=80), "run-1") is None
    assert cache.frames(video, DecodeRecipe(), "run-1") is not None
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # rewritten in place
    assert cache.frames(video, DecodeRecipe(), "run-1") is None


def test_an_error_while_writing_keeps_nothing(tmp_path, shm, clip):
    cache = FrameCache(shm / "cache", 2**30)
    recipe = DecodeRecipe()
    with pytest.raises(RuntimeError), cache.writer(clip, recipe, "run-1") as writer:
        writer.add(next(recipe.frames(clip)))
        raise RuntimeError("the step failed")
    assert cache.frames(clip, recipe, "run-1") is None
    assert cache.used_bytes == 0
    assert list((shm / "cache").iterdir()) == []


def test_a_video_over_the_budget_or_changing_size_is_not_kept(tmp_path, shm, clip):
    frame_bytes = 120 * 160 * 3
    cache = FrameCache(shm / "cache", 3 * frame_bytes)  # 3 of its 15 frames
    recipe = DecodeRecipe()
    keep_all(cache, clip, recipe)
    assert cache.frames(clip, recipe, "run-1") is None and cache.used_bytes == 0

    roomy = FrameCache(shm / "roomy", 2**30)
    with roomy.writer(clip, recipe, "run-1") as writer:
        writer.add(VideoFrame(0.0, np.zeros((120, 160, 3), np.uint8)))
        writer.add(VideoFrame(0.04, np.zeros((32, 48, 3), np.uint8)))
        assert not writer.kept
    assert roomy.frames(clip, recipe, "run-1") is None and roomy.used_bytes == 0


def test_a_new_run_removes_the_frames_kept_for_the_one_before(tmp_path, shm, clip):
    cache = FrameCache(shm / "cache", 2**30)
    keep_all(cache, clip, DecodeRecipe())
    assert cache.frames(clip, DecodeRecipe(), "run-2") is None  # not this run's
    other = tmp_path / "other.mp4"
    other.write_bytes(clip.read_bytes())
    with cache.writer(other, DecodeRecipe(), "run-2") as writer:
        writer.add(next(DecodeRecipe().frames(other)))
    assert cache.frames(clip, DecodeRecipe(), "run-1") is None
    assert len(list((shm / "cache").glob("*.rgb"))) == 1
    assert cache.used_bytes == 120 * 160 * 3


def test_clear_removes_everything(tmp_path, shm, clip):
    cache = FrameCache(shm / "cache", 2**30)
    keep_all(cache, clip, DecodeRecipe())
    cache.clear()
    assert not (shm / "cache").exists() and cache.used_bytes == 0
    assert cache.frames(clip, DecodeRecipe(), "run-1") is None


def test_the_process_cache_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(frame_cache, "_cache", {})
    monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(frame_cache.CACHE_MB_ENV, "0")
    assert frame_cache.process_cache() is None
    monkeypatch.setenv(frame_cache.CACHE_MB_ENV, "-1")
    with pytest.raises(ValueError, match=frame_cache.CACHE_MB_ENV):
        frame_cache.budget_from_env()
    monkeypatch.setattr(frame_cache, "_cache", {})
    monkeypatch.setenv(frame_cache.CACHE_MB_ENV, "16")
    cache = frame_cache.process_cache()
    assert cache is not None and cache.budget_bytes == 16 * 2**20
    assert cache.root.parent == tmp_path / f"dpl-frames-{os.getuid()}"
    assert cache.root.parent.stat().st_mode & 0o777 == 0o700
    assert frame_cache.process_cache() is cache  # one per process


def test_the_default_budget_is_at_most_an_eighth_of_the_memory(tmp_path, monkeypatch):
    page = os.sysconf("SC_PAGE_SIZE")
    sysconf = os.sysconf
    pages = {"SC_PHYS_PAGES": 8 * 2**30 // page}  # an 8 GB machine
    monkeypatch.setattr(os, "sysconf", lambda name: pages.get(name) or sysconf(name))
    assert frame_cache.default_budget_bytes() == 2**30
    pages["SC_PHYS_PAGES"] = 64 * 2**30 // page
    assert frame_cache.default_budget_bytes() == frame_cache.DEFAULT_MB * 2**20
    monkeypatch.delenv(frame_cache.CACHE_MB_ENV, raising=False)
    monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(frame_cache, "_cache", {})
    cache = frame_cache.process_cache()
    assert cache is not None and cache.budget_bytes == frame_cache.DEFAULT_MB * 2**20


def test_our_folder_is_made_private_and_a_link_or_a_file_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(tmp_path))
    ours = tmp_path / f"dpl-frames-{os.getuid()}"
    ours.mkdir()
    ours.chmod(0o777)
    monkeypatch.setattr(frame_cache, "_cache", {})
    assert frame_cache.process_cache() is not None
    assert ours.stat().st_mode & 0o777 == 0o700

    ours.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    ours.symlink_to(elsewhere)  # someone else's link in a shared /dev/shm
    monkeypatch.setattr(frame_cache, "_cache", {})
    assert frame_cache.process_cache() is None
    ours.unlink()
    ours.write_bytes(b"")
    monkeypatch.setattr(frame_cache, "_cache", {})
    assert frame_cache.process_cache() is None


def test_folders_of_dead_processes_are_removed(tmp_path, monkeypatch):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tag = process_tag(child.pid)
        assert tag is not None
        parent = tmp_path / f"dpl-frames-{os.getuid()}"
        (parent / tag).mkdir(parents=True, mode=0o700)
        parent.chmod(0o700)
        (parent / tag / "frames.rgb").write_bytes(b"x")
        monkeypatch.setattr(frame_cache, "_cache", {})
        monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(tmp_path))
        frame_cache.process_cache()
        assert (parent / tag).exists()  # alive: kept
    finally:
        child.kill()
        child.wait()
    monkeypatch.setattr(frame_cache, "_cache", {})
    frame_cache.process_cache()
    assert not (parent / tag).exists()


def test_discard_removes_what_this_process_keeps_at_once(shm, clip, monkeypatch):
    monkeypatch.setattr(frame_cache, "_cache", {})
    monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(shm))
    cache = frame_cache.process_cache()
    assert cache is not None
    keep_all(cache, clip, DecodeRecipe())
    assert any(cache.root.iterdir())
    with cache._lock:  # a writer holding the lock does not stop it
        frame_cache.discard()
    assert not cache.root.exists()


GRAPH = [
    {"name": "VideoToImagesNode", "params": {}},
    {"name": "FaceAlignmentNode", "params": {}},
    {"name": "FixedBboxesNode", "params": {}},
    {"name": "CropNode", "params": {"size_hw": [64, 64]}},
]


def test_a_runs_later_steps_read_the_kept_frames_with_the_same_outputs(tmp_path, shm, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    for index in range(2):  # decoded by the images step's two threads at once
        write_clip(videos / f"face_{index}.mp4", moving_astronaut(12 + 4 * index))
    served: list[str] = []
    frames = FrameCache.frames

    def frames_and_record(cache, video, recipe, run):
        kept = frames(cache, video, recipe, run)
        served.append("kept" if kept is not None else "decoded")
        return kept

    monkeypatch.setattr(FrameCache, "frames", frames_and_record)
    monkeypatch.setattr(frame_cache, "_cache", {})
    monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(shm))
    kept_run = run_graph(tmp_path, GRAPH, videos, "kept", "--workers", "1")
    assert served == ["kept"] * 4  # faces, then crops, of each video
    assert list((shm / f"dpl-frames-{os.getuid()}").iterdir()) == []  # cleared

    served.clear()
    monkeypatch.setattr(frame_cache, "_cache", {})
    monkeypatch.setenv(frame_cache.CACHE_MB_ENV, "0")
    decoded_run = run_graph(tmp_path, GRAPH, videos, "decoded", "--workers", "1")
    assert served == []
    for video_id in ("face_0", "face_1"):
        assert kept_run[video_id]["status"] == decoded_run[video_id]["status"] == "processed"
        assert_same_outputs(kept_run[video_id], decoded_run[video_id])


def test_a_run_with_no_step_after_images_keeps_nothing(tmp_path, shm, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_clip(videos / "face.mp4", moving_astronaut(12))
    opened: list[str] = []
    writer = FrameCache.writer

    def writer_and_record(cache, video, recipe, run, expected_bytes=None):
        opened.append(str(video))
        return writer(cache, video, recipe, run, expected_bytes)

    monkeypatch.setattr(FrameCache, "writer", writer_and_record)
    monkeypatch.setattr(frame_cache, "_cache", {})
    monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(shm))
    run_graph(tmp_path, [{"name": "VideoToImagesNode", "params": {}}], videos, "alone")
    assert opened == []
    run_graph(tmp_path, GRAPH[:2], videos, "with_faces")
    assert opened == [str(videos / "face.mp4")]


@pytest.mark.parametrize(
    ("executor", "run_config", "shared"),
    [
        ("", {}, True),
        ("in_process", {"execution": {"config": {"in_process": {}}}}, True),
        ("", {"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}, False),
        ("celery", {}, False),
        ("k8s", {}, False),
    ],
)
def test_frames_are_kept_only_where_the_runs_steps_share_its_process(
    executor, run_config, shared, monkeypatch
):
    monkeypatch.setenv("DPL_EXECUTOR", executor)
    assert steps_share_the_run_process(run_config) is shared


def test_a_write_that_fails_keeps_nothing_and_raises_nothing(tmp_path, shm, clip):
    # a file-size limit stands in for a tmpfs that fills up: writes fail with EFBIG
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from dpl_assets.media.frames import DecodeRecipe
        from dpl_assets.storage.frame_cache import FrameCache
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        recipe, clip = DecodeRecipe(), Path({str(clip)!r})
        frames = list(recipe.frames(clip))
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        cache = FrameCache(Path({str(shm / "cache")!r}), 2**30)
        with cache.writer(clip, recipe, "run-1") as writer:
            for frame in frames:
                writer.add(frame)
        print(writer.kept, cache.frames(clip, recipe, "run-1"), cache.used_bytes)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["False", "None", "0"], done.stderr
    assert list((shm / "cache").iterdir()) == []


def test_a_root_someone_replaced_is_not_written_into(tmp_path, shm, clip):
    cache = FrameCache(shm / "parent" / "cache", 2**30)
    (shm / "parent").mkdir(mode=0o700)
    keep_all(cache, clip, DecodeRecipe())
    assert cache.frames(clip, DecodeRecipe(), "run-1") is not None
    shutil.rmtree(shm / "parent")
    (shm / "parent").mkdir()
    (shm / "parent").chmod(0o777)  # made again by someone, open to all
    planted = shm / "planted"
    planted.mkdir(mode=0o777)
    (shm / "parent" / "cache").symlink_to(planted)
    (shm / "parent").chmod(0o700)  # ...and closed again: our root is now their link
    keep_all(cache, clip, DecodeRecipe())
    assert list(planted.iterdir()) == []
    assert cache.used_bytes == 15 * 120 * 160 * 3  # the first video's only
    assert cache.frames(clip, DecodeRecipe(), "run-1") is None


def test_kept_frames_close_their_file(shm, clip):
    cache = FrameCache(shm / "cache", 2**30)
    keep_all(cache, clip, DecodeRecipe())
    kept = cache.frames(clip, DecodeRecipe(), "run-1")
    assert kept is not None
    next(kept)
    kept.close()
    assert kept._data.closed
    rest = cache.frames(clip, DecodeRecipe(), "run-1")
    assert rest is not None and len(list(rest)) == 15 and rest._data.closed


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_frames_a_reader_holds_hold_no_file_descriptor(shm, clip):
    # A mapping per frame (mmap dups the file's descriptor) would let a reader holding
    # ~1,000 frames exhaust a 1,024-descriptor limit for the whole process.
    cache = FrameCache(shm / "cache", 2**30)
    keep_all(cache, clip, DecodeRecipe())
    before = len(os.listdir("/proc/self/fd"))
    kept = cache.frames(clip, DecodeRecipe(), "run-1")
    assert kept is not None
    frames = list(kept)
    assert len(frames) == 15 and len(os.listdir("/proc/self/fd")) == before


def test_clear_also_removes_dead_processes_folders(shm):
    parent = shm / f"dpl-frames-{os.getuid()}"
    parent.mkdir(mode=0o700)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = process_tag(child.pid)
    child.wait()
    assert tag is not None
    (parent / tag).mkdir()
    FrameCache(parent / "mine", 2**30).clear()
    assert not (parent / tag).exists()


def test_a_bad_budget_turns_keeping_off_and_dpl_run_refuses_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(frame_cache.CACHE_MB_ENV, "lots")
    monkeypatch.setattr(frame_cache, "_cache", {})
    assert frame_cache.process_cache() is None
    assert "DPL_FRAME_CACHE_MB='lots'" in caplog.text
    from dpl_assets import cli

    videos = tmp_path / "videos"
    videos.mkdir()
    media.make_video_only(videos / "a.mp4", seconds=0.2)
    (tmp_path / "graph.json").write_text('[{"name": "VideoToImagesNode", "params": {}}]')
    (tmp_path / "inputs.json").write_text(f'{{"video": "{videos}"}}')
    graph, inputs = str(tmp_path / "graph.json"), str(tmp_path / "inputs.json")
    code = cli.main(
        ["run", "--graph", graph, "--inputs", inputs, "--output_dir", str(tmp_path / "out")]
    )
    assert code == 2
    assert not (tmp_path / "out" / "images").exists()


def test_a_video_whose_header_says_it_will_not_fit_is_not_started(shm, clip):
    recipe = DecodeRecipe()
    expected = frame_cache.estimated_bytes(clip, recipe)
    assert expected == int(0.6 * 25 * 1.05) * 160 * 120 * 3  # header: 0.6 s, 25 fps
    assert frame_cache.estimated_bytes(clip, DecodeRecipe(fps=10.0, max_side=80)) == (
        int(0.6 * 10 * 1.05) * 80 * 60 * 3
    )
    cache = FrameCache(shm / "cache", 14 * 160 * 120 * 3)  # room for 14 of the 15 frames
    with cache.writer(clip, recipe, "run-1", expected) as writer:
        assert not writer.kept  # before any frame was written
        for frame in recipe.frames(clip):
            writer.add(frame)
    assert cache.frames(clip, recipe, "run-1") is None and cache.used_bytes == 0
    assert not (shm / "cache").exists() or list((shm / "cache").iterdir()) == []
    roomy = FrameCache(shm / "roomy", 2**30)
    keep = roomy.writer(clip, recipe, "run-1", expected)
    with keep as writer:
        for frame in recipe.frames(clip):
            writer.add(frame)
    assert roomy.frames(clip, recipe, "run-1") is not None


def test_runs_hold_no_more_videos_than_their_kept_frames_fit(tmp_path, shm, monkeypatch, capsys):
    """A run's later steps read its videos' frames only after its images step did them
    all: ``dpl run`` sizes runs so every video's frames fit the budget (from the first
    video's header), and does not when nothing is kept or one video alone does not fit."""
    import dagster as dg

    from dpl_assets import cli
    from dpl_assets.settings import instance_dir_for

    videos = tmp_path / "videos"
    for index in range(5):  # 1 s at 25 fps, 160x120: 26 x 57,600 B = 1.5 MB with the 5 %
        media.make_video_only(videos / f"v{index}.mp4", seconds=1.0)
    frames_of_one = int(1.0 * 25 * 1.05) * 160 * 120 * 3
    graph = [{"name": "VideoToImagesNode"}, {"name": "SceneCutNode"}]  # scenes read frames
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": str(videos)}))
    monkeypatch.setattr(frame_cache, "_cache", {})
    monkeypatch.setenv(frame_cache.CACHE_DIR_ENV, str(shm))

    def runs_of(budget_bytes: int, out: str, node_graph: list) -> int:
        monkeypatch.setenv(frame_cache.CACHE_MB_ENV, str(budget_bytes // 2**20))
        (tmp_path / f"{out}.json").write_text(json.dumps(node_graph))
        code = cli.main(["run", "--graph", str(tmp_path / f"{out}.json"), "--inputs",
                         str(tmp_path / "inputs.json"), "--output_dir", str(tmp_path / out),
                         "--workers", "1"])  # fmt: skip
        assert code == 0
        with dg.DagsterInstance.from_config(str(instance_dir_for(tmp_path / out))) as instance:
            return len(instance.get_runs())

    three = 3 * frames_of_one + 2**20  # room for 3 videos (MB rounding down: + 1 MB)
    assert runs_of(three, "fit3", graph) == 2  # 5 videos, at most 3 a run
    said = capsys.readouterr().err
    assert f"at most {three // frames_of_one} videos a run" in said and "in 2 run(s)" in said
    assert runs_of(0, "off", graph) == 1  # keeping off: one run
    assert runs_of(three, "alone", graph[:1]) == 1  # nothing reads the frames: one run
    assert runs_of(2**20, "toobig", graph) == 1  # one video does not fit: not kept, one run
    assert "videos a run" not in capsys.readouterr().err
