"""Benchmark: renders per second of the pure-torch rasterizer for a FLAME-sized head.

A FLAME-sized mesh (5023 vertices, 9976 faces, open at the neck like FLAME) is built as
an ellipsoid head closed at the crown; it is turned a little, projected with a typical
EMOCA camera (scale 9) and rendered with :func:`dpl_assets.face3d.render.render` (normal,
UV and mask images) at several image sizes, with 1 torch thread and with torch's default.
Per size and thread count (frames per second, from the median call time):

- ``render_b1``: full renders, one frame per call;
- ``render_b8``: full renders, eight frames per call (the node's batch);
- ``rasterize_b8``: the rasterizer alone (fragments only), eight frames per call;

and per size ``pairs_per_frame`` ((face, pixel-centre) candidates the bounding boxes
enumerate) and ``coverage`` (the fraction of the image the head covers).

    .venv/bin/python benchmarks/render.py --seconds 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dpl_assets.face3d.camera import orthographic_project
from dpl_assets.face3d.obj import MeshTemplate
from dpl_assets.face3d.rasterizer import rasterize
from dpl_assets.face3d.render import render

SIZES = (128, 224, 256, 512)
CROWN_RING = 58  # vertices in the ring around the crown pole
RING = 68  # vertices in every other ring; the last one is the open neck
RINGS = 74  # 1 + 58 + 73 * 68 = 5023 vertices; 2 * 5022 - 68 = 9976 faces


def zip_rings(upper: np.ndarray, lower: np.ndarray) -> list[list[int]]:
    """Triangles joining two closed rings of vertex indices (len(upper) + len(lower) faces),
    advancing along whichever ring's next vertex comes first in azimuth."""
    a, b = len(upper), len(lower)
    faces, i, j = [], 0, 0
    while i < a or j < b:
        if j >= b or (i < a and (i + 1) / a <= (j + 1) / b):
            faces.append([upper[i % a], lower[j % b], upper[(i + 1) % a]])
            i += 1
        else:
            faces.append([upper[i % a], lower[j % b], lower[(j + 1) % b]])
            j += 1
    return faces


def flame_sized_head() -> MeshTemplate:
    """An ellipsoid head (model units ~ metres) with FLAME's vertex and face counts."""
    radii = np.array([0.075, 0.10, 0.09])  # half width, half height, half depth
    last_polar = 0.8 * math.pi  # open below the jaw, like FLAME's neck
    verts = [np.array([0.0, 1.0, 0.0])]
    uvs = [np.array([0.5, 1.0])]
    rings = []
    for ring_index in range(1, RINGS + 1):
        count = CROWN_RING if ring_index == 1 else RING
        polar = last_polar * ring_index / RINGS
        azimuth = 2 * math.pi * (np.arange(count) + 0.5 * (ring_index % 2)) / count
        start = len(verts)
        for angle in azimuth:
            verts.append(
                np.array(
                    [
                        math.sin(polar) * math.sin(angle),
                        math.cos(polar),
                        -math.sin(polar) * math.cos(angle),  # seam at the back
                    ]
                )
            )
            uvs.append(np.array([angle / (2 * math.pi), 1 - polar / last_polar]))
        rings.append(np.arange(start, start + count))
    crown = rings[0]
    faces = [[0, crown[k], crown[(k + 1) % len(crown)]] for k in range(len(crown))]
    for upper, lower in itertools.pairwise(rings):
        faces += zip_rings(upper, lower)
    vertices = np.asarray(verts) * radii
    face_array = np.asarray(faces, dtype=np.int64)
    # Orient every face outwards (normals away from the centre), as FLAME's are.
    corners = vertices[face_array]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    inward = (normals * corners.mean(axis=1)).sum(axis=1) < 0
    face_array[inward] = face_array[inward][:, ::-1]
    assert vertices.shape == (5023, 3) and face_array.shape == (9976, 3)
    return MeshTemplate(
        vertices.astype(np.float32), face_array, np.asarray(uvs, np.float32), face_array.copy()
    )


