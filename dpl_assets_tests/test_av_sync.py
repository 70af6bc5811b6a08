"""Audio-visual sync and the speaking face, on real face photos made to talk by real speech.

References independent of the code under test: the shift given to the clip maker (audio
moved -5, 0, +7 frames), which face the heard speech drives (the clip maker's choice),
analytic signals with a known lag, the public SyncNet layer shapes
(``syncnet_python``'s ``SyncNetModel.py``) and ``np.interp`` of the volume for the packed
audio. The clips are made once per session (:mod:`dpl_assets_tests.talking_face`) and go
through ``dpl run`` once with both face-following modes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from dpl_assets.assets.av_sync import DEFAULT_MIN_CONFIDENCE
from dpl_assets.nodes.av_sync import lag_curve, mouth_opening, sync_tracks
from dpl_assets.nodes.face_tracking import TrackSummary, track_arrays, tracks_record
from dpl_assets.packing.av_offset import audio_offset_s, offset_samples
from dpl_assets.packing.video_pack import PackOptions, pack_video
from dpl_assets_tests import talking_face
from dpl_assets_tests.dpl_runs import run_graph

pytestmark = pytest.mark.skipif(
    not talking_face.have_media(), reason="needs python3-skimage and pocketsphinx-testdata"
)

SHIFTS = {"late 7": 7, "in sync": 0, "early 5": -5}
THRESHOLD = DEFAULT_MIN_CONFIDENCE["correlation"]


# --------------------------------------------------------------------------------------
# Signals with a known answer
# --------------------------------------------------------------------------------------


def smooth_noise(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.convolve(rng.normal(size=count + 4), np.ones(5) / 5, mode="valid")


@pytest.mark.parametrize("lag", [-9, -1, 0, 4, 15])
def test_the_lag_curve_peaks_at_a_known_delay(lag):
    voice = smooth_noise(220, seed=1)
    mouth = voice[20:120]
    heard = voice[20 - lag : 120 - lag]  # heard[i + lag] == mouth[i]: audio late by lag
    curve = lag_curve(mouth, heard, max_lag=15)
    assert curve.shape == (31,)
    assert int(np.nanargmax(curve)) - 15 == lag
    assert curve[15 + lag] == pytest.approx(1.0)  # identical changes: correlation 1
    other = smooth_noise(100, seed=2)
    results, speaking = sync_tracks([other, mouth, np.full(100, np.nan)], heard, 15)
    assert speaking == 1 and results[1].best_lag == lag
    assert results[1].confidence > 0.7 > results[0].confidence
    assert results[2].confidence == 0.0 and np.isnan(results[2].curve).all()


def test_mouth_opening_is_the_inner_lip_gap_over_the_eye_corners():
    points = np.zeros((2, 68, 2), np.float32)
    points[:, 36], points[:, 45] = (10, 50), (90, 50)  # eye corners 80 px apart
    points[:, 62], points[:, 66] = (50, 100), (50, 100)
    points[1, 66] = (50, 120)  # lower lip 20 px down
    assert mouth_opening(points) == pytest.approx([0.0, 0.25])
    points[1, 45] = np.nan
    assert np.isnan(mouth_opening(points)[1])


def test_the_face_tracks_record_round_trips_with_gaps():
    track = TrackSummary(
        frames=np.array([2, 3, 5], np.int32),
        boxes=np.array([[1, 2, 30, 40, 0.9]] * 3, np.float32),
        mouth_opening=np.array([0.1, np.nan, 0.3], np.float32),
        area_sum=3 * 29 * 38.0,
    )
    record = json.loads(json.dumps(tracks_record([track], 8)))
    assert record["tracks"][0]["followed"] and record["tracks"][0]["frames_with_face"] == 2
    boxes, mouth = track_arrays(record)[0]
    assert boxes.shape == (8, 5) and mouth.shape == (8,)
    assert (
        np.isfinite(boxes[:, 0]).tolist() == [False, False, True, True, False, True] + [False] * 2
    )
    np.testing.assert_allclose(mouth[[2, 5]], [0.1, 0.3], atol=1e-6)
    assert np.isnan(mouth[[0, 3, 4, 6, 7]]).all()


# --------------------------------------------------------------------------------------
# The pipeline on talking clips
# --------------------------------------------------------------------------------------


def graph(follow: str) -> list[dict[str, Any]]:
    return [
        {"name": "VideoToImagesNode", "params": {}},
        {"name": "VideoToWavNode", "params": {}},
        {"name": "VolumeNode", "params": {}},
        {"name": "FaceAlignmentNode", "params": {"follow": follow}},
        {"name": "AvSyncNode", "params": {}},
        {"name": "H5DatasetNode", "params": {"datatypes": ["volume"], "av_offset": True}},
    ]


def run_following(root: Path, follow: str, videos: str) -> dict[str, dict[str, Any]]:
    return run_graph(root, graph(follow), videos, f"out_{follow}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("talking")
    for name, shift in SHIFTS.items():
        talking_face.make_talking_clip(root / "videos" / f"{name}.mp4", shift)
    talking_face.make_talking_clip(root / "videos" / "still mouth.mp4", still=True)
    talking_face.make_two_faces_clip(root / "videos" / "two faces.mp4")
    talking_face.make_two_faces_clip(root / "two" / "two faces.mp4")
    return {
        "largest": run_following(root, "largest", "videos"),
        "speaking": run_following(root, "speaking", "two"),
    }


def output(video: dict[str, Any], key: str) -> Any:
    assert video["status"] == "processed", video
    path = Path(video["outputs"][key])
    return json.loads(path.read_text()) if path.suffix == ".json" else path


@pytest.mark.parametrize("name", list(SHIFTS))
def test_the_offset_of_shifted_audio_is_found_within_a_frame(runs, name):
    sync = output(runs["largest"][name], "av_sync")
    assert sync["speaking_track"] == 0 and sync["in_sync"]
    assert abs(sync["offset_frames"] - SHIFTS[name]) <= 1, sync["offset_frames"]
    assert sync["confidence"] > THRESHOLD and sync["fps"] == pytest.approx(25)
    assert sync["offset_seconds"] == pytest.approx(sync["offset_frames"] / 25)
    track = sync["tracks"][0]
    assert len(track["curve"]) == 31 and track["best_lag_frames"] == sync["offset_frames"]


def test_a_still_mouth_gets_a_confidence_below_the_threshold(runs):
    sync = output(runs["largest"]["still mouth"], "av_sync")
    talking = [output(runs["largest"][name], "av_sync")["confidence"] for name in SHIFTS]
    assert sync["confidence"] < THRESHOLD < min(talking)
    assert not sync["in_sync"]


def test_of_two_faces_the_speaking_one_is_chosen(runs):
    video = runs["largest"]["two faces"]
    tracks = track_arrays(output(video, "face_tracks"))
    centres = [np.nanmean((boxes[:, 0] + boxes[:, 2]) / 2) for boxes, _ in tracks]
    followed_x = centres[0]
    assert followed_x < 160  # by default the larger face, the silent astronaut (left)
    sync = output(video, "av_sync")
    speaking = sync["speaking_track"]
    assert speaking is not None and centres[speaking] > 160  # the heard face is on the right
    assert sync["in_sync"] and abs(sync["offset_frames"]) <= 1
    silent = sync["tracks"][0]["confidence"]
    assert sync["confidence"] > THRESHOLD > silent


def test_the_face_node_follows_the_speaking_face_when_asked(runs):
    largest, speaking = runs["largest"]["two faces"], runs["speaking"]["two faces"]
    left = np.load(output(largest, "landmarks"))
    right = np.load(output(speaking, "landmarks"))
    assert np.nanmean(left[..., 0]) < 160 < np.nanmean(right[..., 0])
    sync = output(speaking, "av_sync")
    assert sync["speaking_track"] == 0  # the followed track is now the speaker
    assert output(speaking, "faces")["follow"] == "speaking"
    # The default mode's outputs are those of the largest face, as before.
    faces = output(largest, "faces")
    assert "follow" not in faces and faces["tracks_seen"] >= 2


def test_the_packed_audio_is_moved_by_the_measured_offset(runs):
    video = runs["largest"]["late 7"]
    sync = output(video, "av_sync")
    offset = sync["offset_seconds"]
    assert offset_samples(offset) == sync["offset_frames"] * 640
    volume = np.load(output(video, "volume"))
    steps = 0.02 * np.arange(len(volume)) + 0.01  # centres of its 320-sample hops
    with h5py.File(output(video, "h5_dataset")) as packed:
        times = packed["timestamps"][:]
        got, mask = packed["volume"][:], packed["audio_mask"][:]
        assert packed["audio_mask"].attrs["audio_offset_s"] == pytest.approx(offset)
    expected = np.interp(times + offset, steps, volume)
    heard = times + offset < len(volume) * 0.02
    assert (mask == heard).all() and not mask[-1]
    np.testing.assert_allclose(got[mask], expected[mask], rtol=1e-5, atol=1e-7)
    assert (got[~mask] == 0).all()


def test_pack_video_moves_audio_features_by_whole_frames(tmp_path):
    times = np.arange(50) / 25.0
    volume = np.arange(100, dtype=np.float32)  # a ramp: value = step index
    packed = []
    for offset in (0.0, 3 / 25, -3 / 25):
        path = tmp_path / f"{offset}.h5"
        pack_video(
            path, video_id="v", frame_times=times, image_stacks={}, arrays={},
            audio_features={"volume": volume}, options=PackOptions(audio_offset_s=offset),
            audio_samples=32_000,
        )  # fmt: skip
        with h5py.File(path) as file:
            packed.append((file["volume"][:], file["audio_mask"][:]))
    (plain, _), (late, late_mask), (early, early_mask) = packed
    np.testing.assert_allclose(late[:-3], plain[3:], atol=1e-4)  # frame i: frame i + 3 audio
    assert not late_mask[-3:].any() and late_mask[:-3].all()
    np.testing.assert_allclose(early[3:], plain[:-3], atol=1e-4)
    assert not early_mask[:3].any() and (early[:3] == 0).all()
    assert audio_offset_s({"in_sync": False, "offset_seconds": 0.2}) == 0.0
    assert audio_offset_s(None) == 0.0


# --------------------------------------------------------------------------------------
# SyncNet on stand-in weights
# --------------------------------------------------------------------------------------


def test_syncnet_has_the_public_syncnet_v2_layers():
    from dpl_assets.nodes.syncnet import SyncNetS

    shapes = {key: tuple(value.shape) for key, value in SyncNetS().state_dict().items()}
    # Layer shapes of syncnet_python's SyncNetModel.S, read from its source.
    assert shapes["netcnnaud.0.weight"] == (64, 1, 3, 3)
    assert shapes["netcnnaud.18.weight"] == (512, 256, 5, 4)
    assert shapes["netfcaud.3.weight"] == (1024, 512)
    assert shapes["netcnnlip.0.weight"] == (96, 3, 5, 7, 7)
    assert shapes["netcnnlip.18.weight"] == (512, 256, 1, 6, 6)
    assert shapes["netfclip.1.running_mean"] == (512,)
    assert len(shapes) == 102  # 12 convolutions, 4 linear (w, b) + 14 batch norms (5 each)


class FrameStack:
    """What the syncnet backend reads of an image stack: frame times and the frames."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames

    def frame_times(self) -> np.ndarray:
        return np.arange(len(self.frames)) / 25.0

    def open(self):  # type: ignore[no-untyped-def]
        import contextlib

        return contextlib.nullcontext(iter(self.frames))


