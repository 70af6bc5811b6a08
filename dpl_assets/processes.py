"""Which process is which, worker processes that end with the process that started them,
and crash tracebacks.

- :func:`process_tag`: a process's pid with its start time, so a pid the kernel gives to a
  new process later is not taken for the old one (folders of the frame cache, the
  ``dpl/process`` tag of ``dpl run``'s runs). Read from ``/proc`` (Linux; elsewhere None,
  and what relies on it does nothing).
- :func:`exit_with_parent`: a spawned worker whose parent was killed (SIGKILL, the OOM
  killer) otherwise goes on with the run it holds and then waits for work forever, keeping
  its models in memory (seen with ``dpl run --workers``: the worker outlived ``dpl``).
  Polling ``getppid`` works everywhere: the parent's death reparents the worker (to init or
  a subreaper), which changes it (``PR_SET_PDEATHSIG`` fires when the parent's *thread*
  that started the worker ends, which a pool's thread may do).
- :func:`show_native_crashes`: ``faulthandler`` on, so a crash in native code (HDF5,
  FFmpeg, mediapipe) prints where it happened.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PARENT_POLL_S = 1.0
"""How often a worker looks whether its parent still runs (a ``getppid`` call)."""
BEFORE_EXIT_LIMIT_S = 10.0
"""What a worker whose parent is gone gives its last words (a database write) before it
ends anyway."""

_crashes_shown = {"on": False}


def process_tag(pid: int) -> str | None:
    """``{pid}-{start time in clock ticks since boot}`` (``/proc/<pid>/stat``, field 22):
    a pid reused by a new process gets another tag. None when the process does not run: it
    does not exist, has ended and waits to be reaped (a zombie), or there is no ``/proc``
    (or this user may not see it: ``hidepid``)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat_line.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # ended: a zombie, or dead
        return None
    return f"{pid}-{fields[19]}"


def _machine() -> str | None:
    """This machine and PID namespace: ``{host name}:{boot id}:{PID namespace}``, so pids
    are compared only where they name the same processes (not across hosts, reboots, or
    containers sharing a host name); None where Linux does not say."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return None
    return f"{socket.gethostname()}:{boot}:{namespace}"


def host_process_tag(pid: int | None = None) -> str | None:
    """``{machine}/{process_tag}`` of ``pid`` (default: this process), for records that
    processes of several machines share (an instance on Postgres, an output dir on NFS);
    None as :func:`process_tag`, or where the machine cannot be told."""
    machine = _machine()
    tag = process_tag(os.getpid() if pid is None else pid)
    return None if machine is None or tag is None else f"{machine}/{tag}"


def is_gone(host_tag: str) -> bool:
    """Whether the process :func:`host_process_tag` named has ended: True only for a
    process of this machine, boot and PID namespace that no longer runs (its pid free,
    reused, or a zombie); False for a running one, one this user may not see, another
    machine's or namespace's (unknowable from here) or a tag that is not one."""
    machine, _, tag = host_tag.rpartition("/")
    pid, _, _ = tag.partition("-")
    if not pid.isdigit() or machine != _machine():
        return False
    if process_tag(int(pid)) == tag:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's (hidden by hidepid, or not ours to signal): unknowable
        return False
    return True  # it exists, as another process (the pid reused) or a zombie


def exit_with_parent(
    parent: int,
    before_exit: Callable[[], None],
    poll_s: float = PARENT_POLL_S,
    limit_s: float = BEFORE_EXIT_LIMIT_S,
) -> None:
    """End this process (``os._exit(1)``, no clean-up: as if killed with its parent) within
    ``poll_s`` of the end of ``parent`` (the pid of the process that started it, taken
    there: a worker may start up after its parent died), after one line on stderr and
    ``before_exit`` (from a daemon thread; what it raises is ignored; the process ends
    after ``limit_s`` even if it hangs). Call once, early in the worker."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        threading.Timer(limit_s, os._exit, (1,)).start()
        with contextlib.suppress(Exception):
            print(
                f"dpl worker {os.getpid()}: the process that started it ({parent}) is gone; "
                "stopping",
                file=sys.stderr,
                flush=True,
            )
            before_exit()
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def show_native_crashes() -> None:
    """Turn ``faulthandler`` on (to stderr): a fatal signal prints every thread's Python
    stack (what ``dpl`` and its workers do; see :func:`native_crashes_shown`)."""
    faulthandler.enable()
    _crashes_shown["on"] = True


def native_crashes_shown() -> bool:
    """Whether :func:`show_native_crashes` was called in this process (code that moves
    stderr re-points ``faulthandler`` then, and leaves a host's own setting alone else)."""
    return _crashes_shown["on"]
