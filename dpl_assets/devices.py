"""Device leases: each concurrently running process gets a GPU of its own.

Dagster runs every run in a process of its own (and every step in one under the multiprocess
executor), and each of those processes would otherwise pick ``cuda:0``. A lease gives a
process one device index for as long as it holds it:

- one lock file per device index, ``device-{i}.lock``, in a lease folder (default
  ``{instance dir}/device_leases/``: the Dagster instance's folder, ``DAGSTER_HOME``, or
  ``DPL_DEVICE_LEASE_DIR`` to choose another; it must be local to the machine whose GPUs
  it hands out);
- a lease is a non-blocking filelock ``UnixFileLock`` (``fcntl.flock``) on the first free
  file among indices ``0..N-1``, held for the life of the lease. The kernel drops it when
  the descriptor closes, including when the process dies of SIGKILL or OOM, so there are
  no stale leases to clean up and nothing to time out. Lease files are created writable by
  everyone (mode 0o666), so a lease folder can be shared by several accounts; the holder
  writes who it is into its file;
- when every index is taken, the request polls until one frees or the timeout passes,
  then fails with an error naming the folder, N and the holders.

:func:`acquire_device` keeps one lease per process (and lease folder) for the life of the
process: a model loaded on ``cuda:2`` stays valid, however many steps or runs the process
executes. :class:`DeviceLease` is the same lease as a context manager, for code that wants
to give the device back.

N is ``torch.cuda.device_count()`` (so it respects ``CUDA_VISIBLE_DEVICES``; every process
sharing a lease folder must see the same devices). ``DPL_SIMULATED_GPUS=N`` simulates N
devices on any machine, as a testing and dry-run aid: indices are leased for real, but the
torch device handed out is ``cpu``. With no device there is nothing to lease: ``cpu``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

# filelock directly, with the settings of dpl_assets.storage.locks.file_lock: this module
# needs only the standard library and filelock, so a process can load it without the
# package (whose import builds the Dagster definitions).
from filelock import Timeout, UnixFileLock

SIMULATED_GPUS_ENV = "DPL_SIMULATED_GPUS"
"""Simulate this many GPUs (testing / dry runs): leases are real, the torch device is cpu."""
LEASE_DIR_ENV = "DPL_DEVICE_LEASE_DIR"
"""Overrides the lease folder."""
LEASE_TIMEOUT_ENV = "DPL_DEVICE_LEASE_TIMEOUT"
"""Seconds to wait for a free device (``inf``: wait for ever)."""
LEASE_SUBDIR = "device_leases"
DEFAULT_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 0.5

logger = logging.getLogger(__name__)


class DeviceLeaseTimeout(TimeoutError):
    """Every device stayed leased to other processes for the whole timeout."""


@dataclass(frozen=True)
class LeasedDevice:
    """The device a process may use.

    ``index`` is the leased device index (``None``: no lease, there was no device);
    ``torch_device`` what to hand to torch: ``cuda:{index}``, or ``cpu`` when simulated or
    without devices.
    """

    index: int | None
    torch_device: str
    count: int
    folder: Path | None = None
    simulated: bool = False

    def describe(self) -> str:
        if self.index is None:
            return f"{self.torch_device} (no device to lease)"
        simulated = ", simulated" if self.simulated else ""
        return (
            f"{self.torch_device} (lease of device {self.index} of {self.count}{simulated}"
            f" in {self.folder})"
        )


def visible_devices() -> tuple[int, bool]:
    """``(N, simulated)``: ``DPL_SIMULATED_GPUS`` if set, else the GPUs torch sees."""
    raw = os.environ.get(SIMULATED_GPUS_ENV, "").strip()
    if raw:
        try:
            count = int(raw)
        except ValueError:
            count = -1
        if count < 0:
            raise ValueError(f"{SIMULATED_GPUS_ENV} must be a whole number >= 0, not {raw!r}")
        return count, True
    import torch

    return (torch.cuda.device_count() if torch.cuda.is_available() else 0), False


def default_lease_dir(instance_dir: str | Path | None = None) -> Path:
    """``DPL_DEVICE_LEASE_DIR``, else ``{instance dir}/device_leases``.

    The instance dir is ``instance_dir`` when given (the running Dagster instance's folder),
    else ``DAGSTER_HOME``, else the folder ``dpl`` uses for ``DPL_OUTPUT_DIR``.
    """
    override = os.environ.get(LEASE_DIR_ENV)
    if override:
        return Path(override).resolve()
    if instance_dir is None:
        from dpl_assets.settings import instance_dir_for, output_dir_from_env

        instance_dir = instance_dir_for(output_dir_from_env())  # DAGSTER_HOME first
    return Path(instance_dir).resolve() / LEASE_SUBDIR


def default_timeout() -> float:
    """``DPL_DEVICE_LEASE_TIMEOUT`` seconds, else 600."""
    raw = os.environ.get(LEASE_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise ValueError(f"{LEASE_TIMEOUT_ENV} must be seconds >= 0 or 'inf', not {raw!r}")
    return value


def lock_path(folder: Path, index: int) -> Path:
    return folder / f"device-{index}.lock"


def _holder(folder: Path, index: int) -> str:
    """What the holder of ``index`` wrote in its lock file (advisory, for messages)."""
    try:
        text = lock_path(folder, index).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return f"{index}: {text or 'unknown holder'}"


def _write_holder_note(fd: int) -> None:
    """Say who holds a lease in its lock file (advisory, for other processes' messages)."""
    with contextlib.suppress(OSError):
        note = (
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{datetime.now(UTC).isoformat(timespec='seconds')}\n"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)


class DeviceLease:
    """A lease of one of ``count`` device indices, by lock files in ``folder``.

    ``with DeviceLease(3, folder) as device: ...`` (``device`` is a :class:`LeasedDevice`),
    or :meth:`acquire` / :meth:`release`. ``count == 0`` leases nothing and gives ``cpu``.
    ``simulated`` hands out ``cpu`` for every index. Waits up to ``timeout`` seconds (``None``
    or ``inf``: for ever) for a free index, trying every ``poll_interval`` seconds.

    One lease is one lock: two leases in the same process get two different indices, and a
    lease inherited by a forked child is not held in the child (the parent keeps it).
    """

    def __init__(
        self,
        count: int,
        folder: str | Path,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        simulated: bool = False,
    ) -> None:
        if count < 0:
            raise ValueError(f"device count must be >= 0, not {count}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, not {poll_interval}")
        self.count = count
        self.folder = Path(folder)
        self.timeout = math.inf if timeout is None else timeout
        self.poll_interval = poll_interval
        self.simulated = simulated
        self._lock: UnixFileLock | None = None
        self._device: LeasedDevice | None = None
        self._pid = os.getpid()

    @property
    def device(self) -> LeasedDevice | None:
        """The leased device, or ``None`` when not held."""
        return self._device if self.held else None

    @property
    def held(self) -> bool:
        return self._device is not None and self._pid == os.getpid()

    def _try_index(self, index: int) -> UnixFileLock | None:
        """The held lock of ``index``, or ``None`` when another lease has it."""
        lock = UnixFileLock(
            lock_path(self.folder, index),
            mode=0o666,  # another account sharing the folder can lock it too
            thread_local=False,  # any thread may release the process's lease
            fallback_to_soft=False,  # without flock a killed holder would keep its lease
            on_acquired=_write_holder_note,
        )
        try:
            lock.acquire(blocking=False)
        except Timeout:
            return None
        return lock

    def acquire(self) -> LeasedDevice:
        """Lease a free index (or return the one held); raise DeviceLeaseTimeout if none."""
        if self.held:
            assert self._device is not None
            return self._device
        if self.count == 0:
            self._device = LeasedDevice(None, "cpu", 0, None, self.simulated)
            self._pid = os.getpid()
            return self._device
        self.folder.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        waited_notice = False
        while True:
            for index in range(self.count):
                lock = self._try_index(index)
                if lock is not None:
                    self._lock, self._pid = lock, os.getpid()
                    torch_device = "cpu" if self.simulated else f"cuda:{index}"
                    self._device = LeasedDevice(
                        index, torch_device, self.count, self.folder, self.simulated
                    )
                    logger.info("leased %s", self._device.describe())
                    return self._device
            waited = time.monotonic() - start
            if waited >= self.timeout:
                holders = "; ".join(_holder(self.folder, i) for i in range(self.count))
                raise DeviceLeaseTimeout(
                    f"no free device after {waited:.0f} s: all {self.count} device leases in "
                    f"{self.folder} are held ({holders}). Each process holds one device for "
                    f"its lifetime; run fewer GPU processes at once (the 'gpu' pool: "
                    f"`dagster instance concurrency set gpu {self.count}`), or wait longer "
                    f"({LEASE_TIMEOUT_ENV}, seconds or 'inf')."
                )
            if not waited_notice:
                logger.info(
                    "all %d device leases in %s are held; waiting up to %s s",
                    self.count,
                    self.folder,
                    self.timeout,
                )
                waited_notice = True
            time.sleep(min(self.poll_interval, max(self.timeout - waited, 0.0)))

    def release(self) -> None:
        """Give the index back (a forked child has nothing to give: the lease is the parent's)."""
        lock, self._lock, self._device = self._lock, None, None
        if lock is not None and self._pid == os.getpid():
            lock.release()

    def __enter__(self) -> LeasedDevice:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


_process_lock = threading.Lock()
_process_leases: dict[Path, DeviceLease] = {}


def _after_fork_in_child() -> None:
    global _process_lock
    _process_lock = threading.Lock()  # another thread may have held it at the fork
    _process_leases.clear()  # the parent's (filelock closed the child's copies of their files)


os.register_at_fork(after_in_child=_after_fork_in_child)


def acquire_device(
    folder: str | Path | None = None,
    *,
    count: int | None = None,
    timeout: float | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> LeasedDevice:
    """This process's device: leased on the first call, the same one for the process's life.

    ``folder``: the lease folder (default :func:`default_lease_dir`); ``count``: devices to
    lease from (default :func:`visible_devices`); ``timeout``: seconds to wait for a free
    device (default :func:`default_timeout`). The device is ``cpu`` whenever
    ``DPL_SIMULATED_GPUS`` is set. Thread-safe; a forked child leases its own.
    """
    if count is None:
        count, simulated = visible_devices()
    else:
        simulated = bool(os.environ.get(SIMULATED_GPUS_ENV, "").strip())
    if count == 0:
        return LeasedDevice(None, "cpu", 0, None, simulated)
    lease_dir = Path(folder).resolve() if folder is not None else default_lease_dir()
    with _process_lock:
        lease = _process_leases.get(lease_dir)
        if lease is None or not lease.held:
            lease = DeviceLease(
                count,
                lease_dir,
                timeout=default_timeout() if timeout is None else timeout,
                poll_interval=poll_interval,
                simulated=simulated,
            )
            lease.acquire()
            _process_leases[lease_dir] = lease
        device = lease.device
        assert device is not None
        return device


def release_process_devices() -> None:
    """Give back this process's leases (they go anyway when the process ends)."""
    with _process_lock:
        for lease in _process_leases.values():
            lease.release()
        _process_leases.clear()