def test_syncnet_stand_in_weights_load_run_and_give_an_offset_in_range(tmp_path):
    import torch

    from dpl_assets.nodes.syncnet import SyncNetS, load_syncnet, mfcc, sync_tracks_syncnet

    torch.manual_seed(0)
    torch.save(SyncNetS().state_dict(), tmp_path / "syncnet_v2.model")
    model = load_syncnet(tmp_path / "syncnet_v2.model", "cpu")
    face = talking_face._astronaut()
    voice = talking_face.speech("dashwood")
    frames = [face.frame(o) for o in talking_face.mouth_opening_of(voice, 16)]
    wav = talking_face.shifted(voice, 16, 0)
    box = np.array([80, 60, 176, 170, 0.9], np.float32)  # around the face, every frame
    absent = np.full((16, 5), np.nan, np.float32)
    results, speaking = sync_tracks_syncnet(
        model, FrameStack(frames), [np.tile(box, (16, 1)), absent], wav, max_lag=3
    )
    assert speaking == 0
    curve = results[0].curve
    assert curve.shape == (7,) and np.isfinite(curve).all() and (curve >= 0).all()
    assert -3 <= results[0].best_lag <= 3 and results[0].peak == curve.min()
    assert results[0].confidence == pytest.approx(np.median(curve) - curve.min())
    assert np.isnan(results[1].curve).all()
    # MFCCs as python_speech_features makes them: 100 per second, 13 each; c0 is the log
    # energy of the pre-emphasized frame's power spectrum.
    coefficients = mfcc(wav)
    assert coefficients.shape == (1 + int(np.ceil((wav.size - 400) / 160)), 13)
    x = wav.astype(np.float64) * 32768
    emphasized = np.append(x[:1], x[1:] - 0.97 * x[:-1])[1600:2000]
    energy = (np.abs(np.fft.rfft(emphasized, 512)) ** 2 / 512).sum()
    assert coefficients[10, 0] == pytest.approx(np.log(energy), rel=1e-5)
    torch.save({"netcnnaud.0.weight": torch.zeros(1)}, tmp_path / "other.model")
    with pytest.raises(RuntimeError):
        load_syncnet(tmp_path / "other.model")


