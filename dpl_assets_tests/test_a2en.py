"""``A2enDatasetNode`` run from precomputed inputs named in the inputs JSON (no video).

References: audio features resampled here with ``np.interp`` at the frame times, the blink
formula written out from the 68-point indices, and the arrays the test wrote.
"""

import json
from pathlib import Path

import numpy as np
import soundfile

from dpl_assets import cli

FPS = 25.0
FRAMES, STEPS, DIM = 40, 80, 6  # 1.6 s of frames, 1.6 s of 50 Hz features


def write_inputs(root: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    for key, array in arrays.items():
        (root / key).mkdir(parents=True, exist_ok=True)
        np.save(root / key / f"{name}.npy", array)


def blink_reference(points: np.ndarray, lids: list[tuple[int, int]], corners: tuple[int, int]):
    opening = np.mean([np.linalg.norm(points[:, a] - points[:, b], axis=-1) for a, b in lids], 0)
    return opening / np.linalg.norm(points[:, corners[0]] - points[:, corners[1]], axis=-1)


def test_a2en_from_precomputed_parameters(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "exp": rng.normal(size=(FRAMES, 50)).astype(np.float32),
        "pose": rng.normal(size=(FRAMES, 6)).astype(np.float32),
        "landmarks3d": rng.normal(size=(FRAMES, 68, 3)).astype(np.float32),
        "wav2vec": rng.normal(size=(STEPS, DIM)).astype(np.float32),
        "volume": rng.uniform(size=STEPS).astype(np.float32),
    }
    write_inputs(tmp_path / "given", "speaker 1", arrays)
    write_inputs(tmp_path / "given", "silent", {**arrays, "wav2vec": np.zeros((0, DIM), np.float32),
                                                "volume": np.zeros(0, np.float32)})  # fmt: skip
    inputs = {key: f"given/{key}" for key in ("exp", "pose", "landmarks3d", "wav2vec", "volume")}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    graph = [{"name": "A2enDatasetNode", "params": {"fps": FPS}}]
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    out = tmp_path / "out"

    code = cli.main(["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                     str(tmp_path / "inputs.json"), "--output_dir", str(out)])  # fmt: skip

    report = {v["video_id"]: v for v in json.loads((out / "report.json").read_text())["videos"]}
    assert code == 0
    assert report["silent"]["status"] == "rejected" and "empty audio" in report["silent"]["reason"]
    assert report["speaker 1"]["status"] == "processed"
    with np.load(report["speaker 1"]["outputs"]["a2en"], allow_pickle=False) as npz:
        data = dict(npz)
    times = np.arange(FRAMES) / FPS
    steps = (np.arange(STEPS) * 320 + 200) / 16000
    expected = np.stack([np.interp(times, steps, arrays["wav2vec"][:, d]) for d in range(DIM)], 1)
    np.testing.assert_allclose(data["wav2vec"], expected, atol=1e-6)
    volume_steps = (np.arange(STEPS) * 320 + 160) / 16000
    np.testing.assert_allclose(
        data["volume"], np.interp(times, volume_steps, arrays["volume"]), atol=1e-6
    )
    np.testing.assert_array_equal(data["exp"], arrays["exp"])
    np.testing.assert_array_equal(data["jaw"], arrays["pose"][:, 3:])
    points = arrays["landmarks3d"].astype(np.float64)
    left = blink_reference(points, [(37, 41), (38, 40)], (36, 39))
    right = blink_reference(points, [(43, 47), (44, 46)], (42, 45))
    np.testing.assert_allclose(data["left_blink"], left, rtol=1e-5)
    np.testing.assert_allclose(data["right_blink"], right, rtol=1e-5)
    np.testing.assert_allclose(data["average_blink"], (left + right) / 2, rtol=1e-5)
    assert all(array.shape[0] == FRAMES for array in data.values())


def test_a2en_frames_after_the_audio_end_get_silence_and_a_false_audio_mask(tmp_path):
    # 40 frames (1.6 s at 25 fps), but the user's wav ends at 0.9 s: frames from 0.92 s on
    # have no audio. The user's features run on to 1.2 s (60 steps): the wav is the truth.
    rng = np.random.default_rng(1)
    steps = 60
    arrays = {
        "exp": rng.normal(size=(FRAMES, 50)).astype(np.float32),
        "pose": rng.normal(size=(FRAMES, 6)).astype(np.float32),
        "landmarks3d": rng.normal(size=(FRAMES, 68, 3)).astype(np.float32),
        "wav2vec": rng.normal(size=(steps, DIM)).astype(np.float32),
        "volume": rng.uniform(0.5, 1.0, size=steps).astype(np.float32),
    }
    write_inputs(tmp_path / "given", "short audio", arrays)
    (tmp_path / "given" / "wav").mkdir()
    soundfile.write(tmp_path / "given" / "wav" / "short audio.wav",
                    np.zeros(14_400, np.float32), 16_000, subtype="PCM_16")  # fmt: skip
    keys = ("exp", "pose", "landmarks3d", "wav2vec", "volume", "wav")
    (tmp_path / "inputs.json").write_text(json.dumps({key: f"given/{key}" for key in keys}))
    (tmp_path / "graph.json").write_text(
        json.dumps([{"name": "A2enDatasetNode", "params": {"fps": FPS}}])
    )
    out = tmp_path / "out"

    code = cli.main(["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                     str(tmp_path / "inputs.json"), "--output_dir", str(out)])  # fmt: skip

    report = {v["video_id"]: v for v in json.loads((out / "report.json").read_text())["videos"]}
    assert code == 0 and report["short audio"]["status"] == "processed", report
    with np.load(report["short audio"]["outputs"]["a2en"], allow_pickle=False) as npz:
        data = dict(npz)
    times = np.arange(FRAMES) / FPS
    with_audio = times < 0.9  # frames 0..22
    assert with_audio.sum() == 23
    np.testing.assert_array_equal(data["audio_mask"], with_audio)
    assert np.all(data["volume"][~with_audio] == 0) and np.all(data["wav2vec"][~with_audio] == 0)
    volume_steps = (np.arange(steps) * 320 + 160) / 16000
    np.testing.assert_allclose(
        data["volume"][with_audio],
        np.interp(times[with_audio], volume_steps, arrays["volume"]),
        atol=1e-6,
    )
    assert np.all(data["volume"][with_audio] >= 0.5)  # real audio, not silence
