"""GPU leases (one device per process, freed when the process dies) and the shipped instance
configuration (dagster.yaml: telemetry off, run queue, pools; copied by ``dpl run``).

GPUs are simulated with ``DPL_SIMULATED_GPUS``; lease holders are small Python processes
that load ``dpl_assets/devices.py`` by path (it needs only the standard library when
simulating), so they start in milliseconds.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest
import yaml

import dpl_assets.devices as devices
from dpl_assets.cli import main as dpl_main
from dpl_assets.devices import (
    DeviceLease,
    DeviceLeaseTimeout,
    LeasedDevice,
    acquire_device,
    release_process_devices,
    visible_devices,
)
from dpl_assets.resources import TorchDevice

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "dpl_assets" / "configs" / "dagster.yaml"

# Leases a device for the life of the process: prints "index torch_device", then on each
# stdin line "again" prints the index acquire_device returns now; exits at end of input.
HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("lease_devices", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
device = module.acquire_device(sys.argv[2], timeout=float(sys.argv[3]), poll_interval=0.05)
print(device.index, device.torch_device, flush=True)
for line in sys.stdin:
    print(module.acquire_device(sys.argv[2]).index, flush=True)
"""


class Holder:
    def __init__(self, folder: Path, timeout: float = 10.0, gpus: int = 3) -> None:
        env = {**os.environ, devices.SIMULATED_GPUS_ENV: str(gpus)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, devices.__file__, str(folder), str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def line(self, wait: float = 10.0) -> str | None:
        """The holder's next output line, or None if none comes within ``wait`` seconds."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], wait)
        return self.process.stdout.readline().strip() if ready else None

    def leased(self) -> int:
        line = self.line()
        assert line is not None, "holder printed nothing"
        index, torch_device = line.split()
        assert torch_device == "cpu"  # simulated devices hand out the CPU
        return int(index)

    def ask_again(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write("again\n")
        self.process.stdin.flush()
        line = self.line()
        assert line is not None
        return int(line)

    def exit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield started
    for holder in started:
        if holder.process.poll() is None:
            holder.kill()
        for stream in (holder.process.stdin, holder.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch):
    """Three simulated GPUs in this process; its process-wide leases are dropped after."""
    monkeypatch.setenv(devices.SIMULATED_GPUS_ENV, "3")
    monkeypatch.delenv(devices.LEASE_DIR_ENV, raising=False)
    yield
    release_process_devices()


def test_concurrent_processes_get_distinct_devices_and_a_waiting_one_gets_a_freed_one(
    tmp_path, holders
):
    for _ in range(3):
        holders.append(Holder(tmp_path))
    leased = [holder.leased() for holder in holders]
    assert sorted(leased) == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"device-{i}.lock" for i in range(3)]

    waiting = Holder(tmp_path)
    holders.append(waiting)
    assert waiting.line(wait=0.7) is None  # all three taken: it waits
    holders[leased.index(1)].exit()
    assert waiting.leased() == 1  # the index its holder gave back


def test_sigkilled_holder_frees_its_device_at_once(tmp_path, holders):
    holder = Holder(tmp_path)
    holders.append(holder)
    index = holder.leased()
    with DeviceLease(3, tmp_path, timeout=0), DeviceLease(3, tmp_path, timeout=0):
        with pytest.raises(DeviceLeaseTimeout):  # all three held: holder + these two
            DeviceLease(3, tmp_path, timeout=0).acquire()
        holder.kill()  # no clean-up runs: the kernel drops the lock with the process
        with DeviceLease(3, tmp_path, timeout=0) as device:
            assert device.index == index


def test_a_process_keeps_its_one_lease_for_its_lifetime(tmp_path, holders, simulated):
    holder = Holder(tmp_path)
    holders.append(holder)
    theirs = holder.leased()
    assert holder.ask_again() == theirs  # same process, same lease

    results: list[LeasedDevice] = []
    threads = [
        threading.Thread(target=lambda: results.append(acquire_device(tmp_path))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mine = {device.index for device in results}
    assert len(mine) == 1 and theirs not in mine  # one lease for all threads
    assert acquire_device(tmp_path) == results[0]
    assert results[0].torch_device == "cpu" and results[0].simulated


def test_a_forked_child_leases_its_own_and_leaves_the_parents(tmp_path, simulated):
    parent = acquire_device(tmp_path).index
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its own lease and exit without clean-up
        try:
            os.write(write_end, str(acquire_device(tmp_path).index).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child = int(os.read(read_end, 16))
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child != parent
    with DeviceLease(3, tmp_path, timeout=0) as a, DeviceLease(3, tmp_path, timeout=0) as b:
        assert {a.index, b.index} == {0, 1, 2} - {parent}  # the parent's is still held


def test_all_devices_taken_times_out_naming_folder_count_and_holders(tmp_path):
    late = DeviceLease(2, tmp_path, timeout=0.2, poll_interval=0.05)
    with (
        DeviceLease(2, tmp_path),
        DeviceLease(2, tmp_path),
        pytest.raises(DeviceLeaseTimeout) as error,
    ):
        late.acquire()
    message = str(error.value)
    assert str(tmp_path) in message and "all 2 device leases" in message
    assert f"pid {os.getpid()}" in message
    with DeviceLease(2, tmp_path, timeout=0) as device:  # released on leaving the blocks
        assert device.index == 0 and device.torch_device == "cuda:0"


def test_no_devices_means_cpu_and_no_lease(tmp_path, monkeypatch):
    monkeypatch.setenv(devices.SIMULATED_GPUS_ENV, "0")
    folder = tmp_path / "leases"
    assert acquire_device(folder) == LeasedDevice(None, "cpu", 0, None, True)
    with DeviceLease(0, folder) as device:
        assert device.torch_device == "cpu" and device.index is None
    assert not folder.exists()
    monkeypatch.delenv(devices.SIMULATED_GPUS_ENV)
    assert visible_devices() == (0, False)  # this machine has no GPU
    monkeypatch.setenv(devices.SIMULATED_GPUS_ENV, "two")
    with pytest.raises(ValueError, match=devices.SIMULATED_GPUS_ENV):
        visible_devices()


def test_torch_device_auto_leases_and_explicit_devices_bypass(tmp_path, simulated):
    resource = TorchDevice(lease_dir=str(tmp_path))
    assert resource.for_node("cpu") == "cpu"
    assert not list(tmp_path.iterdir())  # explicit devices take no lease
    with pytest.raises(ValueError, match="torch sees 0 GPU"):  # explicit: checked as before
        resource.for_node("cuda:1")
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda:N'"):
        resource.for_node("tpu")

    assert resource.for_node("auto") == "cpu"  # simulated: leased index, CPU device
    with DeviceLease(3, tmp_path, timeout=0) as other:
        assert other.index == 1  # 0 is this process's
    assert TorchDevice(device="cpu", lease_dir=str(tmp_path)).for_node("auto") == "cpu"


def test_one_simulated_device_is_not_leased(tmp_path, monkeypatch):
    monkeypatch.setenv(devices.SIMULATED_GPUS_ENV, "1")
    assert TorchDevice(lease_dir=str(tmp_path)).for_node("auto") == "cpu"
    assert not list(tmp_path.iterdir())


# The shipped instance configuration


def _instance_dir(tmp_path: Path) -> Path:
    home = tmp_path / "instance"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(SHIPPED.read_bytes())
    return home


def test_no_dagster_yaml_at_the_repo_root():
    # The instance's configuration is $DAGSTER_HOME/dagster.yaml (a copy of SHIPPED); one in
    # the folder `dagster dev` starts in only makes it warn that the file is not used.
    assert not (REPO / "dagster.yaml").exists() and not (REPO / "dagster.yml").exists()


def test_shipped_dagster_yaml_loads_as_an_instance(tmp_path):
    written = yaml.safe_load(SHIPPED.read_text())
    with dg.DagsterInstance.from_config(str(_instance_dir(tmp_path))) as instance:
        assert instance.telemetry_enabled is False
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert (
            concurrency.pool_config.default_pool_limit
            == (written["concurrency"]["pools"]["default_limit"])
        )
        assert concurrency.pool_config.pool_granularity.value == "run"
        assert concurrency.run_queue_config is not None
        assert (
            concurrency.run_queue_config.max_concurrent_runs
            == (written["concurrency"]["runs"]["max_concurrent_runs"])
        )
        assert "storage" not in written  # SQLite in each instance's own folder
        assert instance.event_log_storage.supports_global_concurrency_limits


def test_postgres_instance_config_is_valid_instance_config(tmp_path, monkeypatch):
    """What `dpl init-instance --postgres` writes (test_cluster.py runs it on a server)."""
    from dagster._core.instance.config import dagster_instance_config

    from dpl_assets.cli import instance_config

    for name in ("HOST", "PORT", "DB", "USERNAME", "PASSWORD"):
        monkeypatch.setenv(f"DAGSTER_PG_{name}", "5432")
    home = tmp_path / "pg"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_config(postgres=True))
    config, _ = dagster_instance_config(str(home))
    assert config["storage"]["postgres"]["postgres_db"]["username"] == {
        "env": "DAGSTER_PG_USERNAME"
    }


@dg.asset(pool="gpu")
def _gpu_probe(torch_device: TorchDevice) -> str:
    return torch_device.for_node("auto")


def test_in_process_runs_on_the_shipped_instance_lease_under_its_folder(
    tmp_path, simulated, monkeypatch
):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = _instance_dir(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # a gpu-pool slot claimed by a run that was killed must not hold up in-process runs
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("gpu")
        assert storage.claim_concurrency_slot("gpu", "killed-run", "step").is_claimed
        outcome: list[dg.ExecuteInProcessResult] = []
        resources = {"torch_device": TorchDevice()}
        runner = threading.Thread(
            target=lambda: outcome.append(
                dg.materialize([_gpu_probe], instance=instance, resources=resources)
            ),
            daemon=True,  # if it waited for ever, the test fails instead of hanging
        )
        runner.start()
        runner.join(timeout=60)
        assert outcome, "the in-process run waited on the gpu pool"
        assert outcome[0].success
        assert outcome[0].output_for_node("_gpu_probe") == "cpu"
    assert (home / "device_leases" / "device-0.lock").exists()


def test_dpl_run_copies_the_shipped_config_into_a_new_instance(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps([{"name": "ProbeNode", "params": {}}]))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"video": str(videos)}))
    out = tmp_path / "out"
    args = ["run", "--graph", str(graph), "--inputs", str(inputs), "--output_dir", str(out)]

    assert dpl_main(args) == 0
    config = out / ".dagster" / "dagster.yaml"
    assert config.read_bytes() == SHIPPED.read_bytes()

    config.write_text("telemetry:\n  enabled: false\n")  # an existing instance's own config
    assert dpl_main(args) == 0
    assert config.read_text() == "telemetry:\n  enabled: false\n"
