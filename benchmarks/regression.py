"""Regression benchmark: the whole pipeline at two git commits, on the same clips.

Each side is a ``git worktree`` of its revision (in a temporary folder, removed at the end;
the repository's own working tree is never touched). Both sides run with the same
interpreter (this repository's ``.venv/bin/python``) and ``PYTHONPATH`` set to their
worktree, with the worktree as the current folder, so ``import dpl_assets`` resolves to
that revision's code (checked once per side and recorded). Each run is a whole process:

    python -m dpl_assets.cli run --graph <worktree>/dpl_assets/configs/default.json \
        --inputs <clips>/inputs.json --output_dir <fresh folder>

Scenarios, alternated base/head/base/head..., ``--repeats`` times:

- ``fresh``: a new output folder, every video processed;
- ``rerun``: the same command again on that folder right after; nothing is new, so it
  must stay as fast (registration, catalog, report only).

Measured per process: wall time, CPU (user + sys of the child and the children it waited
for, from ``os.wait4``) and peak RSS (``ru_maxrss`` from ``os.wait4``: the largest of the
child and its waited-for children). Per-step wall times come from the Dagster event log
of each fresh run (``STEP_START`` -> ``STEP_SUCCESS``, summed over runs by step key).

Before timing, one untimed fresh run per side (it also compiles the worktree's bytecode)
provides the outputs that are compared: the same files per datatype folder, identical
``.npy`` arrays, wav samples, HDF5 datasets and attributes, JSON (output folder paths
normalised), and bytes for everything else. Dagster's own folder, staging, claims,
bookkeeping indexes (``_index``), the catalog database and lock files are not compared.
A benchmark of different work would be meaningless, so any difference is printed and
recorded.

Sample clips are made once, offline, by ``dpl_assets.samples.make_clip`` of the head
worktree: a real face photo drifting, with espeak-ng speech (a different sentence per
clip so no two files are the same).

    .venv/bin/python benchmarks/regression.py --clips 4 --seconds 4 --repeats 3

Writes ``benchmarks/results/regression.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
RESULTS = Path(__file__).resolve().parent / "results" / "regression.json"
# The parent of c980b4a ("A node is one declaration ..."), the first refactoring commit.
DEFAULT_BASE = "c980b4a^"
GRAPH = Path("dpl_assets") / "configs" / "default.json"
SIDES = ("base", "head")
# Infrastructure that differs by run id, pid or time: not part of the outputs. `_index`
# holds bookkeeping (pending videos, temp sweeps, the report's cache: clocks and inode
# numbers); the catalog database (and its WAL) is the registry, which report.json shows.
NOT_OUTPUTS = {".dagster", "_staging", "_claims", "_index", "catalog.sqlite"}
NOT_OUTPUT_SUFFIXES = (".lock", "-shm", "-wal")
ENV_DROPPED = ("DPL_NODES", "DAGSTER_HOME")
# JSON fields that record when, not what: "<file>:<field>" patterns, ignored (and counted).
VOLATILE = (
    re.compile(r"^_checks/.+\.json:/time$"),  # when the output check ran
    re.compile(r"^dataset_pack/.+/index\.json:/videos/[^/]+/source\[1\]$"),  # packed file mtime
)
OUT_MARK = "<output_dir>"

MAKE_CLIPS = """
import json, sys
from pathlib import Path
from dpl_assets.samples import SPEECH, make_clip
folder, count, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
for index in range(count):
    text = f"{SPEECH[index % len(SPEECH)]} This is clip number {index + 1}."
    make_clip(folder / "videos" / f"clip_{index:02d}.mp4", text, seconds=seconds)
