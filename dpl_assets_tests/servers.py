"""Throwaway PostgreSQL, Redis and Celery worker processes for the cluster tests.

Real servers on 127.0.0.1, each on a free port, data in a temp folder, stopped by the PID
this module started (never by name). PostgreSQL refuses to run as root: as root (CI), its
folder is given to the ``postgres`` user the Debian package creates and its programs run
through ``runuser -u postgres``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port; raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Send ``sig`` to ``pid`` (a process this module started) and wait for it to be gone;
    SIGKILL after ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    port: int
    pid: int
    data: Path

    def env(self, db: str = "dagster") -> dict[str, str]:
        """The DAGSTER_PG_* variables of dpl_assets/configs/postgres_storage.yaml."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": db,
            "DAGSTER_PG_USERNAME": "dagster",
            "DAGSTER_PG_PASSWORD": "",
        }


@contextlib.contextmanager
def postgres(durable: bool = False) -> Iterator[Postgres]:
    """A PostgreSQL cluster in a new temp folder (user ``dagster``, trusted on 127.0.0.1
    only, database ``dagster``), stopped (fast shutdown, by the postmaster's PID) and
    deleted at the end; ``fsync=off`` unless ``durable`` (benchmarks). Not under pytest's
    temp folders: those are root's alone, and the ``postgres`` user must reach its folder.
    Skips the test when PostgreSQL is not installed (``scripts/setup.sh --tests``)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (bash scripts/setup.sh --tests)")
    folder = Path(tempfile.mkdtemp(prefix="dpl-test-pg-"))
    data = folder / "pgdata"
    data.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses root: run it as the Debian package's user
        shutil.chown(folder, "postgres")
        shutil.chown(data, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster",
         "--auth=trust", "--no-sync"], **quiet,
    )  # fmt: skip
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    options += "" if durable else " -c fsync=off"
    subprocess.run(
        [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
         "-l", str(folder / "postgres.log"), "-w", "start"], **quiet,
    )  # fmt: skip
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        subprocess.run(
            [*as_postgres, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
             "-U", "dagster", "dagster"], **quiet,
        )  # fmt: skip
        yield Postgres(port, pid, data)
    finally:
        stop_pid(pid, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Redis:
    port: int
    pid: int

    def env(self) -> dict[str, str]:
        """Broker (db 0) and result backend (db 1) for dpl_assets.cluster."""
        return {
            "DPL_CELERY_BROKER": f"redis://127.0.0.1:{self.port}/0",
            "DPL_CELERY_BACKEND": f"redis://127.0.0.1:{self.port}/1",
        }


@contextlib.contextmanager
def redis(folder: Path) -> Iterator[Redis]:
    """A redis-server on 127.0.0.1 (no persistence), stopped by PID at the end. Skips the
    test when redis-server is not installed (``scripts/setup.sh --tests``)."""
    program = shutil.which("redis-server")
    if program is None:
        pytest.skip("redis-server is not installed (bash scripts/setup.sh --tests)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(folder / "redis.log", "wb") as log:
        process = subprocess.Popen(
            [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(port)
        yield Redis(port, process.pid)
    finally:
        stop_pid(process.pid)
        process.wait()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log: Path

    def child_pids(self) -> list[int]:
        """The worker's pool processes (its children)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def start_worker(name: str, queues: list[str], env: dict[str, str], folder: Path) -> Worker:
    """``celery -A dpl_assets.celery_worker worker`` of this venv, one pool process,
    listening on ``queues``; its output in ``folder/{name}.log``."""
    celery = Path(sys.executable).with_name("celery")
    log = folder / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(celery), "-A", "dpl_assets.celery_worker", "worker", "--loglevel", "INFO",
             "--concurrency", "1", "-Q", ",".join(queues), "-n", f"{name}@%h",
             "--without-gossip", "--without-mingle"],
            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Worker(name, process, log)


def wait_ready(worker: Worker, timeout_s: float = 120.0) -> None:
    """Wait until the worker says it is ready; raises RuntimeError (with its log) if it
    exits or does not get there within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if " ready." in worker.log.read_text(errors="replace"):
            return
        if worker.process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"worker {worker.name} not ready:\n{worker.log.read_text()[-3000:]}")


def stop_worker(worker: Worker) -> None:
    """Warm shutdown (SIGTERM) of the worker by its PID, SIGKILL after the timeout."""
    stop_pid(worker.process.pid)
    worker.process.wait()
