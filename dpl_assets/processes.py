"""Which process is which, and worker processes that end with the process that started them.

- :func:`process_tag`: a process's pid with its start time, so a pid the kernel gives to a
  new process later is not taken for the old one (folders of the frame cache, the
  ``dpl/process`` tag of ``dpl run``'s runs). Read from ``/proc`` (Linux; elsewhere None,
  and what relies on it does nothing).
- :func:`exit_with_parent`: a spawned worker whose parent was killed (SIGKILL, the OOM
  killer) otherwise goes on with the run it holds and then waits for work forever, keeping
  its models in memory (seen with ``dpl run --workers``: the worker outlived ``dpl`` by
  hours). Polling ``getppid`` is what works everywhere: the parent's death reparents the
  worker (to init or a subreaper), which changes it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

PARENT_POLL_S = 1.0
"""How often a worker looks whether its parent still runs (a ``getppid`` call)."""


def process_tag(pid: int) -> str | None:
    """``{pid}-{start time in clock ticks since boot}`` (``/proc/<pid>/stat``, field 22):
    a pid reused by a new process gets another tag. None when the process does not exist
    (or there is no ``/proc``)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return f"{pid}-{stat_line.rsplit(')', 1)[1].split()[19]}"


def host_process_tag(pid: int | None = None) -> str | None:
    """``{host name}/{process_tag}`` of ``pid`` (default: this process), for records that
    processes of several machines share (an instance on Postgres); None as
    :func:`process_tag`."""
    tag = process_tag(os.getpid() if pid is None else pid)
    return None if tag is None else f"{socket.gethostname()}/{tag}"


def is_gone(host_tag: str) -> bool:
    """Whether the process :func:`host_process_tag` named has ended: True only for a
    process of this machine that no longer runs (its pid free or reused); False for a
    running one, another machine's (unknowable from here) or a tag that is not one."""
    host, _, tag = host_tag.rpartition("/")
    pid, _, _ = tag.partition("-")
    if host != socket.gethostname() or not pid.isdigit() or process_tag(os.getpid()) is None:
        return False
    return process_tag(int(pid)) != tag


def exit_with_parent(before_exit: Callable[[], None], poll_s: float = PARENT_POLL_S) -> None:
    """End this process (``os._exit(1)``, no clean-up: as if killed with its parent) within
    ``poll_s`` of its parent's end, after calling ``before_exit`` (from a daemon thread;
    what it raises is ignored). Call once, early in the worker."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        try:
            before_exit()
        finally:
            os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
