"""release_free_heap: glibc's malloc_trim where there is one, nothing elsewhere;
map_large_blocks: large arrays leave RSS when freed (a fresh process, RSS from /proc)."""

import sys

import numpy as np
import pytest

from dpl_assets import memory
from dpl_assets_tests.fresh_python import script_output


def test_release_free_heap_runs_and_keeps_live_data():
    kept = np.arange(1000)
    garbage = [np.ones(1000) for _ in range(100)]
    del garbage
    assert memory.release_free_heap() is None
    np.testing.assert_array_equal(kept, np.arange(1000))
    if not sys.platform.startswith("linux"):
        assert memory._malloc_trim() is None


def test_without_malloc_trim_it_does_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert memory.release_free_heap() is None


# The process's resident set size in bytes, for the scripts below (a fresh process each).
RSS_PRELUDE = """
import re
import numpy as np
from dpl_assets import memory

def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
"""


# A fresh process: glibc's threshold starts at its default and adapts as blocks are freed.
FREED_ARRAY_SCRIPT = (
    RSS_PRELUDE
    + """
import sys

if sys.argv[1] == "fixed":
    assert memory.map_large_blocks()
big = np.ones(20 << 20, np.uint8)  # mapped, then freed: glibc's threshold rises to 20 MB
del big
before = rss()
audio = np.ones(10 << 20, np.uint8)  # a clip's array of 10 MB, written, then freed
del audio
print(rss() - before)
"""
)


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only")
def test_with_large_blocks_mapped_a_freed_array_leaves_rss():
    def kept_after_free(mode: str) -> int:
        return int(script_output(FREED_ARRAY_SCRIPT, mode).split()[-1])

    assert kept_after_free("fixed") < 1 << 20
    # The reference: glibc's adaptive threshold keeps the 10 MB in the heap, in RSS.
    assert kept_after_free("adaptive") > 8 << 20


# glibc's mallinfo2 (hblkhd: bytes in blocks mapped on their own), for the scripts below.
MALLINFO2_PRELUDE = """
import ctypes
import numpy as np
from dpl_assets import memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped_on_its_own(size):
    before = libc.mallinfo2().hblkhd
    block = np.ones(size, np.uint8)
    return int(libc.mallinfo2().hblkhd - before >= size)
"""


# Where a 4 MB array lives (glibc's mallinfo2: bytes in blocks mapped on their own): mapped
# under the 1 MB policy, from the heap inside temporaries_in_heap (and reused there).
SCOPED_SCRIPT = (
    MALLINFO2_PRELUDE
    + RSS_PRELUDE
    + """

with memory.temporaries_in_heap():  # no 1 MB policy yet: glibc's own, left alone
    untouched = mapped_on_its_own(4 << 20)  # 4 MB is over glibc's starting threshold (128 kB)
assert memory.map_large_blocks()
outside = mapped_on_its_own(4 << 20)
with memory.temporaries_in_heap():
    inside = mapped_on_its_own(4 << 20)
    with memory.temporaries_in_heap():
        pass
    nested = mapped_on_its_own(4 << 20)  # the inner block's end did not restore the policy
after = mapped_on_its_own(4 << 20)  # the 1 MB policy is back
with memory.temporaries_in_heap():
    held = np.ones(10 << 20, np.uint8)  # live across the end of the block: kept
    freed = np.ones(10 << 20, np.uint8)
    freed += 1
    del freed
    before = rss()  # the freed 10 MB stays with the process inside the block ...
print(untouched, outside, inside, nested, after, int(held.sum()), before - rss())
"""
)


@pytest.mark.skipif(
    memory._glibc() is None or not hasattr(memory._glibc(), "mallinfo2"),
    reason="glibc 2.33 or later only (mallinfo2)",
)
def test_temporaries_in_heap_takes_blocks_from_the_heap_then_restores_the_policy():
    out = script_output(SCOPED_SCRIPT)
    untouched, outside, inside, nested, after, total, returned = (int(v) for v in out.split())
    assert (untouched, outside, inside, nested, after) == (1, 1, 0, 0, 1)
    assert total == 10 << 20  # live data made inside is intact after the block
    assert returned > 9 << 20  # ... and goes back to the OS when the block ends