class FakeIO:
    """The parts of a video's VideoIO that AvSyncNode reads."""

    def __init__(self, inputs: dict[str, Any], model: Any) -> None:
        self.inputs, self.model = inputs, model

    def __getitem__(self, key: str) -> Any:
        return self.inputs[key]

    def optional(self, key: str) -> Any:
        return self.inputs.get(key)

    def frame_times(self, count: int) -> np.ndarray:
        return self.inputs["images"].frame_times()[:count]


def test_the_syncnet_backend_writes_the_av_sync_record(tmp_path):
    import torch

    from dpl_assets.assets.av_sync import AvSyncConfig, av_sync_of, syncnet_model
    from dpl_assets.nodes.syncnet import SyncNetS

    torch.manual_seed(1)
    torch.save(SyncNetS().state_dict(), tmp_path / "syncnet_v2.model")
    config = AvSyncConfig(backend="syncnet", checkpoint=str(tmp_path / "syncnet_v2.model"),
                          max_lag_frames=2)  # fmt: skip
    model = syncnet_model(config, lambda: "cpu")
    voice = talking_face.speech("dashwood")
    face = talking_face._astronaut()
    frames = [face.frame(o) for o in talking_face.mouth_opening_of(voice, 10)]
    summary = TrackSummary(
        np.arange(10, dtype=np.int32), np.tile(np.float32([80, 60, 176, 170, 0.9]), (10, 1)),
        np.zeros(10, np.float32), 1.0,
    )  # fmt: skip
    io = FakeIO(
        {"face_tracks": tracks_record([summary], 10), "images": FrameStack(frames),
         "wav": talking_face.shifted(voice, 10, 0)},
        model,
    )  # fmt: skip
    record = av_sync_of(io, config)["av_sync"]  # type: ignore[arg-type]
    assert record["backend"] == "syncnet" and record["curve_kind"] == "distance"
    assert record["speaking_track"] == 0 and -2 <= record["offset_frames"] <= 2
    assert len(record["tracks"][0]["curve"]) == 5 and record["min_confidence"] == 3.0
    assert record["in_sync"] == (record["confidence"] >= 3.0)


