"""Benchmark: frames per second of the FLAME layer on this CPU (full-size random model).

A FLAME-sized model (5023 vertices, 9976 faces, 400 blend shapes, 5 joints) with random
arrays has exactly the arithmetic of the real ``generic_model.pkl`` (none is available
here). Times ``FlameLayer.forward_numpy`` at several batch sizes, best of ``--repeats``.

    .venv/bin/python benchmarks/flame.py --frames 512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from dpl_assets.face3d.flame import FlameModel
from dpl_assets.face3d.flame_layer import FlameLayer

VERTS, FACES, JOINTS = 5023, 9976, 5


def random_model(seed: int = 0) -> FlameModel:
    rng = np.random.default_rng(seed)
    regressor = np.zeros((JOINTS, VERTS))
    for joint in range(JOINTS):
        support = rng.choice(VERTS, size=20, replace=False)
        regressor[joint, support] = rng.dirichlet(np.ones(20))
    model = {
        "v_template": 0.1 * rng.standard_normal((VERTS, 3)),
        "shapedirs": 0.001 * rng.standard_normal((VERTS, 3, 400)),
        "posedirs": 0.001 * rng.standard_normal((VERTS, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": rng.dirichlet(np.ones(JOINTS), size=VERTS),
        "f": rng.integers(0, VERTS, (FACES, 3)).astype(np.uint32),
    }
    embedding = {
        "full_lmk_faces_idx": rng.integers(0, FACES, (1, 68)),
        "full_lmk_bary_coords": rng.dirichlet(np.ones(3), (1, 68)),
    }
    return FlameModel.from_mappings(model, embedding)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/flame.json"))
    args = parser.parse_args()
    layer = FlameLayer(random_model())
    rng = np.random.default_rng(1)
    shape = rng.standard_normal((args.frames, 100)).astype(np.float32)
    exp = rng.standard_normal((args.frames, 50)).astype(np.float32)
    pose = (0.2 * rng.standard_normal((args.frames, 6))).astype(np.float32)
    rows = []
    for batch in (1, 16, 64, 256):
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            layer.forward_numpy(shape, exp, pose, batch_size=batch)
            times.append(time.perf_counter() - started)
        rows.append({"batch": batch, "frames_per_s": round(args.frames / min(times), 1)})
        print(json.dumps(rows[-1]))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}",
        "frames": args.frames,
        "flame": rows,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
