"""SpeechNode and SceneCutNode run the way a user runs them: ``dpl run`` on a clip of two
shots with a real reading as its audio, and on the same shots with a silent track."""

import json
import subprocess
from pathlib import Path

import numpy as np
import soundfile

from dpl_assets.media.ffmpeg import ffmpeg_executable
from dpl_assets.nodes.audio import conv_output_length
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets_tests.dpl_runs import run_graph
from dpl_assets_tests.test_scenes import two_shots
from dpl_assets_tests.test_speech import RATE, reading

GRAPH = [
    {"name": "VideoToWavNode", "params": {}},
    {"name": "VolumeNode", "params": {}},
    {"name": "SpeechNode", "params": {}},
    {"name": "VideoToImagesNode", "params": {"fps": 25}},
    {"name": "SceneCutNode", "params": {}},
]


def with_audio(video: Path, audio: list[str], path: Path) -> Path:
    """``video``'s stream copied, with AAC of the ffmpeg ``audio`` input, cut to the video."""
    subprocess.run(
        [ffmpeg_executable(), "-v", "error", "-y", "-i", str(video), *audio,
         "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_speech_and_scenes_through_dpl_run(tmp_path):
    shots = two_shots(tmp_path / "shots.mp4", 25, 25)  # 2 s, cut at frame 25
    voice = tmp_path / "voice.wav"
    soundfile.write(voice, np.concatenate([np.zeros(RATE // 5, np.float32), reading("0880")]), RATE)
    videos = tmp_path / "videos"
    videos.mkdir()
    talking = with_audio(shots, ["-i", str(voice)], videos / "talking.mp4")
    silent = with_audio(
        shots, ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono"], videos / "silent.mp4"
    )

    report = run_graph(tmp_path, GRAPH, "videos", "out", "--workers", "1")
    spoken = report["talking"]
    assert spoken["status"] == "processed", spoken
    speech = np.load(spoken["outputs"]["speech"])
    wav, _ = soundfile.read(spoken["outputs"]["wav"], dtype="float32")
    assert speech.dtype == np.float32 and speech.shape == (conv_output_length(wav.size),)
    assert speech.shape == np.load(spoken["outputs"]["volume"]).shape
    spans = json.loads(Path(spoken["outputs"]["speech_spans"]).read_text())
    assert spans["threshold"] == 0.5 and len(spans["spans"]) >= 1
    assert 0.1 <= spans["spans"][0][0] <= 0.4  # the reading starts 0.2 s in
    scenes = json.loads(Path(spoken["outputs"]["scenes"]).read_text())
    with ImageStack(Path(spoken["outputs"]["images"])) as images:
        times = images.timestamps
        assert len(images) == scenes["frames"] == 50
    (cut,) = scenes["cut_frames"]
    assert abs(cut - 25) <= 1 and scenes["scenes"] == [[0, cut], [cut, 50]]
    assert scenes["cut_times_s"] == [round(float(times[cut]), 6)]

    mute = report["silent"]
    assert mute["status"] == "rejected"
    assert mute["reason"].startswith(f"{silent}: no speech"), mute["reason"]
    assert "speech" not in mute["outputs"] and "scenes" in mute["outputs"]
    assert talking.name in spoken["source"]
