"""``dpl run`` killed (SIGKILL, as the OOM killer would): its worker processes end with it
instead of going on unseen, and the runs it left "started" are marked failed by the next
``dpl run``, which computes what is missing.

References: ``/proc`` (whether a PID still runs), the instance's run records read with
Dagster's own API, and the outputs' sample counts (0.5 s clips at 16 kHz).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from dagster._core.test_utils import create_run_for_test

from dpl_assets import cli
from dpl_assets.processes import host_process_tag, is_gone, process_tag
from dpl_assets.run_pool import LAUNCHED_BY_TAG, PROCESS_TAG, fail_runs_of_ended_processes
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests.dpl_runs import slow_run_args, slow_starts
from dpl_assets_tests.fresh_python import REPO

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc and SIGKILL")

STARTED = dg.DagsterRunStatus.STARTED


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent that never reaps it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until_ended(pids: list[int], seconds: float) -> list[int]:
    """The ``pids`` still running after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if running(pid)]


def stop(pids: list[int]) -> None:
    """SIGKILL the processes of ``pids`` that still run (processes this test started)."""
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


POOL_THEN_WAIT = """
import sys, time
from dpl_assets.worker_pool import WorkerPool
pool = WorkerPool(2)
if sys.argv[1] == "started":  # past their start-up: one busy in a task, one waiting
    pool.configure(thread_budget=1)
    [done.result() for done in pool.started]
    pool.executor.submit(time.sleep, 300)
    time.sleep(3)
print(*[process.pid for process in pool._processes], flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("when", ["started", "starting"])
def test_pool_workers_end_when_the_process_that_started_them_is_killed(when):
    parent = subprocess.Popen(
        [sys.executable, "-c", POOL_THEN_WAIT, when], stdout=subprocess.PIPE, text=True,
        cwd=REPO,
    )  # fmt: skip
    workers: list[int] = []
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(running(pid) for pid in workers)
        parent.kill()  # "starting": before they imported anything
        parent.wait()
        assert wait_until_ended(workers, 15) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        stop(workers)


def this_machine() -> str:
    """The machine part of this process's tag: host name, boot id, PID namespace."""
    me = host_process_tag()
    assert me is not None
    return me.rpartition("/")[0]