def test_temporaries_in_heap_without_glibc_just_runs(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    with memory.temporaries_in_heap():
        value = sum(range(10))
    assert value == 45


# A 640x480 RGB frame's array (0.9 MB, under the 1 MB threshold: from the heap) made and
# freed frame after frame, as decoders and readers do: the minor page faults it costs.
FRAME_CHURN_SCRIPT = (
    RSS_PRELUDE
    + """
import resource

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

assert memory.map_large_blocks()
# Free chunks the imports left in the heap would serve the frame from the heap's middle,
# where glibc never trims: 64 frames held meanwhile take them up (a step holds arrays too).
held = [np.ones((480, 640, 3), np.uint8) for _ in range(64)]
memory.release_free_heap()
start, before = rss(), faults()
for _ in range(50):
    frame = np.ones((480, 640, 3), np.uint8)  # written in full, as a decoded frame
    del frame
churn = faults() - before
memory.release_free_heap()
print(churn, rss() - start)
"""
)


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only")
def test_frame_sized_arrays_reuse_their_pages_and_release_free_heap_returns_them():
    def churn() -> tuple[int, int]:
        faults, grown = script_output(FRAME_CHURN_SCRIPT).split()[-2:]
        return int(faults), int(grown)

    pages_per_frame = 480 * 640 * 3 // 4096  # 225
    faults, grown = churn()
    # The same pages, frame after frame. With glibc's own 128 kB trim threshold each frame
    # freed at the heap's top went back to the OS and the next faulted in fresh zero-filled
    # pages (9,682 faults here before the policy set it: ~190 a frame).
    assert faults < 5 * pages_per_frame
    assert grown < 1 << 20  # and the free heap they leave goes back between steps


# heap_blocks_below: where a 2 MB array lives inside and after blocks asking for 4 MB,
# nested with temporaries_in_heap, and from two threads at once.
HEAP_BELOW_SCRIPT = (
    MALLINFO2_PRELUDE
    + """
import threading

def mapped_apart(size=2 << 20):
    memory.release_free_heap()  # nothing free in the heap to serve it from
    return mapped_on_its_own(size)

def top_kept():
    # 3.6 MB freed at the heap's top (64 frames held first take up free chunks in its
    # middle): kept (1) or given back (0) by the trim threshold in force
    memory.release_free_heap()
    held = [np.ones(900_000, np.uint8) for _ in range(64)]
    frames = [np.ones(900_000, np.uint8) for _ in range(4)]
    del frames
    return int(libc.mallinfo2().keepcost >= 3 << 20)

with memory.heap_blocks_below(4 << 20):  # no 1 MB policy yet: glibc's own (128 kB at first)
    untouched = mapped_apart()
assert memory.map_large_blocks()
outside = mapped_apart()
trims = [top_kept()]
with memory.heap_blocks_below(4 << 20):
    trims.append(top_kept())
    inside = mapped_apart()
    larger = mapped_apart(8 << 20)  # over what the block asked for: mapped
    with memory.temporaries_in_heap():
        with_temporaries = mapped_apart(8 << 20)
        trims.append(top_kept())
    back_to_block = mapped_apart(8 << 20), mapped_apart()
after = mapped_apart()
trims.append(top_kept())
entered, leave = threading.Event(), threading.Event()
def hold():
    with memory.heap_blocks_below(16 << 20):
        entered.set()
        leave.wait()
thread = threading.Thread(target=hold)
thread.start()
entered.wait()
with memory.heap_blocks_below(4 << 20):
    other_thread_larger = mapped_apart(8 << 20)  # the other block's 16 MB is in force
leave.set()
thread.join()
print(untouched, outside, inside, larger, with_temporaries, *back_to_block, after,
      other_thread_larger, mapped_apart(), *trims)
"""
)


@pytest.mark.skipif(
    memory._glibc() is None or not hasattr(memory._glibc(), "mallinfo2"),
    reason="glibc 2.33 or later only (mallinfo2)",
)
def test_heap_blocks_below_lifts_the_policy_for_smaller_blocks_and_restores_it():
    values = [int(v) for v in script_output(HEAP_BELOW_SCRIPT).split()]
    untouched, outside, inside, larger, with_temporaries, *rest = values
    back_larger, back_small, after, other_thread_larger, at_end, *trims = rest
    assert untouched == 1  # glibc's own threshold is left alone
    assert (outside, inside, larger) == (1, 0, 1)
    assert with_temporaries == 0  # the larger of two open blocks is in force
    assert (back_larger, back_small) == (1, 0)  # and the inner one's end restored the outer
    assert after == 1  # the 1 MB policy again
    assert other_thread_larger == 0
    assert at_end == 1
    # The free top: given back at 2 MB with the policy alone, kept inside either block,
    # given back again after both
    assert trims == [0, 1, 1, 0]
