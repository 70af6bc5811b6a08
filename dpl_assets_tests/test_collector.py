"""The garbage collector kept out of heavy imports (dpl_assets.collector), and where
``dpl run`` uses it: its workers' start-up and its own import of the graph's models."""

from __future__ import annotations

import gc
import multiprocessing
import subprocess
import sys
import threading
import time
from typing import Any, cast

import pytest

from dpl_assets import collector, interrupts, run_pool, threads
from dpl_assets.worker_pool import WorkerPool

# A module whose import makes ~300,000 container objects, as a large library's does, and
# notes how it was imported.
BULKY = """
import gc, threading
COLLECTOR_ON = gc.isenabled()
MAIN_THREAD = threading.current_thread() is threading.main_thread()
DATA = [[index] for index in range(300_000)]
"""


@pytest.fixture
def bulky(tmp_path, monkeypatch):
    """A fresh importable module name for :data:`BULKY` (removed from sys.modules after)."""
    name = f"bulky_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(BULKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def unfrozen():
    """Tests that freeze give the objects back to the collector afterwards."""
    yield
    gc.unfreeze()


def full_collections() -> int:
    return gc.get_stats()[2]["collections"]


def test_a_bulky_import_triggers_full_collections_but_not_through_import_modules(bulky, unfrozen):
    assert gc.isenabled()
    before = full_collections()
    (module,) = collector.import_modules([bulky])
    assert full_collections() == before  # none while it was imported
    assert module is sys.modules[bulky] and len(module.DATA) == 300_000
    assert module.COLLECTOR_ON is False and module.MAIN_THREAD is False
    assert gc.isenabled()  # back on
    # The reference: the same import with the collector on runs full collections.
    sys.modules.pop(bulky)
    before = full_collections()
    __import__(bulky)
    assert sys.modules[bulky].COLLECTOR_ON is True
    assert full_collections() > before


def test_freeze_moves_what_is_alive_out_of_later_collections(bulky, unfrozen):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    collector.import_modules([bulky], freeze=True)
    assert gc.get_freeze_count() >= 300_000  # the module's lists among them
    assert gc.isenabled()
    collector.import_modules([bulky], freeze=True)  # imported already: nothing to do


def test_pauses_nest_across_threads_and_keep_a_collector_that_was_off():
    assert gc.isenabled()
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with collector.paused():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with collector.paused():
        thread.start()
        entered.wait(10)
    assert not gc.isenabled()  # the other thread's pause still holds
    leave.set()
    thread.join()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()


def test_an_import_error_is_raised_in_the_caller(tmp_path, monkeypatch):
    (tmp_path / "raises_on_import.py").write_text("raise ValueError('broken module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError):
        collector.import_modules(["no_such_module_here"])
    with pytest.raises(ValueError, match="broken module"):
        collector.import_modules(["raises_on_import"])
    assert gc.isenabled()
    sys.modules.pop("raises_on_import", None)


def test_the_dpl_process_imports_the_models_first_with_the_collector_off(bulky, unfrozen):
    threads.use(1)
    try:
        run_pool._preload(1, [bulky])
        assert sys.modules[bulky].COLLECTOR_ON is False
        # one that does not import is left to the step that needs it: no error here
        run_pool._preload(1, ["no_such_module_here"])
    finally:
        threads.use(None)
    assert gc.isenabled() and not interrupts.requested()


def test_the_dpl_process_imports_no_model_when_it_has_no_run_to_execute(bulky):
    ended = run_pool.run_all(
        [], defs=cast(Any, None), instance=cast(Any, None), run_config={},
        on_ended=lambda run: None, preload=[bulky],
    )  # fmt: skip
    assert ended == [] and bulky not in sys.modules  # a rerun with nothing new stays fast


CTRL_C_DURING_PRELOAD = """
import gc, os, signal, sys, threading, time
from typing import Any
from dpl_assets import interrupts, run_pool
sys.path.insert(0, sys.argv[1])
signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's Ctrl-C, whatever
# this test's own parent ignores (a background job of a script ignores SIGINT)
# Ctrl-C while the dpl process waits for the import of the graph's models (slow_import
# takes 2 s): it reaches the main thread in its wait.
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
run = run_pool.RangeRun("job", ["asset"], "v1 ... v2")
started = time.perf_counter()
ended = run_pool.run_all([run], defs=None, instance=None, run_config={},
                         on_ended=lambda run: None, preload=["slow_import"])
print(ended, interrupts.requested(), gc.isenabled(), time.perf_counter() - started < 10)
"""


def test_ctrl_c_while_the_dpl_process_imports_the_models_starts_no_run(tmp_path):
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(2)\n")
    # Before: the loop waiting for runs never ended (100 % of a core, for good).
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_DURING_PRELOAD, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "True", "True", "True"]  # no run, collector on


def test_a_module_another_thread_is_importing_is_returned_once_imported(tmp_path, monkeypatch):
    (tmp_path / "slow_ready.py").write_text("import time\ntime.sleep(1)\nREADY = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    other = threading.Thread(target=__import__, args=("slow_ready",))
    try:
        other.start()
        time.sleep(0.3)  # in sys.modules now, not yet run to its end
        assert "slow_ready" in sys.modules
        (module,) = collector.import_modules(["slow_ready"])
        assert module.READY is True
    finally:
        other.join()
        sys.modules.pop("slow_ready", None)


def _imported_how(name: str) -> tuple[bool, bool, int]:
    """In a worker: whether ``name`` was imported with the collector on, whether it is on
    now, and how many objects are frozen."""
    return sys.modules[name].COLLECTOR_ON, gc.isenabled(), gc.get_freeze_count()


def test_workers_import_dagster_and_the_models_with_the_collector_off(bulky):
    pool = WorkerPool(1)
    try:
        pool.configure(thread_budget=1, preload=[bulky])
        found = pool.executor.submit(_imported_how, bulky).result(timeout=300)
        assert found[:2] == (False, True)
        assert found[2] > 300_000  # Dagster, the nodes and the module's objects: frozen
    finally:
        pool.close()
    assert multiprocessing.active_children() == []
