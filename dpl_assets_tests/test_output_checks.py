"""Output checks: each passes on a good artefact and fails on a deliberately broken one.

Good artefacts are written here with plain numpy / soundfile / h5py (not through the
pipeline's writers), with lengths computed from first principles: 16 kHz samples -> wav2vec
steps ``(N - 400) // 320 + 1``; per-frame arrays one row per image of the stack.
"""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import soundfile

from dpl_assets.checks import CHECK_NAME
from dpl_assets.storage.image_stack import ImageStackWriter
from dpl_assets.validation import VideoFacts, check_artifact
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_pipeline import instance_for, run_cli

FRAMES, WIDTH, HEIGHT = 6, 64, 48
SAMPLES = 16_000  # one second at 16 kHz -> (16000 - 400) // 320 + 1 = 49 wav2vec steps
STEPS = 49


def good_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    landmarks = (rng.uniform(10, 40, (FRAMES, 68, 2))).astype(np.float32)
    landmarks[3] = np.nan  # a frame without a face: a whole NaN row is allowed
    raw = np.tile(np.array([[10, 8, 40, 38, 0.9]], np.float32), (FRAMES, 1))
    raw[3] = np.nan
    return {
        "landmarks": landmarks,
        "raw_bboxes": raw,
        "landmarks_mesh": np.zeros((FRAMES, 478, 3), np.float32),
        "face_mask": np.array([1, 1, 1, 0, 1, 2], np.uint8),
        "bboxes": np.tile(np.array([[-10, -8, 50, 52]], np.int64), (FRAMES, 1)),
        "head_pose": np.zeros((FRAMES, 6), np.float32),
        "blinks": np.full((FRAMES, 3), 0.3, np.float32),
        "wav2vec": rng.normal(size=(STEPS, 8)).astype(np.float32),
        "volume": np.abs(rng.normal(size=STEPS)).astype(np.float32),
    }


@pytest.fixture
def video(tmp_path: Path) -> dict[str, Path]:
    """One video's artefacts, all good: key -> path."""
    paths = {}
    for key in ("images", "crops"):
        paths[key] = tmp_path / f"{key}.h5"
        with ImageStackWriter(paths[key], key) as stack:
            for index in range(FRAMES):
                stack.append(np.full((HEIGHT, WIDTH, 3), index * 20, np.uint8), index / 25)
    paths["wav"] = tmp_path / "a.wav"
    soundfile.write(paths["wav"], np.zeros(SAMPLES, np.float32), 16_000, subtype="PCM_16")
    for key, array in good_arrays().items():
        paths[key] = tmp_path / f"{key}.npy"
        np.save(paths[key], array)
    return paths


def problems_of(key: str, video: dict[str, Path]) -> list[str]:
    return check_artifact(key, video[key], VideoFacts.read(video["images"], video["wav"]))


def test_good_artefacts_pass(video):
    facts = VideoFacts.read(video["images"], video["wav"])
    assert facts == VideoFacts(FRAMES, (WIDTH, HEIGHT), SAMPLES)
    for key in video:
        assert problems_of(key, video) == [], key


def save_broken(video: dict[str, Path], key: str, array: np.ndarray) -> None:
    np.save(video[key], array)


BROKEN_ARRAYS = {
    "wrong dtype": ("landmarks", lambda a: a.astype(np.float64), "dtype float64"),
    "wrong shape": ("head_pose", lambda a: a[:, :5], "axis 1 has 5"),
    "frame count": ("blinks", lambda a: a[:-1], "5 rows where images has 6"),
    "partial NaN": ("landmarks", lambda a: _set(a, (0, 5, 0), np.nan), "rows partly NaN"),
    "unknown face_mask code": ("face_mask", lambda a: _set(a, 0, 7), "codes [7]"),
    "box misses the frame": ("bboxes", lambda a: a + 500, "miss the 64x48 frame"),
    "box not square": ("bboxes", lambda a: _set(a, (0, 2), 30), "not square"),
    "box inverted": ("raw_bboxes", lambda a: a[:, [2, 1, 0, 3, 4]], "x2 <= x1"),
    "score": ("raw_bboxes", lambda a: _set(a, (0, 4), 1.5), "scores outside"),
    "landmarks far away": ("landmarks", lambda a: _set(a, (1,), 1e4), "far outside"),
    "wav2vec NaN": ("wav2vec", lambda a: _set(a, (2, 2), np.nan), "non-finite"),
    "wav2vec length": ("wav2vec", lambda a: a[:-3], "46 steps where the wav's 16000"),
    "negative volume": ("volume", lambda a: -a - 1, "negative"),
}


