"""Benchmark: frames per second of the EMOCA encoders (coarse + expression) on this CPU.

The encoders are built with random weights: the arithmetic is that of the official
checkpoints (two ResNet-50 regressors on 224x224 crops), no weights exist here. For each
batch size, in one run:

- ``encode``: :meth:`EmocaEncoder.encode` (input checks, batching, ``no_grad``, split into
  parameter groups, numpy output), EMOCA = coarse ``E_flame`` + ``E_expression``;
- ``bare forward``: the two ``ResnetRegressor`` modules called directly under
  ``torch.inference_mode`` on a ready batch (the floor the API can reach);
- ``DECA encode``: ``encode`` with the coarse encoder only (DECA's ``deca_model.tar``).

Each run is timed ``--repeats`` times over ``--frames`` frames after one warm-up pass, in
interleaved rounds; best and median frames/s are reported, and the load average, because
this machine is shared.

    .venv/bin/python benchmarks/emoca.py --frames 16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dpl_assets.face3d.emoca import EMOCA_INPUT_SIZE, EmocaEncoder

BATCH_SIZES = (1, 4, 8)


def measure(
    runs: dict[tuple[str, int], Callable[[], object]], frames: int, repeats: int
) -> dict[tuple[str, int], list[float]]:
    """Frames/s of each run, ``repeats`` times, in rounds that visit every run once.

    Interleaving spreads the other load of this shared machine over all runs alike,
    instead of penalising whichever run happened to coincide with it. One warm-up call each.
    """
    for run in runs.values():
        run()
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            rates[key].append(frames / (time.perf_counter() - start))
    return rates


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/emoca.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    emoca = EmocaEncoder().eval()
    deca = EmocaEncoder(expression_outputs=None).eval()
    images = torch.rand(args.frames, 3, EMOCA_INPUT_SIZE, EMOCA_INPUT_SIZE)
    assert emoca.E_expression is not None

    def bare(batch_size: int) -> None:
        with torch.inference_mode():
            for start in range(0, args.frames, batch_size):
                chunk = images[start : start + batch_size]
                emoca.E_flame(chunk)
                emoca.E_expression(chunk)  # type: ignore[misc]

    runs: dict[tuple[str, int], Callable[[], object]] = {}
    for batch_size in BATCH_SIZES:
        runs["encode", batch_size] = lambda b=batch_size: emoca.encode(images, batch_size=b)
        runs["bare_forward", batch_size] = lambda b=batch_size: bare(b)
        runs["deca_encode", batch_size] = lambda b=batch_size: deca.encode(images, batch_size=b)

    load_before = os.getloadavg()
    rates = measure(runs, args.frames, args.repeats)
    rows = []
    for batch_size in BATCH_SIZES:
        row: dict[str, float] = {"batch_size": batch_size}
        for name in ("encode", "bare_forward", "deca_encode"):
            values = rates[name, batch_size]
            row[f"{name}_fps_best"] = round(max(values), 2)
            row[f"{name}_fps_median"] = round(statistics.median(values), 2)
        print(json.dumps(row), flush=True)
        rows.append(row)

    report = {
        "what": "EMOCA encoders (E_flame + E_expression, ResNet-50 x2) on 224x224, random weights",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "frames_per_pass": args.frames,
        "repeats": args.repeats,
        "statistic": "frames/s, best and median of the repeats (interleaved rounds)",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "results": rows,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
