"""Give freed heap memory back to the operating system between steps.

glibc keeps memory a process freed (small objects, and arrays under its adaptive mmap
threshold, up to 32 MB each) in its heaps for reuse, so a step's temporaries stay in the
process's RSS for every later step. :func:`release_free_heap` asks glibc to return what is
free (``malloc_trim(0)``); elsewhere (other C libraries, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_free_heap() -> None:
    """Return the process's free heap memory to the operating system (glibc only)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