def test_tags_tell_ended_processes_from_running_ones():
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert this_machine().startswith(f"{socket.gethostname()}:{boot_id}:")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tag = host_process_tag(child.pid)
        assert tag == f"{this_machine()}/{process_tag(child.pid)}"
        assert tag.partition("/")[2].startswith(f"{child.pid}-")
        assert not is_gone(tag)
        child.kill()
        deadline = time.monotonic() + 10
        while running(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(f"/proc/{child.pid}").exists()  # not reaped yet: a zombie
        assert is_gone(tag) and process_tag(child.pid) is None
    finally:
        child.kill()
        child.wait()
    assert is_gone(tag)  # ended and reaped
    assert not is_gone(f"{this_machine()}/{os.getpid()}-{process_tag(os.getpid()).split('-')[1]}")
    assert is_gone(f"{this_machine()}/{os.getpid()}-1")  # our PID, another start: reused
    host, boot, namespace = this_machine().split(":")
    for elsewhere in (f"another-host:{boot}:{namespace}", f"{host}:another-boot:{namespace}",
                      f"{host}:{boot}:4026000000"):  # fmt: skip
        assert not is_gone(f"{elsewhere}/{child.pid}-1")  # not knowable from here
    assert not is_gone("not a tag")


def test_started_runs_of_ended_processes_are_marked_failed():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = f"{this_machine()}/{child.pid}-1"
    me = host_process_tag()
    assert me is not None
    by_dpl = {LAUNCHED_BY_TAG: "dpl run"}
    with dg.instance_for_test() as instance:
        started = {"status": STARTED}
        runs = {
            "dead": create_run_for_test(instance, **started, tags={**by_dpl, PROCESS_TAG: dead}),
            "alive": create_run_for_test(instance, **started, tags={**by_dpl, PROCESS_TAG: me}),
            "other host": create_run_for_test(
                instance, status=STARTED, tags={**by_dpl, PROCESS_TAG: f"x:y:z/{child.pid}-1"}
            ),
            "untagged": create_run_for_test(instance, status=STARTED, tags=by_dpl),
            "not dpl's": create_run_for_test(instance, status=STARTED, tags={PROCESS_TAG: dead}),
            "ended": create_run_for_test(
                instance, status=dg.DagsterRunStatus.SUCCESS, tags={**by_dpl, PROCESS_TAG: dead}
            ),
        }  # fmt: skip
        assert fail_runs_of_ended_processes(instance) == [runs["dead"].run_id]
        status = {name: instance.get_run_by_id(run.run_id).status for name, run in runs.items()}
        assert status == {
            "dead": dg.DagsterRunStatus.FAILURE, "alive": STARTED, "other host": STARTED,
            "untagged": STARTED, "not dpl's": STARTED, "ended": dg.DagsterRunStatus.SUCCESS,
        }  # fmt: skip
        failure = instance.get_records_for_run(
            runs["dead"].run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        assert len(failure) == 1 and dead in failure[0].event_log_entry.message
        assert fail_runs_of_ended_processes(instance) == []  # done once


def test_a_killed_dpl_run_leaves_no_worker_and_the_next_run_fails_its_runs(tmp_path, capsys):
    args, out = slow_run_args(tmp_path, ["a", "b"]), tmp_path / "out"
    log = (tmp_path / "killed.log").open("w")
    dpl = subprocess.Popen(
        [sys.executable, "-m", "dpl_assets.cli", *args, "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while len(pids) < 2 and time.monotonic() < deadline and dpl.poll() is None:
            time.sleep(0.1)
            pids = {pid for pid, _ in slow_starts(tmp_path)}
        assert len(pids) == 2, (tmp_path / "killed.log").read_text()[-3000:]
        assert dpl.pid in pids  # one range in dpl itself, the other in its worker
        (worker,) = pids - {dpl.pid}
        os.kill(dpl.pid, signal.SIGKILL)  # while both sleep in the slow node
        dpl.wait()
        assert wait_until_ended([worker], 15) == []
    finally:
        if dpl.poll() is None:
            os.killpg(dpl.pid, signal.SIGKILL)  # our own process group only
            dpl.wait()
        stop(list(pids))
        log.close()

    instance = dg.DagsterInstance.from_config(str(out / INSTANCE_SUBDIR))
    by_process = {run.tags[PROCESS_TAG].rpartition("-")[0]: run for run in instance.get_runs()}
    host = this_machine()
    assert set(by_process) == {f"{host}/{dpl.pid}", f"{host}/{worker}"}
    assert by_process[f"{host}/{dpl.pid}"].status == STARTED  # nobody left to say otherwise
    assert by_process[f"{host}/{worker}"].status == dg.DagsterRunStatus.FAILURE  # said so
    assert "is gone; stopping" in (tmp_path / "killed.log").read_text()  # the worker's line

    assert cli.main(args) == cli.EXIT_OK
    err = capsys.readouterr().err
    killed_run = by_process[f"{host}/{dpl.pid}"].run_id
    assert (
        f"marked 1 run(s) of a killed dpl run failed (their process is gone): {killed_run[:8]}"
        in err
    )
    assert instance.get_run_by_id(killed_run).status == dg.DagsterRunStatus.FAILURE
    assert [run for run in instance.get_runs() if run.status == STARTED] == []
    report = json.loads((out / "report.json").read_text())["videos"]
    assert {entry["video_id"]: entry["status"] for entry in report} == {
        "a": "processed", "b": "processed",
    }  # fmt: skip
    for name in ("a", "b"):
        assert np.load(out / "wav_samples" / f"{name}.npy").tolist() == [8000]  # 0.5 s, 16 kHz