def _set(array: np.ndarray, index, value) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


@pytest.mark.parametrize("case", BROKEN_ARRAYS)
def test_each_broken_array_fails_its_check(video, case):
    key, breaks, message = BROKEN_ARRAYS[case]
    save_broken(video, key, breaks(np.load(video[key])))
    problems = problems_of(key, video)
    assert problems and any(message in p for p in problems), problems


@pytest.mark.parametrize("case", BROKEN_ARRAYS)
def test_problems_are_counted_over_the_whole_array_read_in_blocks(video, case, monkeypatch):
    """Arrays are checked a block of rows at a time: one-row blocks give the same sentences
    (counts summed over blocks) as one block for the whole array; Fortran order too."""
    import dpl_assets.validation as validation

    key, breaks, _ = BROKEN_ARRAYS[case]
    broken = breaks(np.load(video[key]))
    answers = []
    for block_bytes, order in ((1, "C"), (1, "F"), (10**9, "C")):
        monkeypatch.setattr(validation, "ROW_BLOCK_BYTES", block_bytes)
        save_broken(video, key, np.asarray(broken, order=order))
        answers.append(problems_of(key, video))
    assert answers[0] == answers[1] == answers[2] and answers[0], answers


def test_counts_add_up_over_blocks(video, monkeypatch):
    import dpl_assets.validation as validation

    monkeypatch.setattr(validation, "ROW_BLOCK_BYTES", 1)
    landmarks = np.load(video["landmarks"])
    landmarks[[0, 2, 5], 7] = 1e4
    landmarks[[1, 4], 9, 1] = np.nan
    save_broken(video, "landmarks", landmarks)
    assert problems_of("landmarks", video) == [
        "2 rows partly NaN (a row is all NaN or all numbers)",
        "3 landmark points far outside the frame",
    ]


def test_a_truncated_npy_file_is_unreadable(video):
    video["landmarks"].write_bytes(video["landmarks"].read_bytes()[:-100])
    problems = problems_of("landmarks", video)
    assert len(problems) == 1 and problems[0].startswith("unreadable .npy file"), problems


def test_broken_wav_and_image_stacks_fail(video, tmp_path):
    stereo_48k = tmp_path / "stereo.wav"
    soundfile.write(stereo_48k, np.zeros((4800, 2), np.float32), 48_000, subtype="FLOAT")
    problems = check_artifact("wav", stereo_48k, VideoFacts())
    assert any("48000 Hz" in p for p in problems)
    assert any("2 channels" in p for p in problems) and any("FLOAT" in p for p in problems)

    short_crops = tmp_path / "short.h5"
    with ImageStackWriter(short_crops, "crops") as stack:
        for index in range(FRAMES - 2):
            stack.append(np.zeros((32, 32, 3), np.uint8), index / 25)
    facts = VideoFacts.read(video["images"], None)
    assert any(
        "4 crops where images has 6" in p for p in check_artifact("crops", short_crops, facts)
    )

    import h5py

    with h5py.File(video["images"], "r+") as file:
        file["timestamps"][2] = 0.0  # time runs backwards
        file.attrs["width"] = WIDTH + 1
    problems = problems_of("images", video)
    assert any("not strictly increasing" in p for p in problems)
    assert any("attributes say 65x48" in p for p in problems)
    video["images"].write_bytes(b"garbage")
    assert "unreadable image stack" in problems_of("images", video)[0]


