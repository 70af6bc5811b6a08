"""Throughput plumbing: ``dpl run --workers``, the per-process thread budget, ranges split
for parallel runs, and frames decoded again from the video instead of the stored JPEGs."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, cast

import dagster as dg
import h5py
import numpy as np
import pytest

from dpl_assets import cli, interrupts, run_pool, threads
from dpl_assets.discovery import parse_inputs
from dpl_assets.graph import plan_graph
from dpl_assets.media.frames import (
    DECODE_RECIPE_ATTR,
    DecodeRecipe,
    decode_frames,
    resample_frames,
)
from dpl_assets.nodes.frames import extract_frames
from dpl_assets.registration import pending_ranges
from dpl_assets.run_pool import RangeRun, RunNotStarted, _run_in_worker
from dpl_assets.runner import start_worker_pool
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets.storage.store import ArtifactStore
from dpl_assets.storage.video_io import Reads, StackMismatch, VideoIO
from dpl_assets.worker_pool import WorkerPool, WorkerSetup, configure_worker, start_pool
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.dpl_runs import assert_same_outputs, run_graph
from dpl_assets_tests.fresh_python import REPO, script_output
from dpl_assets_tests.test_vision_pipeline import moving_astronaut, write_clip

GRAPH = [
    {"name": "VideoToWavNode", "params": {}},
    {"name": "VideoToImagesNode", "params": {}},
    {"name": "FaceAlignmentNode", "params": {}},
    {"name": "FixedBboxesNode", "params": {}},
    {"name": "CropNode", "params": {"size_hw": [64, 64]}},
]


def run(tmp_path: Path, out: str, videos: Path, *extra: str) -> dict:
    return run_graph(tmp_path, GRAPH, videos, out, *extra)


@pytest.fixture(scope="module")
def face_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    for index in range(3):
        write_clip(root / f"face_{index}.mp4", moving_astronaut(12 + 4 * index))
    media.make_video_only(root / "no_face.mp4", seconds=0.6)  # rejected: no face
    return root


def test_workers_give_the_same_outputs_as_one_process(tmp_path, face_videos, monkeypatch):
    alone = run(tmp_path, "alone", face_videos, "--workers", "1")
    exit_codes: list = []
    close = WorkerPool.close

    def close_and_record(pool: WorkerPool) -> None:
        close(pool)
        exit_codes.extend(process.exitcode for process in pool._processes)

    monkeypatch.setattr(WorkerPool, "close", close_and_record)
    spread = run(tmp_path, "spread", face_videos, "--workers", "2")
    assert set(exit_codes) == {0}  # the worker ran its range and ended cleanly (fast exit)

    assert {k: v["status"] for k, v in spread.items()} == {k: v["status"] for k, v in alone.items()}
    assert spread["no_face"]["status"] == "rejected" and "no face" in spread["no_face"]["reason"]
    for video_id, entry in alone.items():
        assert_same_outputs(entry, spread[video_id])
    # Two runs of two videos each: one in this (the dpl) process, one in a spawned worker.
    instance = dg.DagsterInstance.from_config(str(tmp_path / "spread" / INSTANCE_SUBDIR))
    runs = instance.get_runs()
    assert len(runs) == 2
    pids = {
        record.dagster_event.pid
        for run_ in runs
        for record in instance.all_logs(run_.run_id)
        if record.dagster_event is not None and record.dagster_event.pid is not None
    }
    assert len(pids) == 2 and os.getpid() in pids


def test_a_rerun_with_workers_and_nothing_new_starts_no_run(tmp_path, face_videos):
    run(tmp_path, "out", face_videos, "--workers", "2")
    instance_dir = str(tmp_path / "out" / INSTANCE_SUBDIR)
    before = len(dg.DagsterInstance.from_config(instance_dir).get_runs())
    run(tmp_path, "out", face_videos, "--workers", "2")
    assert len(dg.DagsterInstance.from_config(instance_dir).get_runs()) == before
    # The worker started before registration found nothing pending was stopped, not left.
    assert multiprocessing.active_children() == []


def _pid_after(seconds: float) -> int:
    """In a worker: its pid, after ``seconds``."""
    time.sleep(seconds)
    return os.getpid()


def _first_run(configuration: tuple[int, tuple[str, ...]]) -> tuple[int, tuple]:
    """In a worker, as a run starts: the configuration applied, then (after 2 s, so that
    two such tasks at once run in two workers) its pid, whether the preload is imported
    and its thread budget."""
    configure_worker(*configuration)
    time.sleep(2.0)
    return os.getpid(), (_loaded(list(configuration[1])), os.environ.get(threads.THREADS_ENV))


def _loaded(modules: list[str]) -> dict[str, bool]:
    """In a worker: which of ``modules`` are imported (before this task imports any)."""
    return {module: module in sys.modules for module in modules}


def test_a_worker_interrupted_while_it_starts_starts_no_run(tmp_path, monkeypatch):
    """Ctrl-C reached dpl while its worker was still importing (its interrupt signal is
    ignored then, and a worker between runs has no run to stop): the run given to it
    before is not started (it ran to its end before)."""
    (tmp_path / "slow_preload.py").write_text("import time\ntime.sleep(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get this sys.path
    pool = WorkerPool(1)
    try:
        pool.configure(thread_budget=1, preload=["slow_preload"])
        setup = WorkerSetup("setup", _no_definitions, None, pool.configuration)
        future = pool.executor.submit(_run_in_worker, setup, RangeRun("job", [], "v1"), {})
        time.sleep(0.3)
        pool.interrupt()
        with pytest.raises(RunNotStarted, match="v1"):
            future.result(timeout=300)
        pool.used = True  # it was given a run: close waits for it, as dpl's does
    finally:
        pool.close()
    assert multiprocessing.active_children() == []


def test_a_run_a_worker_did_not_start_goes_back_to_the_queue():
    ended: list = []
    queue = run_pool._RunQueue([], ended.append, {})
    run = RangeRun("job", [], "v1")
    future: Future = Future()
    future.set_exception(RunNotStarted("v1"))
    queue._in_pool = 1
    queue._pool_run_ended(future, run, cast(Any, None))  # no next run is fed for it
    assert list(queue.todo) == [run] and queue.errors == [] and ended == []
    assert queue._in_pool == 0


def test_every_step_of_a_worker_stops_once_its_pool_was_interrupted(monkeypatch):
    event = multiprocessing.get_context("spawn").Event()
    monkeypatch.setattr(interrupts, "_stop_event", None)
    interrupts.stop_every_run_on(event)
    assert not interrupts.run_stopped("any run")
    event.set()  # dpl's interrupt, whether or not its signal reached this process
    assert interrupts.run_stopped("any run") and interrupts.run_stopped("another")
    step = interrupts.step_stops_on_interrupt("a run started after it")
    with pytest.raises(dg.Failure, match="interrupted"), step:
        raise AssertionError("the step's work must not start")
    interrupts.clear()
    assert interrupts.run_stopped("any run")  # for the worker's life


def _no_definitions() -> None:
    raise AssertionError("a run that must not start built its definitions")


def test_pool_workers_preload_their_modules_and_unused_ones_are_stopped():
    pool = WorkerPool(1)
    try:
        pool.configure(thread_budget=1, preload=["colorsys"])
        loaded = pool.executor.submit(_loaded, ["colorsys", "wave"]).result(timeout=300)
        assert loaded == {"colorsys": True, "wave": False}  # preloaded, and only that
        (worker,) = multiprocessing.active_children()
        assert worker.is_alive()
    finally:
        pool.close()  # never given a run: stopped
    assert not worker.is_alive() and worker.exitcode is not None
    assert multiprocessing.active_children() == []


START_WORKERS = """
import inspect, sys, time
from dpl_assets import cli
import dpl_assets
args = cli.build_parser().parse_args(sys.argv[1:])
pool = cli._start_workers(args)
# What this process had imported when it started them: not Dagster, not the nodes.
print("dagster" in sys.modules, "dpl_assets.graph" in sys.modules, pool and pool.count)
if pool is not None:  # never configured (as when the graph is invalid): stopped at once
    workers = pool._processes
    time.sleep(1)
    started = time.perf_counter()
    pool.close()
    print(all(not worker.is_alive() for worker in workers), time.perf_counter() - started < 10)
