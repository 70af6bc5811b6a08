"""release_free_heap: glibc's malloc_trim where there is one, nothing elsewhere;
map_large_blocks: large arrays leave RSS when freed (a fresh process, RSS from /proc)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpl_assets import memory


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


# A fresh process: glibc's threshold starts at its default and adapts as blocks are freed.
FREED_ARRAY_SCRIPT = """
import re, sys
import numpy as np
from dpl_assets import memory

def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

if sys.argv[1] == "fixed":
    assert memory.map_large_blocks()
big = np.ones(20 << 20, np.uint8)  # mapped, then freed: glibc's threshold rises to 20 MB
del big
before = rss()
audio = np.ones(10 << 20, np.uint8)  # a clip's array of 10 MB, written, then freed
del audio
print(rss() - before)
"""


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only")
def test_with_large_blocks_mapped_a_freed_array_leaves_rss():
    def kept_after_free(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", FREED_ARRAY_SCRIPT, mode],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1],
        ).stdout  # fmt: skip
        return int(out.split()[-1])

    assert kept_after_free("fixed") < 1 << 20
    # The reference: glibc's adaptive threshold keeps the 10 MB in the heap, in RSS.
    assert kept_after_free("adaptive") > 8 << 20