def test_checks_run_with_dpl_run_and_a_broken_file_shows_in_the_ui_record(tmp_path):
    """After a run, the checks passed; a file broken later fails its check when re-run."""
    media.make_talking_clip(tmp_path / "videos" / "clip.mp4", seconds=1.0)
    graph = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]
    code, report = run_cli(tmp_path, graph, {"video": "videos"})
    assert code == 0 and report["clip"]["failed_checks"] == {}
    out = tmp_path / "out"
    assert json.loads((out / "_checks" / "volume" / "clip.json").read_text())["problems"] == []

    volume_file = out / "volume" / "clip.npy"
    np.save(volume_file, np.load(volume_file)[:-2])  # damaged after the run
    from dpl_assets.definitions import build_definitions

    job = dg.define_asset_job(
        "check_volume", selection=dg.AssetSelection.checks_for_assets("volume")
    )
    defs = build_definitions(out, jobs=[job])
    result = defs.resolve_job_def("check_volume").execute_in_process(
        # a checks-only job cannot validate a partition_key argument: tag the run instead
        instance=instance_for(out),
        tags={"dagster/partition": "clip"},
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME and not evaluation.passed
    assert evaluation.partition is None  # unpartitioned check (see dpl_assets.checks)
    assert "clip" in evaluation.metadata["failures"].value
    # ... and report.json shows it, with a non-zero exit, on the next dpl run.
    code, report = run_cli(tmp_path, graph, {"video": "videos"})
    assert code == 1
    [problem] = report["clip"]["failed_checks"]["volume"]
    assert "steps where the wav's" in problem


def test_training_file_preview_and_contact_sheet_checks(video, tmp_path):
    import h5py

    from dpl_assets.packing.video_pack import PackOptions, pack_video
    from dpl_assets.visualize.preview import write_preview

    facts = VideoFacts.read(video["images"], video["wav"])
    packed = tmp_path / "packed.h5"
    with h5py.File(video["images"], "r") as file:
        times = file["timestamps"][:]
    pack_video(
        packed, video_id="v", frame_times=times, image_stacks={"images": video["images"]},
        arrays={"landmarks": np.load(video["landmarks"])},
        audio_features={"volume": np.load(video["volume"])}, options=PackOptions(),
    )  # fmt: skip
    assert check_artifact("h5_dataset", packed, facts) == []
    with h5py.File(packed, "r+") as file:
        file.create_dataset("extra", data=np.zeros(FRAMES + 2))
    assert any("extra has 8 rows" in p for p in check_artifact("h5_dataset", packed, facts))

    frames = [np.full((HEIGHT, WIDTH, 3), 90, np.uint8)] * FRAMES
    preview = tmp_path / "preview.mp4"
    write_preview(preview, frames, fps=25, wav=video["wav"])
    assert check_artifact("preview", preview, facts) == []
    write_preview(preview, frames[:-1], fps=25, wav=None)
    problems = check_artifact("preview", preview, facts)
    assert any("5 frames where images has 6" in p for p in problems)
    assert any("no audio stream" in p for p in problems)

    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
    assert check_artifact("contact_sheet", sheet, facts) == ["PNG does not decode"]


def test_a_custom_datatype_is_checked_by_the_rules_it_declares(video, tmp_path, monkeypatch):
    from dpl_assets.datatypes import (
        DATATYPES,
        FRAME,
        ArrayContract,
        Codes,
        Datatype,
        NonNegative,
        PointsNearFrame,
        StorageFormat,
    )
    from dpl_assets.validation import checked_keys

    points = Datatype(
        "test_mouth_points", StorageFormat.NPY, (".npy",), "Mouth points (N, 4, 2) px.",
        ArrayContract(("N", 4, 2), "float32"), per=FRAME, nan_rows=True,
        values=(PointsNearFrame(), NonNegative()),
    )  # fmt: skip
    state = Datatype(
        "test_mouth_state", StorageFormat.NPY, (".npy",), "Mouth state (N,) uint8.",
        ArrayContract(("N",), "uint8"), per=FRAME, values=(Codes((0, 1)),),
    )  # fmt: skip
    monkeypatch.setitem(DATATYPES, points.key, points)
    monkeypatch.setitem(DATATYPES, state.key, state)
    assert {points.key, state.key} <= set(checked_keys())
    facts = VideoFacts.read(video["images"], video["wav"])
    good = np.full((FRAMES, 4, 2), 20, np.float32)
    good[2] = np.nan
    np.save(path := tmp_path / "points.npy", good)
    assert check_artifact(points.key, path, facts) == []
    np.save(path, _set(_set(good, (0, 1), 1e4), (1, 0, 0), -1.0))
    problems = check_artifact(points.key, path, facts)
    assert any("1 landmark points far outside" in p for p in problems), problems
    assert any("negative test_mouth_points values" in p for p in problems), problems
    np.save(path := tmp_path / "state.npy", np.array([0, 1, 1, 2, 0, 1], np.uint8))
    assert check_artifact(state.key, path, facts) == [
        "unknown test_mouth_state codes [2] (0, 1 allowed)"
    ]


def test_a_file_datatype_is_checked_only_by_its_declared_file_check(tmp_path, monkeypatch):
    from dpl_assets.datatypes import DATATYPES, Datatype, NpzFrames, StorageFormat
    from dpl_assets.validation import checked_keys

    declared = Datatype(
        "test_frames_npz", StorageFormat.FILE, (".npz",), "Arrays per frame.",
        file_check=NpzFrames(("exp", "jaw")),
    )  # fmt: skip
    undeclared = Datatype("test_blob", StorageFormat.FILE, (".bin",), "Anything.")
    monkeypatch.setitem(DATATYPES, declared.key, declared)
    monkeypatch.setitem(DATATYPES, undeclared.key, undeclared)
    assert declared.key in checked_keys() and undeclared.key not in checked_keys()
    (blob := tmp_path / "a.bin").write_bytes(b"whatever")
    assert check_artifact(undeclared.key, blob, VideoFacts()) == []

    path = tmp_path / "a.npz"
    np.savez(path, exp=np.zeros((5, 50)), jaw=np.zeros((5, 3)), timestamps=np.arange(5.0))
    assert check_artifact(declared.key, path, VideoFacts()) == []
    np.savez(path, exp=np.zeros((5, 50)), timestamps=np.arange(4.0))
    problems = check_artifact(declared.key, path, VideoFacts())
    assert "no jaw" in problems and any("disagree on the frame count" in p for p in problems)
    np.savez(path, exp=np.zeros((5, 50)), jaw=np.float32(1))
    assert check_artifact(declared.key, path, VideoFacts()) == [
        "test_frames_npz arrays must have a frame axis"
    ]


def test_the_a2en_check_requires_only_arrays_its_writer_writes(tmp_path):
    """The arrays the registry's a2en check requires are among those ``a2en_arrays`` writes."""
    from dpl_assets.assets.a2en import a2en_arrays
    from dpl_assets.datatypes import DATATYPES, NpzFrames

    rng = np.random.default_rng(1)
    inputs = {
        "wav2vec": rng.normal(size=(STEPS, 8)).astype(np.float32),
        "volume": np.abs(rng.normal(size=STEPS)).astype(np.float32),
        "exp": np.zeros((FRAMES, 50), np.float32),
        "pose": np.zeros((FRAMES, 6), np.float32),
        "landmarks3d": rng.normal(size=(FRAMES, 68, 3)).astype(np.float32),
    }
    arrays = a2en_arrays(inputs, np.arange(FRAMES) / 25, SAMPLES)
    check = DATATYPES["a2en"].file_check
    assert isinstance(check, NpzFrames) and set(check.required) <= set(arrays)
    np.savez(path := tmp_path / "a2en.npz", **arrays)
    assert check_artifact("a2en", path, VideoFacts()) == []
