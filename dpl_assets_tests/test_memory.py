"""release_free_heap: glibc's malloc_trim where there is one, nothing elsewhere."""

import sys

import numpy as np

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