def posed_batch(template: MeshTemplate, batch: int) -> tuple[torch.Tensor, ...]:
    """``batch`` frames of the head turning a little, with an EMOCA-like camera and light."""
    verts, cams, lights = [], [], []
    for frame in range(batch):
        yaw = math.radians(-15 + 30 * frame / max(batch - 1, 1))
        rotation = np.array(
            [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]
        )
        verts.append(template.vertices @ rotation.T.astype(np.float32))
        cams.append([9.0, 0.0, 0.01])
        light = np.zeros((9, 3), np.float32)
        light[0], light[2], light[3] = 3.5, 0.3, 0.6  # ambient, from above, from the front
        lights.append(light)
    return (
        torch.tensor(np.stack(verts)),
        torch.tensor(cams, dtype=torch.float32),
        torch.tensor(np.stack(lights)),
    )


def frames_per_second(fn, frames_per_call: int, seconds: float) -> float:
    """Frames per second of ``fn`` from the median call time (robust to a busy machine),
    after one warm-up call, over at least ``seconds`` and 3 calls."""
    fn()
    durations: list[float] = []
    while sum(durations) < seconds or len(durations) < 3:
        started = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - started)
    return round(frames_per_call / statistics.median(durations), 1)


def pairs_per_frame(projected: torch.Tensor, faces: np.ndarray, size: int) -> int:
    """(face, pixel-centre) pairs the bounding boxes enumerate, for the first frame."""
    corners = projected[0][torch.as_tensor(faces)]  # (F, 3, 3) in NDC
    pixels_x = (corners[..., 0] + 1) * size / 2
    pixels_y = (1 - corners[..., 1]) * size / 2
    columns = torch.floor(pixels_x.amax(1) - 0.5) - torch.ceil(pixels_x.amin(1) - 0.5) + 1
    rows = torch.floor(pixels_y.amax(1) - 0.5) - torch.ceil(pixels_y.amin(1) - 0.5) + 1
    return int((columns.clamp(min=0) * rows.clamp(min=0)).sum())


def measure(template: MeshTemplate, seconds: float) -> dict[str, dict[str, float]]:
    """Renders per second at each image size with the current torch thread count."""
    one = posed_batch(template, 1)
    eight = posed_batch(template, 8)
    projected = orthographic_project(eight[0], eight[1])
    results = {}
    for size in SIZES:
        results[str(size)] = {
            "render_b1": frames_per_second(
                lambda size=size: render(*one, template, size, backend="torch"), 1, seconds
            ),
            "render_b8": frames_per_second(
                lambda size=size: render(*eight, template, size, backend="torch"), 8, seconds
            ),
            "rasterize_b8": frames_per_second(
                lambda size=size: rasterize(projected, template.faces, size, backend="torch"),
                8,
                seconds,
            ),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    parser.add_argument(
        "--threads", default=f"1,{torch.get_num_threads()}", help="torch thread counts to try"
    )
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/render.json"))
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    template = flame_sized_head()
    frames = posed_batch(template, 1)
    projected = orthographic_project(frames[0], frames[1])
    mesh_stats = {
        str(size): {
            "pairs_per_frame": pairs_per_frame(projected, template.faces, size),
            "coverage": round(
                float(rasterize(projected, template.faces, size).mask.float().mean()), 3
            ),
        }
        for size in SIZES
    }
    thread_counts = sorted({int(count) for count in args.threads.split(",")})
    fps = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        fps[str(threads)] = measure(template, args.seconds)
    report = {
        "mesh": {"vertices": len(template.vertices), "faces": len(template.faces)},
        "backend": "torch",
        "device": "cpu",
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "seconds_per_measurement": args.seconds,
        # The machine may be shared: the 1-minute load average before and after the run.
        "load_average": [load_before, round(os.getloadavg()[0], 2)],
        "per_image_size": mesh_stats,
        "fps_by_threads_and_image_size": fps,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")

    header = ["size", "pairs/frame", "cover"]
    for threads in thread_counts:
        header += [f"render b1 ({threads}t)", f"render b8 ({threads}t)", f"raster b8 ({threads}t)"]
    print(" | ".join(header))
    print(" | ".join("-" * len(name) for name in header))
    for size in SIZES:
        row = [str(size), str(mesh_stats[str(size)]["pairs_per_frame"]),
               str(mesh_stats[str(size)]["coverage"])]  # fmt: skip
        for threads in thread_counts:
            cell = fps[str(threads)][str(size)]
            row += [str(cell["render_b1"]), str(cell["render_b8"]), str(cell["rasterize_b8"])]
        print(" | ".join(row))
    print(f"frames per second; torch {torch.__version__}, CPU, load {report['load_average']}")


if __name__ == "__main__":
    main()
