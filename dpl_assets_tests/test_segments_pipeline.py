"""SegmentNode the way a user runs it: ``dpl run`` on a clip with a span without a face and
a span of silence (a real face photo, real speech), then the training file read back per
kept segment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from skimage.data import astronaut

from dpl_assets.nodes.segments import NO_FACE, NO_SPEECH
from dpl_assets.packing.reader import PackedWindows, segment_window_starts
from dpl_assets_tests.dpl_runs import run_graph
from dpl_assets_tests.test_scenes import shot
from dpl_assets_tests.test_speech import RATE, reading
from dpl_assets_tests.test_speech_scenes_pipeline import with_audio
from dpl_assets_tests.test_vision_pipeline import write_clip

FPS = 25
SIZE = (320, 240)
NO_FACE_FRAMES = (75, 100)  # a grey frame from 3.0 to 4.0 s
SILENCE_S = (5.4, 6.6)  # digital silence

GRAPH = [
    {"name": "VideoToWavNode", "params": {}},
    {"name": "SpeechNode", "params": {}},
    {"name": "VideoToImagesNode", "params": {}},
    {"name": "FaceAlignmentNode", "params": {}},
    {"name": "SegmentNode", "params": {"min_seconds": 1.0, "max_seconds": 4.0}},
    {"name": "H5DatasetNode", "params": {"datatypes": ["landmarks", "segment_ids"]}},
]


def speech_with_silence(seconds: float) -> np.ndarray:
    """Real readings end to end, ``seconds`` long, digital silence over :data:`SILENCE_S`."""
    voice = np.concatenate([reading(n) for n in ("0880", "0930", "0890", "0880")])
    samples = np.resize(voice, round(seconds * RATE)).astype(np.float32)
    samples[round(SILENCE_S[0] * RATE) : round(SILENCE_S[1] * RATE)] = 0.0
    return samples


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("segments")
    frames = shot(astronaut(), 200, SIZE)
    grey = np.full_like(frames[0], 128)
    frames[NO_FACE_FRAMES[0] : NO_FACE_FRAMES[1]] = [grey] * (NO_FACE_FRAMES[1] - NO_FACE_FRAMES[0])
    silent_video = write_clip(base / "picture.mp4", frames, FPS)
    soundfile.write(base / "voice.wav", speech_with_silence(200 / FPS), RATE)
    videos = base / "videos"
    videos.mkdir()
    with_audio(silent_video, ["-i", str(base / "voice.wav")], videos / "talk.mp4")
    (video,) = run_graph(base, GRAPH, "videos", "out", "--workers", "1").values()
    assert video["status"] == "processed", video
    return video


def _near(frame: int, expected: int, tolerance: int) -> bool:
    return abs(frame - expected) <= tolerance


def test_the_dropped_spans_and_their_reasons(run):
    record = json.loads(Path(run["outputs"]["segments"]).read_text())
    dropped = {tuple(span["reasons"]): span for span in record["dropped"]}
    face = dropped[(NO_FACE,)]
    # the detector may take a frame to lose and find the face again
    assert _near(face["start"], NO_FACE_FRAMES[0], 1) and _near(face["end"], NO_FACE_FRAMES[1], 1)
    silence = dropped[(NO_SPEECH,)]
    # speech activity is within 0.1 s of the silence's edges (SpeechNode's tested accuracy)
    assert _near(silence["start"], round(SILENCE_S[0] * FPS), 3), silence
    assert _near(silence["end"], round(SILENCE_S[1] * FPS), 3), silence
    assert set(dropped) == {(NO_FACE,), (NO_SPEECH,)}, record["dropped"]
    kept = record["kept"]
    # kept: [0, 75), [100, ~135), [~165, 200) (the first, 3 s, within max_seconds 4)
    assert kept[0] == [0, face["start"]]
    assert kept[1] == [face["end"], silence["start"]]
    assert kept[2] == [silence["end"], 200]
    lengths = [(end - start) / FPS for start, end in kept]
    assert all(1.0 <= s <= 4.0 for s in lengths), lengths
    assert record["kept_s"] == pytest.approx(sum(lengths), abs=1e-3)
    assert record["dropped_s"][NO_FACE] == pytest.approx((face["end"] - face["start"]) / FPS)
    assert record["kept_s"] + record["dropped_total_s"] == pytest.approx(200 / FPS, abs=1e-3)
    ids = np.load(run["outputs"]["segment_ids"])
    assert ids.dtype == np.int32 and ids.shape == (200,)
    for index, (start, end) in enumerate(kept):
        assert (ids[start:end] == index).all()
    assert (ids[face["start"] : face["end"]] == -1).all()


def test_the_reader_serves_only_windows_inside_kept_segments(run):
    record = json.loads(Path(run["outputs"]["segments"]).read_text())
    data = PackedWindows(run["outputs"]["h5_dataset"], window=16, stride=8)
    assert data.by_segment
    served = [(item["start"], item["segment"]) for item in (data[i] for i in range(len(data)))]
    expected = []
    for index, (start, end) in enumerate(record["kept"]):
        expected += [(s, index) for s in range(start, end - 16 + 1, 8)]
    assert served == expected
    ids = PackedWindows(run["outputs"]["h5_dataset"], window=16, keys=["segment_ids"])[0]
    assert ids["segment_ids"].dtype == torch.int64 and (ids["segment_ids"] == 0).all()
    every = PackedWindows(run["outputs"]["h5_dataset"], window=16, stride=8, segments=False)
    assert len(every) > len(data)  # without segments, windows cross the dropped spans


def test_the_report_counts_speech_and_segment_seconds(run):
    record = json.loads(Path(run["outputs"]["segments"]).read_text())
    spans = json.loads(Path(run["outputs"]["speech_spans"]).read_text())
    assert run["stats"]["segments_kept_s"] == record["kept_s"]
    assert run["stats"]["segments_dropped_s"] == record["dropped_s"]
    heard = sum(end - start for start, end in spans["spans"])
    assert run["stats"]["speech_s"] == pytest.approx(heard, abs=0.05)
    # 8 s with 1.2 s of digital silence, and the readings' own short pauses
    assert 5.0 < run["stats"]["speech_s"] < 200 / FPS - (SILENCE_S[1] - SILENCE_S[0])


def test_the_dataset_summary_counts_kept_and_dropped_seconds(run, tmp_path):
    from dpl_assets.visualize.summary import summarize
    from dpl_assets.visualize.summary_inputs import collect_summary_inputs

    record = json.loads(Path(run["outputs"]["segments"]).read_text())
    (video,) = collect_summary_inputs(tmp_path, [run])
    assert video["segment_kept_s"] == pytest.approx(record["kept_s"])
    assert video["segment_dropped_s"] == pytest.approx(record["dropped_s"])
    markdown = summarize([video, video], tmp_path / "plots")  # two videos: sums
    assert f"| kept | {2 * record['kept_s']:.1f} |" in markdown
    face_s = 2 * record["dropped_s"][NO_FACE]
    assert f"| dropped: {NO_FACE} | {face_s:.1f} |" in markdown


def test_segment_window_starts():
    ids = np.array([0] * 10 + [-1] * 3 + [1] * 5 + [2] * 4)
    assert segment_window_starts(ids, 4, 3).tolist() == [0, 3, 6, 13, 18]
    assert segment_window_starts(np.full(5, -1), 2, 1).tolist() == []
