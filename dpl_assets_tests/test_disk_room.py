"""Free space kept on the output's file system (``dpl_assets.storage.disk_room``).

The reserve is set through ``DPL_MIN_FREE_MB`` above what the test folder's file system
really has free (read with ``os.statvfs``), so the refusals happen on the real disk without
filling it; one test fills a real small tmpfs (when this user may mount one) and checks
that ``dpl run`` ends with the failures named instead of HDF5's segmentation fault.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dpl_assets import cli
from dpl_assets.packing.layouts import ImageDatasetWriter
from dpl_assets.packing.video_pack import PackOptions, pack_video
from dpl_assets.storage.disk_room import MIN_FREE_ENV, NoRoom, ensure_room, reserve_bytes
from dpl_assets.storage.image_stack import ImageStack, ImageStackWriter
from dpl_assets_tests import media_factory as media

MB = 2**20


def free_bytes(path: Path) -> int:
    """Free bytes for this user on ``path``'s file system, from statvfs."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


@pytest.fixture
def no_room(tmp_path, monkeypatch) -> None:
    """A reserve 1 GB above what ``tmp_path``'s file system has free."""
    monkeypatch.setenv(MIN_FREE_ENV, str(free_bytes(tmp_path) // MB + 1024))


def frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(count)]


def test_the_reserve_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(MIN_FREE_ENV, raising=False)
    assert reserve_bytes() == 512 * MB
    monkeypatch.setenv(MIN_FREE_ENV, "0")
    assert reserve_bytes() == 0
    for bad in ("-1", "1.5", "lots"):
        monkeypatch.setenv(MIN_FREE_ENV, bad)
        with pytest.raises(ValueError, match=MIN_FREE_ENV):
            reserve_bytes()


def test_room_is_asked_of_the_nearest_existing_folder_and_refused_below_the_reserve(
    tmp_path, monkeypatch
):
    free = free_bytes(tmp_path)
    monkeypatch.setenv(MIN_FREE_ENV, "1")
    ensure_room(tmp_path / "not" / "made" / "yet.h5")  # nothing needed: room enough
    with pytest.raises(NoRoom) as refused:
        ensure_room(tmp_path / "not" / "made" / "yet.h5", free + 1024 * MB)
    error = refused.value
    assert error.errno == errno.ENOSPC and isinstance(error, OSError)
    assert error.folder == tmp_path  # the nearest folder that exists, not the file
    assert f"this write needs {(free + 1024 * MB) / MB:.1f} MB" in str(error)
    assert abs(error.free - free) < 64 * MB  # the same file system, read independently
    assert str(tmp_path) in str(error) and "this write needs" in str(error)

    monkeypatch.setenv(MIN_FREE_ENV, str(free // MB + 1024))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(NoRoom, match=MIN_FREE_ENV) as refused:
        ensure_room(tmp_path / "file.bin")
    assert refused.value.folder == tmp_path and refused.value.need == 0


def test_a_frame_stack_is_refused_before_hdf5_writes_and_the_old_one_is_kept(tmp_path, monkeypatch):
    path = tmp_path / "images.h5"
    with ImageStackWriter(path, "images") as stack:
        for index, rgb in enumerate(frames(3)):
            stack.append(rgb, index / 25)
    before = path.read_bytes()

    monkeypatch.setenv(MIN_FREE_ENV, str(free_bytes(tmp_path) // MB + 1024))
    with pytest.raises(NoRoom), ImageStackWriter(path, "images") as stack:
        stack.append(frames(1)[0], 0.0)
    # Room gone while a stack is written: the first block of frames is refused.
    monkeypatch.setenv(MIN_FREE_ENV, "0")
    with pytest.raises(NoRoom), ImageStackWriter(path, "images") as stack:
        monkeypatch.setenv(MIN_FREE_ENV, str(free_bytes(tmp_path) // MB + 1024))
        for index, rgb in enumerate(frames(100)):
            stack.append(rgb, index / 25)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.h5"]  # no temp left
    assert len(ImageStack(path, "images")) == 3


@pytest.mark.parametrize("layout", ["vlen", "filter32019"])
def test_packed_image_datasets_are_refused_before_hdf5_writes(tmp_path, no_room, layout):
    import h5py

    with h5py.File(tmp_path / "pack.h5", "w") as out:
        writer = ImageDatasetWriter(out, "crops", layout=layout, frame_shape=(48, 64, 3))
        with pytest.raises(NoRoom):
            for rgb in frames(100):
                writer.append(rgb)
        assert out["crops"].shape[0] == 0  # refused before the first frame reached HDF5
    # Files that never reach a disk are not asked about it.
    with h5py.File(tmp_path / "memory.h5", "w", driver="core", backing_store=False) as out:
        with ImageDatasetWriter(out, "crops", layout=layout, frame_shape=(48, 64, 3)) as writer:
            for rgb in frames(100):
                writer.append(rgb)
        assert writer.count == 100


def test_a_reserve_of_0_checks_nothing_and_no_room_crosses_processes(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setenv(MIN_FREE_ENV, "0")
    ensure_room(tmp_path, free_bytes(tmp_path) + 1024 * MB)  # not checked: no NoRoom
    error = NoRoom(tmp_path, 5 * MB, 3 * MB, 512 * MB)
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, NoRoom) and str(again) == str(error)
    assert (again.folder, again.free, again.need, again.errno) == (tmp_path, 5 * MB, 3 * MB, 28)


def test_a_dataset_shard_is_refused_before_it_is_written(tmp_path, monkeypatch):
    from dpl_assets.packing.dataset_pack import DatasetPack

    monkeypatch.setenv(MIN_FREE_ENV, "0")
    times = np.arange(4) / 25
    packed = {}
    for name in ("a", "b"):
        packed[name] = tmp_path / f"{name}.h5"
        pack_video(
            packed[name], video_id=name, frame_times=times, image_stacks={},
            arrays={"volume": np.zeros(4, np.float32)}, audio_features={}, options=PackOptions(),
        )  # fmt: skip
    pack = DatasetPack(tmp_path / "pack")
    pack.append({"a": packed["a"]})
    before = sorted(p.name for p in (tmp_path / "pack").iterdir())
    monkeypatch.setenv(MIN_FREE_ENV, str(free_bytes(tmp_path) // MB + 1024))
    with pytest.raises(NoRoom):
        pack.append({"b": packed["b"]})
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == before  # no shard, no temp
    assert DatasetPack(tmp_path / "pack").videos() == ["a"]


def test_a_training_file_is_refused_before_it_is_made(tmp_path, no_room):
    times = np.arange(4) / 25
    with pytest.raises(NoRoom):
        pack_video(
            tmp_path / "a.h5", video_id="a", frame_times=times, image_stacks={},
            arrays={"volume": np.zeros(4, np.float32)}, audio_features={}, options=PackOptions(),
        )  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_dpl_run_refuses_to_start_without_room_and_names_a_bad_reserve(
    tmp_path, monkeypatch, capsys
):
    media.make_talking_clip(tmp_path / "videos" / "a.mp4", seconds=1.0)
    (tmp_path / "graph.json").write_text(json.dumps([{"name": "VideoToWavNode"}]))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    argv = ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
            str(tmp_path / "inputs.json"), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    monkeypatch.setenv(MIN_FREE_ENV, str(free_bytes(tmp_path) // MB + 1024))
    assert cli.main(argv) == cli.EXIT_INVALID
    said = capsys.readouterr().err
    assert "error:" in said and MIN_FREE_ENV in said and str(tmp_path) in said
    assert not (tmp_path / "out" / ".dagster").exists()  # nothing started
    monkeypatch.setenv(MIN_FREE_ENV, "plenty")
    assert cli.main(argv) == cli.EXIT_INVALID
    assert f"{MIN_FREE_ENV}='plenty'" in capsys.readouterr().err


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 4 MB tmpfs at ``tmp_path / "disk"``, unmounted afterwards (skipped when
    this user may not mount one)."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
        capture_output=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)  # lazy: never left busy


def test_a_disk_that_fills_during_a_run_fails_its_videos_without_a_crash(tmp_path, small_disk):
    videos = tmp_path / "videos"
    for name in ("a", "b", "c"):
        media.make_talking_clip(videos / f"{name}.mp4", seconds=3.0, size=(640, 480))
    (tmp_path / "graph.json").write_text(json.dumps([{"name": "VideoToImagesNode"}]))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": str(videos)}))
    out = small_disk / "out"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dpl")), "run", "--graph", str(tmp_path / "graph.json"),
         "--inputs", str(tmp_path / "inputs.json"), "--output_dir", str(out), "--workers", "1"],
        capture_output=True, text=True, check=False, timeout=600,
        env={**os.environ, MIN_FREE_ENV: "1", "DPL_FRAME_CACHE_MB": "0"},
    )  # fmt: skip
    # Without the checks HDF5 meets the full disk and the process dies of SIGSEGV (-11).
    assert done.returncode == cli.EXIT_FAILED, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())["videos"]
    failed = [video for video in report if video["status"] == "failed"]
    assert failed and all("NoRoom" in video["reason"] for video in failed)
    for video in report:  # what was saved is whole
        if video["status"] == "processed":
            assert len(ImageStack(Path(video["outputs"]["images"]))) == 75


def test_an_input_error_on_a_full_disk_is_a_failure_not_a_rejection(tmp_path, monkeypatch):
    """An encoder's or decoder's error met once the disk is full is not the video's fault:
    recorded as a failure (computed again by the next run), never as a rejection (kept)."""
    from dpl_assets.media.ffmpeg import FFmpegError
    from dpl_assets.outcomes import InputRejected
    from dpl_assets.storage.store import ArtifactStore
    from dpl_assets_tests.test_generated_assets import run_node, spec_with

    full = str(free_bytes(tmp_path) // MB + 1024)

    def compute(io, config):
        if io.video_id == "b":  # room enough: a bad input is that video's rejection
            raise InputRejected("b.mp4: audio does not decode")
        os.environ[MIN_FREE_ENV] = full  # the disk fills while the video is computed
        raise FFmpegError("ffmpeg: error writing a.mp4: No space left on device")

    monkeypatch.setenv(MIN_FREE_ENV, "0")
    assert run_node(tmp_path, spec_with(compute), {}, ("b",)).success  # a rejection
    assert not run_node(tmp_path, spec_with(compute), {}, ("a",)).success
    store = ArtifactStore(tmp_path)
    assert store.rejection("test_rows", "a") is None
    failure = store.failure("test_rows", "a") or ""
    assert failure.startswith("NoRoom: ") and MIN_FREE_ENV in failure
    assert "(met FFmpegError: ffmpeg: error writing a.mp4" in failure  # the cause is kept
    rejected = store.rejection("test_rows", "b")
    assert rejected is not None and "audio does not decode" in rejected.reason