def test_follow_speaking_without_audio_follows_the_largest_and_says_so():
    from dpl_assets.assets.faces import FaceAlignmentConfig, _follow_note, _speaking_face

    config = FaceAlignmentConfig(follow="speaking")
    io = FakeIO({"images": FrameStack([np.zeros((8, 8, 3), np.uint8)] * 10)}, None)
    assert _speaking_face(io, 10, config) is None  # type: ignore[arg-type]
    assert _follow_note(config, False) == {"follow": "largest: the video has no audio"}
    assert _follow_note(FaceAlignmentConfig(), False) == {}  # the default record is unchanged


def test_chance_peaks_of_short_clips_are_not_in_sync():
    """Unrelated signals over 100 frames (4 s): the best of 31 lags often clears the
    confidence threshold by chance, the significance check keeps them out of sync; a
    mouth that follows the audio 3 frames early is in sync at lag 3."""
    from dpl_assets.nodes.av_sync import TrackSync, effective_pairs

    rng = np.random.default_rng(7)
    pairs = [(rng.standard_normal(100), rng.standard_normal(100)) for _ in range(300)]
    chance = [TrackSync.of(lag_curve(m, a), effective_pairs(m, a)) for m, a in pairs]
    assert np.mean([sync.confidence >= 0.25 for sync in chance]) > 0.2  # the problem
    assert np.mean([sync.in_sync(0.25) for sync in chance]) <= 0.01
    voice = rng.standard_normal(100).cumsum()
    mouth = np.roll(voice, -3) + 0.3 * rng.standard_normal(100)  # the audio 3 frames late
    (result,), speaking = sync_tracks([mouth], voice)
    assert speaking == 0 and result.best_lag == 3 and result.in_sync(0.25)
    assert result.significance == pytest.approx(
        result.peak * np.sqrt(effective_pairs(mouth, voice))
    )
    # differenced white noise: r(1) = -1/2 for both, f = 1 + 2 / 4 = 1.5
    assert np.median([99 / effective_pairs(m, a) for m, a in pairs]) == pytest.approx(1.5, abs=0.1)
