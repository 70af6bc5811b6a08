"""Ctrl-C stops ``dpl run``: the videos being computed end, no step is retried, no further
video starts, exit status 130, and the next ``dpl run`` computes only the rest.

References: the slow node's own log of which process started which video, the instance's
event records (Dagster's API), ``/proc`` for leftover processes, and sample counts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from dpl_assets import cli, interrupts
from dpl_assets.media.ffmpeg import run_ffmpeg_logged
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests.dpl_runs import slow_run_args, slow_starts
from dpl_assets_tests.test_killed_runs import stop, wait_until_ended

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals to process groups")

VIDEOS = ["a", "b", "c", "d"]


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (started from any of its threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


@pytest.mark.parametrize("to", ["the terminal's group", "dpl alone"])
def test_ctrl_c_stops_the_runs_after_the_videos_being_computed(tmp_path, capsys, to):
    args, out = slow_run_args(tmp_path, VIDEOS), tmp_path / "out"
    log = tmp_path / "interrupted.log"
    dpl = subprocess.Popen(
        [sys.executable, "-m", "dpl_assets.cli", *args, "--workers", "2"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while len({pid for pid, _ in slow_starts(tmp_path)}) < 2 and time.monotonic() < deadline:
            assert dpl.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        assert len({pid for pid, _ in slow_starts(tmp_path)}) == 2, log.read_text()[-3000:]
        workers = [pid for pid in children(dpl.pid) if pid != dpl.pid]
        interrupted_at = time.monotonic()
        if to == "dpl alone":
            os.kill(dpl.pid, signal.SIGINT)  # dpl passes it on to its workers
        else:
            os.killpg(dpl.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert dpl.wait(60) == cli.EXIT_INTERRUPTED, log.read_text()[-3000:]
        assert time.monotonic() - interrupted_at < 30  # the 4 s videos, not the rest
        assert wait_until_ended(workers, 15) == []
    finally:
        if dpl.poll() is None:
            os.killpg(dpl.pid, signal.SIGKILL)  # our own process group only
            dpl.wait()
        stop(workers)
    said = log.read_text()
    assert "dpl: interrupted: the runs stopped after the videos being computed" in said
    first = slow_starts(tmp_path)
    assert len(first) == 2  # one video per process: the second of each range never started
    instance = dg.DagsterInstance.from_config(str(out / INSTANCE_SUBDIR))
    runs = instance.get_runs()
    assert len(runs) == 2 and {run.status for run in runs} == {dg.DagsterRunStatus.FAILURE}
    for run in runs:  # stopped, not retried
        retried = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
        ).records
        assert retried == []
    done = {video for _, video in first}
    assert {p.stem for p in (out / "wav_samples").glob("*.npy")} == done  # saved as they ended

    assert cli.main(args) == cli.EXIT_OK
    assert "interrupted" not in capsys.readouterr().err
    again = slow_starts(tmp_path)[len(first) :]
    assert sorted(video for _, video in again) == sorted(set(VIDEOS) - done)  # only the rest
    for name in VIDEOS:
        assert np.load(out / "wav_samples" / f"{name}.npy").tolist() == [8000]  # 0.5 s, 16 kHz


def test_a_step_stops_on_an_interrupt_without_a_retry_and_later_steps_at_once():
    interrupts.clear()
    try:
        with pytest.raises(dg.Failure) as stopped, interrupts.step_stops_on_interrupt("run-1"):
            raise dg.DagsterExecutionInterruptedError()
        assert stopped.value.allow_retries is False
        assert "interrupted (Ctrl-C)" in str(stopped.value.description)
        assert interrupts.requested() and interrupts.run_stopped("run-1")
        ran = []
        with pytest.raises(dg.Failure), interrupts.step_stops_on_interrupt("run-1"):
            ran.append("run-1")
        with interrupts.step_stops_on_interrupt("run-2"):  # another run (a Celery worker's)
            ran.append("run-2")
        assert ran == ["run-2"]  # the interrupted run's later step did no work
    finally:
        interrupts.clear()
    with pytest.raises(ValueError), interrupts.step_stops_on_interrupt("run-3"):
        raise ValueError("another error passes as it is (a failure, retried as before)")
    assert not interrupts.requested()


def test_an_interrupt_dagster_handled_itself_is_seen_in_the_run_events():
    """An interrupt in a step without our handling makes Dagster fail the run and return:
    the events are all that says it was interrupted."""

    @dg.op
    def interrupted_op() -> int:
        os.kill(os.getpid(), signal.SIGINT)  # Dagster's handler raises it here
        return 1

    @dg.op
    def failing_op() -> int:
        raise ValueError("not an interrupt")

    @dg.op
    def second(value: int) -> int:
        return value

    @dg.job
    def interrupted_job() -> None:
        second(interrupted_op())

    @dg.job
    def failing_job() -> None:
        second(failing_op())

    result = interrupted_job.execute_in_process(raise_on_error=False)
    assert not result.success and interrupts.interrupted(result.all_events)
    failed = failing_job.execute_in_process(raise_on_error=False)
    assert not failed.success and not interrupts.interrupted(failed.all_events)


def test_ffmpeg_runs_in_a_process_group_of_its_own():
    """The terminal's Ctrl-C goes to the foreground process group: not to ffmpeg, which
    would stop mid-file and make a good video look bad."""
    groups: list[int] = []
    runner = threading.Thread(
        target=run_ffmpeg_logged,
        args=(["-re", "-f", "lavfi", "-i", "sine=duration=3", "-f", "null", "-"],),
        kwargs={"what": "a 3 s tone"},
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not groups and time.monotonic() < deadline:
        for pid in children(os.getpid()):
            with contextlib.suppress(OSError):  # ended meanwhile
                # this ffmpeg (imageio-ffmpeg runs "ffmpeg -version" itself, in our group)
                if b"sine=duration=3" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    groups.append(os.getpgid(pid))
        time.sleep(0.02)
    runner.join(30)
    assert groups, "ffmpeg was not seen running"
    assert all(group != os.getpgid(0) for group in groups)


TINY_JOB = """
import signal
import dagster as dg
from dpl_assets import run_pool, worker_pool

signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `nohup dpl run &` and workers start

@dg.op
def one() -> int:
    return 1

@dg.job
def tiny() -> None:
    one()
"""

AFTER_A_BACKGROUND_RUN = """
import subprocess
with dg.instance_for_test() as instance:
    tiny.execute_in_process(instance=instance)  # Dagster's own: SIGTERM left as SIGINT is
    print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    defs = dg.Definitions(jobs=[tiny])
    ended = run_pool.execute(defs, instance, {}, run_pool.RangeRun("tiny", [], "tiny"))
    print(ended.success, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    child = subprocess.Popen(["sleep", "30"])  # a process started after the run
    child.terminate()
    print(child.wait(timeout=10) == -signal.SIGTERM)
"""


def test_sigterm_still_stops_dpl_and_its_children_after_a_run_started_in_the_background():
    """Started with SIGINT ignored, ``dpl run``'s process kept SIGTERM ignored after its
    first run (Dagster's doing, the first line shows it): ``kill`` did not stop it and the
    processes it started later (Dagster's log tailers, ffmpeg) ignored SIGTERM too."""
    from dpl_assets_tests.fresh_python import script_output

    assert script_output(TINY_JOB + AFTER_A_BACKGROUND_RUN).split() == ["True"] * 4


AFTER_A_WORKER_RUN = """
defs = dg.Definitions(jobs=[tiny])
with dg.instance_for_test() as instance:
    setup = worker_pool.WorkerSetup("setup", lambda: defs, instance.get_ref(), (1, ()))
    ended = run_pool._run_in_worker(setup, run_pool.RangeRun("tiny", [], "tiny"), {})
    print(ended.success, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
"""


def test_a_worker_still_ends_on_sigterm_after_a_run():
    """Dagster gives SIGTERM the SIGINT handler it found after a run: in a worker, where
    SIGINT is ignored while idle, SIGTERM (the pool's terminate, a kill) was ignored too."""
    from dpl_assets_tests.fresh_python import script_output

    assert script_output(TINY_JOB + AFTER_A_WORKER_RUN).split() == ["True", "True"]