# The code location's definitions are found as Dagster finds them (inspect.getmembers).
members = inspect.getmembers(dpl_assets)
print([name for name, value in members if type(value).__name__ == "Definitions"])
"""


def test_dpl_run_starts_its_workers_before_it_imports_dagster_or_the_nodes():
    run_args = ["run", "--graph", "g.json", "--inputs", "i.json"]
    cores = threads.cores()
    lines = script_output(START_WORKERS, *run_args, "--workers", str(cores)).splitlines()
    if cores > 1:
        assert lines == ["False False " + str(cores - 1), "True True", "['defs']"]
    one = script_output(START_WORKERS, *run_args, "--workers", "1").splitlines()
    assert one == ["False False None", "['defs']"]
    celery = script_output(START_WORKERS, *run_args, "--workers", "2", "--executor", "celery")
    assert celery.splitlines()[0] == "False False None"  # Celery workers run the steps
    # More processes than cores start once the graph is read (its error is not slowed)
    many = script_output(START_WORKERS, *run_args, "--workers", str(cores + 1))
    assert many.splitlines()[0] == "False False None"


EXIT_WITHOUT_CLOSE = """
import errno, sys, time
from multiprocessing import context
from dpl_assets.worker_pool import WorkerPool
if __name__ == "__main__":
    if sys.argv[1] == "failed-fork":  # the 2nd process fails to start (a pids limit)
        real, calls = context.SpawnProcess._Popen, []
        def flaky(process):
            calls.append(process)
            if len(calls) == 2:
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            return real(process)
        context.SpawnProcess._Popen = staticmethod(flaky)
        try:
            WorkerPool(3)
        except OSError as error:
            print("raised", error.errno == errno.EAGAIN, flush=True)
    else:  # started, never configured nor closed (as if Ctrl-C came right after)
        pool = WorkerPool(2)
        if sys.argv[1] == "interrupted":  # dpl passes an interrupt on while they start
            pool.interrupt()
            pool.configure(1, ())
            print(pool.executor.submit(sum, [1, 2]).result(timeout=120), flush=True)
    print("exiting", flush=True)
