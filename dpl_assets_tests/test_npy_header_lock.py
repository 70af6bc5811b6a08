"""numpy's .npy header parser runs under one lock once dpl_assets is imported: threads at
different stack depths parsing at once would otherwise hit CPython 3.11's
"AST constructor recursion depth mismatch" (the RACE script without the guard raised it in
3 runs of 3 here; not asserted, being a race)."""

import io
import threading

import numpy as np

import dpl_assets  # noqa: F401 - installs the lock
from dpl_assets import npy_header_lock
from dpl_assets_tests.fresh_python import script_output

# Threads at different stack depths evaluate a long literal while finalizers of cyclic
# garbage hand the GIL over mid-conversion; prints how many SystemErrors were raised.
RACE = """
import ast, gc, sys, threading, time
if sys.argv[1] == "guarded":
    import dpl_assets
import numpy.lib.format as npy_format

class Cycle:
    def __init__(self): self.me = self
    def __del__(self): time.sleep(0)  # lets another thread run

source = "{" + ", ".join(f"'k{i}': ({i}, {i + 1}, 'x')" for i in range(200)) + "}"
errors = []

def work(depth):
    if depth:
        return work(depth - 1)
    for _ in range(300):
        for _ in range(20):
            Cycle()
        try:
            npy_format.safe_eval(source)
        except SystemError:
            errors.append(1)

gc.set_threshold(50)
threads = [threading.Thread(target=work, args=(d,)) for d in (0, 5, 10, 15)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(errors))
"""


def _errors(mode: str) -> int:
    return int(script_output(RACE, mode).split()[-1])


def test_the_header_parser_is_guarded_and_loads_still_work():
    import numpy.lib.format as npy_format

    assert npy_header_lock.install()
    assert npy_format.safe_eval.__wrapped__ is not None  # our wrapper, numpy's inside
    buffer = io.BytesIO()
    np.save(buffer, np.arange(12, dtype=np.float32).reshape(3, 4))
    loaded_back = np.load(io.BytesIO(buffer.getvalue()))
    np.testing.assert_array_equal(loaded_back, np.arange(12).reshape(3, 4))
    # a thread holding the lock holds up a load in another thread until it lets go
    loaded = threading.Event()
    with npy_header_lock.HEADER_LOCK:
        worker = threading.Thread(
            target=lambda: (np.load(io.BytesIO(buffer.getvalue())), loaded.set())
        )
        worker.start()
        assert not loaded.wait(0.3)
    worker.join(5)
    assert loaded.is_set()


def test_concurrent_parses_raise_no_system_error():
    assert _errors("guarded") == 0
