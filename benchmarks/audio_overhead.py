"""Benchmark: Dagster overhead per video on the audio branch, and wav2vec throughput.

Runs, in one process and one sitting, the same work two ways on the same clips:
- direct: the node functions (probe_media, extract_wav, volume_envelope,
  Wav2vecExtractor.extract_many) called in a loop, outputs written with json/numpy/soundfile;
- dagster: ``dpl run``'s path (run_plan -> one in-process Dagster run over all partitions,
  IO manager, status records, report).
The model is loaded once before timing (both ways reuse it), so the difference is the
orchestration. The model is wav2vec2-base's architecture with random weights (no hub
here): the same arithmetic as the real checkpoint. Each way runs ``--repeats`` times,
alternating, and the best time of each counts (the machine is shared and noisy).

    .venv/bin/python benchmarks/audio_overhead.py --clips 8 --seconds 8
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from dpl_assets.discovery import parse_inputs
from dpl_assets.graph import plan_graph
from dpl_assets.media.probe import probe_media
from dpl_assets.nodes.audio import extract_wav, volume_envelope
from dpl_assets.resources import cached_wav2vec
from dpl_assets.runner import run_plan
from dpl_assets.samples import SPEECH, make_clip


def base_sized_checkpoint(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

    torch.manual_seed(0)
    Wav2Vec2ForPreTraining(Wav2Vec2Config()).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


def run_direct(clips: list[Path], checkpoint: str, features: str, out: Path) -> float:
    started = time.perf_counter()
    extractor = cached_wav2vec(checkpoint, features, "cpu")
    audios = {}
    for clip in clips:
        record = probe_media(clip).to_json()
        (out / f"{clip.stem}.json").write_text(json.dumps(record))
        audio = extract_wav(clip)
        soundfile.write(out / f"{clip.stem}.wav", audio, 16_000, subtype="PCM_16")
        np.save(out / f"{clip.stem}.volume.npy", volume_envelope(audio))
        audios[clip.stem] = audio
    for name, feats in extractor.extract_many(audios).items():
        np.save(out / f"{name}.wav2vec.npy", feats)
    return time.perf_counter() - started


def run_dagster(media: Path, checkpoint: str, features: str, out: Path) -> float:
    import dagster as dg

    plan = plan_graph(
        [
            {"name": "VideoToWavNode", "params": {"num_jobs": 1}},
            {
                "name": "Wav2vecNode",
                "params": {
                    "checkpoint": checkpoint,
                    "features": features,
                    "device": "cpu",
                    "num_workers": 1,
                },
            },
        ]
    )
    home = out / ".dagster"  # a persistent SQLite instance, as `dpl run` uses
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    started = time.perf_counter()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        outcome = run_plan(
            plan, parse_inputs({"video": str(media)}), out, instance, progress=lambda _: None
        )
    elapsed = time.perf_counter() - started
    assert all(r.status == "processed" for r in outcome.reports), outcome.reports
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--report", type=Path, default=Path("benchmarks/results/audio_overhead.json")
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        media = scratch / "media"
        clips = [
            make_clip(media / f"clip{i:02d}.mp4", SPEECH[i % len(SPEECH)], args.seconds)
            for i in range(args.clips)
        ]
        checkpoint = str(base_sized_checkpoint(scratch / "w2v-base"))
        audio_seconds = args.clips * args.seconds
        results: dict[str, dict[str, float]] = {}
        for features in ("quantized", "hidden:-1"):
            cached_wav2vec(checkpoint, features, "cpu")  # load outside the timings
            direct, dagster = [], []
            for repeat in range(args.repeats):
                out = scratch / f"direct-{features}-{repeat}"
                out.mkdir()
                direct.append(run_direct(clips, checkpoint, features, out))
                dagster.append(
                    run_dagster(
                        media, checkpoint, features, scratch / f"dagster-{features}-{repeat}"
                    )
                )
            best_direct, best_dagster = min(direct), min(dagster)
            results[features] = {
                "direct_s": round(best_direct, 3),
                "dagster_s": round(best_dagster, 3),
                "direct_all_s": [round(t, 3) for t in direct],
                "dagster_all_s": [round(t, 3) for t in dagster],
                "overhead_pct": round(100 * (best_dagster - best_direct) / best_direct, 1),
                "overhead_per_video_s": round((best_dagster - best_direct) / args.clips, 3),
                "audio_s_per_s_direct": round(audio_seconds / best_direct, 2),
            }
            print(features, results[features], flush=True)

        # wav2vec alone (no decode), both feature kinds: seconds of audio per second.
        audios = {c.stem: extract_wav(c) for c in clips}
        throughput = {}
        for features in ("quantized", "hidden:-1"):
            extractor = cached_wav2vec(checkpoint, features, "cpu")
            started = time.perf_counter()
            extractor.extract_many(audios)
            throughput[features] = round(audio_seconds / (time.perf_counter() - started), 2)
        print("wav2vec audio seconds per second:", throughput)

    report = {
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "repeats": args.repeats,
        "machine": {
            "cpus": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "pipeline": results,
        "wav2vec_audio_seconds_per_second": throughput,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
