"""``A2enDatasetNode`` run from precomputed inputs named in the inputs JSON (no video).

References: audio features resampled here with ``np.interp`` at the frame times, the blink
formula written out from the 68-point indices, and the arrays the test wrote.
"""

import json
from pathlib import Path

import numpy as np

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