(folder / "inputs.json").write_text(json.dumps({"video": "videos"}), encoding="utf-8")
"""
WHICH_PACKAGE = "import dpl_assets; print(dpl_assets.__file__)"


# --------------------------------------------------------------------------------------
# git (read-only use: rev-parse, log, worktree add/remove)
# --------------------------------------------------------------------------------------


def git(*args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


@dataclass
class Side:
    name: str
    rev: str
    sha: str
    subject: str
    worktree: Path
    package_file: str = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
        env["PYTHONPATH"] = str(self.worktree)
        return env


def resolve(name: str, rev: str, folder: Path) -> Side:
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    subject = git("log", "-1", "--format=%s", sha)
    return Side(name, rev, sha, subject[:100], folder / name)


# --------------------------------------------------------------------------------------
# Whole-process runs
# --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    side: str
    scenario: str
    repeat: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    steps_s: dict[str, float] = field(default_factory=dict)


def run_process(side: Side, argv: list[str], log: Path) -> tuple[float, float, float]:
    """Run ``argv`` as ``side``; return (wall s, user+sys CPU s, peak RSS MB) of the child."""
    with log.open("ab") as out:
        out.write(f"\n$ {argv}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=side.env(), cwd=side.worktree
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{side.name}: {argv[2:4]} exited {proc.returncode}:\n{tail}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def dpl_run(side: Side, inputs: Path, output_dir: Path) -> list[str]:
    return [
        str(PYTHON), "-m", "dpl_assets.cli", "run",
        "--graph", str(side.worktree / GRAPH),
        "--inputs", str(inputs),
        "--output_dir", str(output_dir),
    ]  # fmt: skip


def step_times(output_dir: Path) -> dict[str, float]:
    """Seconds per Dagster step key, summed over the runs in this output folder."""
    totals: dict[str, float] = {}
    runs = output_dir / ".dagster" / "history" / "runs"
    for db in sorted(runs.glob("*-*.db")):
        connection = sqlite3.connect(db)
        try:
            rows = connection.execute(
                "SELECT step_key, dagster_event_type, timestamp FROM event_logs "
                "WHERE dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE') "
                "ORDER BY id"
            ).fetchall()
        finally:
            connection.close()
        started: dict[str, datetime] = {}
        for step, kind, stamp in rows:
            moment = datetime.fromisoformat(str(stamp))
            if kind == "STEP_START":
                started[step] = moment
            elif step in started:
                seconds = (moment - started.pop(step)).total_seconds()
                totals[step] = totals.get(step, 0.0) + seconds
    return totals


# --------------------------------------------------------------------------------------
# Output equivalence
# --------------------------------------------------------------------------------------


def output_files(root: Path) -> set[str]:
    files = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if (
            path.is_file()
            and rel.parts[0] not in NOT_OUTPUTS
            and not path.name.endswith(NOT_OUTPUT_SUFFIXES)
        ):
            files.add(rel.as_posix())
    return files


def normalised(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace(root, OUT_MARK)
    if isinstance(value, bytes):
        return value.replace(root.encode(), OUT_MARK.encode())
    if isinstance(value, dict):
        return {k: normalised(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalised(v, root) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return [normalised(v, root) for v in value.tolist()]
    return value


def json_differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                found.append(f"{where}/{key}: only in {'head' if key in b else 'base'}")
            else:
                found += json_differences(a[key], b[key], f"{where}/{key}")
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        found = []
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            found += json_differences(x, y, f"{where}[{index}]")
        return found
    return [] if a == b else [f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}"]


def same_values(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind == "O":
            return all(same_values(x, y) for x, y in zip(a.ravel(), b.ravel(), strict=True))
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return bool(a == b)


def h5_differences(a_path: Path, b_path: Path, roots: tuple[str, str]) -> list[str]:
    def items(path: Path, root: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with h5py.File(path, "r") as f:

            def visit(name: str, obj: Any) -> None:
                for key, value in obj.attrs.items():
                    found[f"{name}@{key}"] = normalised(value, root)
                if isinstance(obj, h5py.Dataset):
                    found[name] = obj[()]

            visit("/", f)
            f.visititems(visit)
        return found

    a, b = items(a_path, roots[0]), items(b_path, roots[1])
    found = [f"{key}: only in {'head' if key in b else 'base'}" for key in sorted(set(a) ^ set(b))]
    found += [
        f"{key}: values differ"
        for key in sorted(set(a) & set(b))
        if not same_values(a[key], b[key])
    ]
    return found


def file_differences(rel: str, base_root: Path, head_root: Path) -> list[str]:
    a, b = base_root / rel, head_root / rel
    roots = (str(base_root), str(head_root))
    suffix = a.suffix.lower()
    if suffix == ".npy":
        x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
        if x.shape != y.shape or x.dtype != y.dtype:
            return [f"{x.dtype}{x.shape} != {y.dtype}{y.shape}"]
        if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            diff = np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)))
            return [f"arrays differ (max abs difference {diff:.3g})"]
        return []
    if suffix == ".wav":
        info_x, info_y = soundfile.info(str(a)), soundfile.info(str(b))
        x, y = soundfile.read(a, dtype="int32")[0], soundfile.read(b, dtype="int32")[0]
        if (info_x.samplerate, info_x.subtype) != (info_y.samplerate, info_y.subtype):
            return [
                f"wav format differs ({info_x.samplerate} Hz {info_x.subtype} vs "
                f"{info_y.samplerate} Hz {info_y.subtype})"
            ]
        if not np.array_equal(x, y):
            return [f"wav samples differ ({x.shape} vs {y.shape})"]
        return []
    if suffix in (".h5", ".hdf5"):
        return h5_differences(a, b, roots)
    if suffix == ".json":
        x = normalised(json.loads(a.read_text(encoding="utf-8")), roots[0])
        y = normalised(json.loads(b.read_text(encoding="utf-8")), roots[1])
        return json_differences(x, y)
    if a.read_bytes() != b.read_bytes():
        return [f"bytes differ ({a.stat().st_size} vs {b.stat().st_size} bytes)"]
    return []


def compare_outputs(base_root: Path, head_root: Path) -> dict[str, Any]:
    base_files, head_files = output_files(base_root), output_files(head_root)
    differences = [f"{rel}: only in base" for rel in sorted(base_files - head_files)]
    differences += [f"{rel}: only in head" for rel in sorted(head_files - base_files)]
    common = sorted(base_files & head_files)
    ignored = []
    for rel in common:
        try:
            found = file_differences(rel, base_root, head_root)
        except Exception as error:  # an unreadable output is a difference, not a crash
            found = [f"could not compare: {error}"]
        for line in found:
            field_ = f"{rel}:{line.split(': ', 1)[0]}"
            if any(pattern.match(field_) for pattern in VOLATILE):
                ignored.append(field_)
            else:
                differences.append(f"{rel}: {line}")
    return {
        "matched": not differences,
        "files_compared": len(common),
        "volatile_fields_ignored": len(ignored),
        "differences": differences,
    }


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------

METRICS = (("wall_s", "wall s"), ("cpu_s", "CPU s"), ("maxrss_mb", "peak RSS MB"))


def summarise(measurements: list[Measurement]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for scenario in ("fresh", "rerun"):
        rows: dict[str, Any] = {}
        for metric, _ in METRICS:
            values = {
                side: [
                    getattr(m, metric)
                    for m in measurements
                    if m.side == side and m.scenario == scenario
                ]
                for side in SIDES
            }
            medians = {side: statistics.median(values[side]) for side in SIDES}
            rows[metric] = {
                "base": values["base"],
                "head": values["head"],
                "base_median": round(medians["base"], 3),
                "head_median": round(medians["head"], 3),
                "head_over_base": round(medians["head"] / medians["base"], 3),
            }
        summary[scenario] = rows
    steps: dict[str, dict[str, float]] = {}
    for side in SIDES:
        runs = [m.steps_s for m in measurements if m.side == side and m.scenario == "fresh"]
        for key in sorted({k for run in runs for k in run}):
            steps.setdefault(key, {})[side] = round(
                statistics.median(run.get(key, 0.0) for run in runs), 3
            )
    summary["fresh_steps_s"] = steps
    return summary


def markdown(summary: dict[str, Any], sides: dict[str, Side], clips: int, seconds: float) -> str:
    lines = [
        f"base `{sides['base'].sha[:7]}`, head `{sides['head'].sha[:7]}`; "
        f"{clips} clips of {seconds:g} s; medians",
        "",
        "| scenario | metric | base | head | head/base |",
        "|---|---|---|---|---|",
    ]
    for scenario in ("fresh", "rerun"):
        for metric, label in METRICS:
            row = summary[scenario][metric]
            lines.append(
                f"| {scenario} | {label} | {row['base_median']:.2f} | {row['head_median']:.2f} "
                f"| {row['head_over_base']:.2f} |"
            )
    steps = summary["fresh_steps_s"]
    if steps:
        lines += [
            "",
            "| fresh run, step (s, median) | base | head | head/base |",
            "|---|---|---|---|",
        ]
        ordered = sorted(steps.items(), key=lambda item: -max(item[1].values()))
        for key, times in ordered:
            b, h = times.get("base", 0.0), times.get("head", 0.0)
            ratio = f"{h / b:.2f}" if b > 0 else "-"
            lines.append(f"| {key} | {b:.2f} | {h:.2f} | {ratio} |")
        total = {side: sum(t.get(side, 0.0) for t in steps.values()) for side in SIDES}
        walls = {side: summary["fresh"]["wall_s"][f"{side}_median"] for side in SIDES}
        lines.append(
            f"| all steps | {total['base']:.2f} | {total['head']:.2f} "
            f"| {total['head'] / total['base']:.2f} |"
            if total["base"] > 0
            else "| all steps | - | - | - |"
        )
        lines.append(
            f"| outside steps (wall - steps) | {walls['base'] - total['base']:.2f} "
            f"| {walls['head'] - total['head']:.2f} | |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def prepare(sides: dict[str, Side], scratch: Path, clips: int, seconds: float) -> Path:
    for side in sides.values():
        git("worktree", "add", "--detach", str(side.worktree), side.sha)
    for side in sides.values():
        completed = subprocess.run(
            [str(PYTHON), "-c", WHICH_PACKAGE],
            capture_output=True,
            text=True,
            env=side.env(),
            cwd=side.worktree,
            check=True,
        )
        side.package_file = completed.stdout.strip()
        print(f"{side.name} {side.sha[:7]} ({side.subject[:60]}): dpl_assets = {side.package_file}")
        if not Path(side.package_file).resolve().is_relative_to(side.worktree.resolve()):
            raise RuntimeError(f"{side.name} imports dpl_assets from outside its worktree")
    media = scratch / "clips"
    head = sides["head"]
    subprocess.run(
        [str(PYTHON), "-c", MAKE_CLIPS, str(media), str(clips), str(seconds)],
        env=head.env(),
        cwd=head.worktree,
        check=True,
    )
    return media / "inputs.json"


def remove_worktrees(sides: dict[str, Side]) -> None:
    for side in sides.values():
        if side.worktree.exists():
            try:
                git("worktree", "remove", "--force", str(side.worktree))
            except RuntimeError as error:
                print(f"warning: {error}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help="base revision (%(default)s)")
    parser.add_argument("--head", default="HEAD", help="head revision (%(default)s)")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="dpl-regression-"))
    sides = {
        name: resolve(name, rev, scratch)
        for name, rev in zip(SIDES, (args.base, args.head), strict=True)
    }
    load_before = os.getloadavg()
    measurements: list[Measurement] = []
    try:
        inputs = prepare(sides, scratch, args.clips, args.seconds)
        log = scratch / "runs.log"

        # Untimed warm-up per side (bytecode, page cache); its outputs are compared.
        for side in sides.values():
            run_process(side, dpl_run(side, inputs, scratch / f"warmup_{side.name}"), log)
        equivalence = compare_outputs(scratch / "warmup_base", scratch / "warmup_head")
        print(
            f"outputs: {equivalence['files_compared']} files compared, "
            + ("all equivalent" if equivalence["matched"] else "DIFFERENCES:")
        )
        for line in equivalence["differences"]:
            print(f"  {line}")

        for repeat in range(args.repeats):
            for side in sides.values():
                output_dir = scratch / f"run{repeat}_{side.name}"
                for scenario in ("fresh", "rerun"):
                    wall, cpu, rss = run_process(side, dpl_run(side, inputs, output_dir), log)
                    steps = step_times(output_dir) if scenario == "fresh" else {}
                    measurements.append(
                        Measurement(side.name, scenario, repeat, wall, cpu, rss, steps)
                    )
                    print(
                        f"  {repeat} {side.name:4} {scenario:5} wall {wall:6.2f} s "
                        f"cpu {cpu:6.2f} s rss {rss:6.0f} MB"
                    )
                shutil.rmtree(output_dir, ignore_errors=True)
    finally:
        remove_worktrees(sides)
        shutil.rmtree(scratch, ignore_errors=True)

    summary = summarise(measurements)
    report = {
        "benchmark": "regression",
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "sides": {
            name: {k: str(v) for k, v in asdict(side).items() if k != "worktree"}
            for name, side in sides.items()
        },
        "clips": args.clips,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "order": "per repeat: base fresh, base rerun, head fresh, head rerun",
        "equivalence": equivalence,
        "summary": summary,
        "measurements": [asdict(m) for m in measurements],
        "benchmark_wall_s": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print()
    print(markdown(summary, sides, args.clips, args.seconds))
    print(f"\nwrote {args.output} ({report['benchmark_wall_s']} s)")
    return 0 if equivalence["matched"] else 1


if __name__ == "__main__":
    sys.exit(main())