"""


@pytest.mark.parametrize("case", ["unclosed", "failed-fork", "interrupted"])
def test_a_process_with_a_pool_it_did_not_close_still_exits(case):
    # The workers never wait for their parent: its exit does not hang on them (it did when
    # they waited for their configuration), and its interrupt does not break a starting one.
    done = subprocess.run(
        [sys.executable, "-c", EXIT_WITHOUT_CLOSE, case],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {"unclosed": [], "failed-fork": ["raised True"], "interrupted": ["3"]}[case]
    assert done.stdout.splitlines() == [*expected, "exiting"]


def test_every_worker_has_the_same_configuration_by_its_first_run():
    pool = WorkerPool(2)
    try:
        pool.configure(1, (module for module in ["colorsys"]))  # a generator: read once
        assert pool.configuration == (1, ("colorsys",))
        # A run applies it first (_run_in_worker), in a worker that did not take a
        # configure task (the other took both: it may, these ones being instant).
        found = [pool.executor.submit(_first_run, pool.configuration) for _ in range(2)]
        results = [done.result(timeout=300) for done in found]
        assert len({pid for pid, _ in results}) == 2  # both workers
        assert [loaded for _, loaded in results] == [({"colorsys": True}, "1")] * 2
    finally:
        pool.close()


def test_dpl_run_gives_its_early_workers_their_libraries_before_counting_gpus(
    tmp_path, monkeypatch
):
    """Without --workers, a graph with a GPU model makes dpl count the GPUs, which imports
    torch (~0.6 s on 2 cores): the workers started before the graph was read have their
    configure task (the model libraries to import) by then, instead of idling meanwhile."""
    from dpl_assets import devices

    seen: dict[str, Any] = {}
    start_workers = cli._start_workers

    def start(args: Any) -> WorkerPool | None:
        seen["pool"] = start_workers(args)
        return seen["pool"]

    def count_gpus() -> tuple[int, bool]:
        seen["configured"] = seen["pool"].configuration
        raise ValueError("stopped where the GPUs are counted")

    monkeypatch.delenv("DPL_WORKERS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)  # one worker beside dpl, on any machine
    monkeypatch.setattr(cli, "_start_workers", start)
    monkeypatch.setattr(devices, "visible_devices", count_gpus)
    graph, inputs = tmp_path / "graph.json", tmp_path / "inputs.json"
    graph.write_text(json.dumps([{"name": "Wav2vecNode", "params": {"device": "cpu"}}]))
    (tmp_path / "videos").mkdir()
    write_clip(tmp_path / "videos" / "clip.mp4", moving_astronaut(4))
    inputs.write_text(json.dumps({"video": str(tmp_path / "videos")}))
    code = cli.main(["run", "--graph", str(graph), "--inputs", str(inputs),
                     "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert code == cli.EXIT_INVALID  # the count's ValueError, reported as a bad setting
    assert seen["pool"] is not None and seen["pool"].count == 1
    # The thread budget of 2 processes on 2 cores, and wav2vec's libraries (torch first)
    assert seen["configured"] is not None
    budget, libraries = seen["configured"]
    assert budget == 1 and "torch" in libraries
    assert multiprocessing.active_children() == []  # the pool was closed after the error


def test_the_pool_started_early_is_used_when_its_count_fits_and_replaced_when_not():
    plan = plan_graph([{"name": "VideoToWavNode", "params": {}}])
    early = start_pool(2)
    assert early is not None
    try:
        assert start_worker_pool(plan, 2, early) is early and early.configured
        assert start_worker_pool(plan, 2, early) is early  # configured so already: kept
    finally:
        early.close()
    other = start_pool(2)  # one worker; the graph (as with a GPU model) wants two
    assert other is not None
    replacement = start_worker_pool(plan, 3, other)
    try:
        assert replacement is not None and replacement is not other
        assert replacement.count == 2 and replacement.configured
        assert all(not worker.is_alive() for worker in other._processes)  # stopped unused
        # Two tasks of 2 s at once run in both workers (one not configured would not take one)
        pids = [replacement.executor.submit(_pid_after, 2.0) for _ in range(2)]
        assert len({done.result(timeout=300) for done in pids}) == 2
    finally:
        replacement.close()
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_fails_its_videos_and_a_rerun_computes_them(tmp_path, capsys):
    videos = tmp_path / "videos"
    for name in ("a", "b", "c", "d"):
        media.make_talking_clip(videos / f"{name}.mp4", seconds=0.5)
    graph = [
        {"name": "VideoToWavNode", "params": {}},
        {"name": "dpl_assets_tests.custom_crash_example:CrashInWorkerNode", "params": {}},
    ]
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": str(videos)}))
    args = ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
            str(tmp_path / "inputs.json"), "--output_dir", str(tmp_path / "out")]  # fmt: skip

    assert cli.main([*args, "--workers", "2"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "a worker process failed" in err and "run again to compute them" in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())["videos"]
    status = {entry["video_id"]: entry["status"] for entry in report}
    # One range (a, b or c, d) ran in this process, the other in the worker that died.
    assert status["a"] == status["b"] != status["c"] == status["d"]
    assert {status["a"], status["c"]} == {"processed", "failed"}
    instance = dg.DagsterInstance.from_config(str(tmp_path / "out" / INSTANCE_SUBDIR))
    assert {run.status for run in instance.get_runs()} == {
        dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,  # none left "started"
    }  # fmt: skip

    assert cli.main([*args, "--workers", "1"]) == cli.EXIT_OK
    lengths = {
        name: int(np.load(tmp_path / "out" / "wav_length" / f"{name}.npy")[0])
        for name in ("a", "b", "c", "d")
    }
    assert lengths == dict.fromkeys(lengths, 8000)  # 0.5 s at 16 kHz


def test_bad_worker_counts_are_refused(tmp_path, face_videos, monkeypatch, capsys):
    (tmp_path / "graph.json").write_text(json.dumps(GRAPH))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": str(face_videos)}))
    args = ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
            str(tmp_path / "inputs.json"), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert cli.main([*args, "--workers", "0"]) == cli.EXIT_INVALID
    assert "--workers must be at least 1" in capsys.readouterr().err
    monkeypatch.setenv("DPL_WORKERS", "two")
    assert cli.main(args) == cli.EXIT_INVALID
    assert "DPL_WORKERS must be a positive integer, not 'two'" in capsys.readouterr().err


def test_ranges_give_every_parallel_run_a_share():
    ordered = [f"v{i:02d}" for i in range(12)]
    assert pending_ranges(ordered, ordered, 50) == [("v00", "v11")]
    assert pending_ranges(ordered, ordered, 50, parallel=2) == [("v00", "v05"), ("v06", "v11")]
    # At most 4 a run over 2 processes: 4 runs of 3 (2 each), not 4 + 4 + 4 (8 and 4).
    assert pending_ranges(ordered, ordered, 4, parallel=2) == [
        ("v00", "v02"), ("v03", "v05"), ("v06", "v08"), ("v09", "v11"),
    ]  # fmt: skip
    assert pending_ranges(ordered, ordered, 5) == [("v00", "v03"), ("v04", "v07"), ("v08", "v11")]
    many = [f"v{i:02d}" for i in range(36)]
    lengths = [int(b[1:]) - int(a[1:]) + 1 for a, b in pending_ranges(many, many, 11, parallel=2)]
    assert lengths == [9, 9, 9, 9]
    # A done video splits a range; never more parallel runs than pending videos.
    assert pending_ranges(ordered, ["v00", "v01", "v03"], 50, parallel=4) == [
        ("v00", "v00"), ("v01", "v01"), ("v03", "v03"),
    ]  # fmt: skip


def test_thread_budget_rules(tmp_path, monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    shipped = Path(cli.__file__).parent / "configs" / "dagster.yaml"
    (home / "dagster.yaml").write_text(shipped.read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert threads.parallel_runs(instance) == 2  # max_concurrent_runs in dagster.yaml
        assert threads.budget(instance) == max(1, threads.cores() // 2)
    assert threads.budget() == threads.cores()
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.budget() == 3
    threads.use(1)
    try:
        assert threads.budget() == 1
    finally:
        threads.use(None)
    monkeypatch.setenv(threads.THREADS_ENV, "0")
    with pytest.raises(ValueError, match="DPL_THREADS must be a positive integer"):
        threads.budget()


def test_apply_sets_torch_and_opencv_pools():
    import cv2
    import torch

    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        threads.apply(1)
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert threads.decoder_threads() == 1
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


# -- frames decoded again from the video -------------------------------------------------


def video_io(tmp_path: Path, video: Path, stack: Path) -> VideoIO:
    """A VideoIO over one registered video whose ``images`` input is ``stack``."""
    store = ArtifactStore(tmp_path / "out")
    (video_id,) = store.catalog.register(parse_inputs({"video": str(video.parent)})).all_ids
    reads = Reads("TestNode", frozenset({"images"}))
    return VideoIO(store, video_id, {"images": ImageStackRef(stack, "images")}, reads=reads)


def test_frames_come_from_the_video_by_the_stack_recipe(tmp_path):
    video = write_clip(tmp_path / "v" / "clip.mp4", moving_astronaut(20))
    stack = tmp_path / "images.h5"
    extract_frames(video, stack, fps=10)  # resampled: the recipe must be replayed
    io = video_io(tmp_path, video, stack)

    with io.frames("images") as frames:
        got = list(frames)
    expected = [frame.rgb for frame in resample_frames(decode_frames(video), 10)]
    assert len(got) == len(expected) == len(ImageStackRef(stack, "images"))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)  # the video's pixels, not the JPEG's
    with ImageStack(stack, "images") as stored:
        assert np.abs(stored[0].astype(int) - got[0]).max() > 0  # JPEG loss is absent


@pytest.mark.parametrize("why", ["no recipe", "decode errors"])
def test_frames_of_other_stacks_are_the_stored_images(tmp_path, why):
    video = write_clip(tmp_path / "v" / "clip.mp4", moving_astronaut(8))
    stack = tmp_path / "images.h5"
    extract_frames(video, stack)
    with h5py.File(stack, "a") as file:
        if why == "no recipe":  # e.g. a stack made by another tool
            del file.attrs[DECODE_RECIPE_ATTR]
        else:  # a damaged video may decode differently another time
            file.attrs["decode_errors"] = 1
    io = video_io(tmp_path, video, stack)
    with io.frames("images") as frames, ImageStack(stack, "images") as stored:
        for index, rgb in enumerate(frames):
            np.testing.assert_array_equal(rgb, stored[index])


def test_a_video_that_no_longer_matches_its_stack_is_rejected(tmp_path):
    video = write_clip(tmp_path / "v" / "clip.mp4", moving_astronaut(8))
    stack = tmp_path / "images.h5"
    extract_frames(video, stack)
    write_clip(video, moving_astronaut(11))  # replaced behind the pipeline's back
    io = video_io(tmp_path, video, stack)
    with (
        pytest.raises(StackMismatch, match="decodes to other frames than its stack holds"),
        io.frames("images") as frames,
    ):
        list(frames)


@pytest.mark.parametrize(
    "text",
    ['{"fps": -25, "max_side": 0}', '{"fps": NaN, "max_side": 0}', '{"fps": null, "max_side": -1}',
     '{"fps": "x", "max_side": 0}', '{"max_side": 0}', "[]"],
)  # fmt: skip
def test_a_stored_decode_recipe_that_is_not_one_is_refused(text):
    with pytest.raises(ValueError, match="not a decode recipe"):
        DecodeRecipe.from_json(text)
    assert DecodeRecipe.from_json('{"fps": 25, "max_side": 0}') == DecodeRecipe(25.0, 0)
