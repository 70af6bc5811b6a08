"""Give freed heap memory back to the operating system between steps.

glibc keeps memory a process freed (small objects, and arrays under its adaptive mmap
threshold, up to 32 MB each) in its heaps for reuse, so a step's temporaries stay in the
process's RSS for every later step. :func:`release_free_heap` asks glibc to return what is
free (``malloc_trim(0)``); :func:`map_large_blocks` fixes the mmap threshold at
:data:`MMAP_THRESHOLD_BYTES`, so large arrays are mapped on their own and unmapped when
freed; :func:`temporaries_in_heap` lifts that policy around model forward passes, whose
many large temporaries would otherwise be mapped, faulted in and unmapped on every pass.
Elsewhere (other C libraries, macOS, Windows) all three do nothing.

Why a fixed threshold: glibc raises its threshold to the size of each mapped block freed
(up to 32 MB), after which arrays of a few MB (a clip's landmarks, its audio, a mesh block)
come from the heap, where a small live object next to them keeps their pages after they are
freed, and ``malloc_trim`` cannot return them. Measured on the default graph (a 640x360
clip, 0.2 vs 2 minutes): the process kept ~9 MB more per clip-minute between steps with the
adaptive threshold, ~3 MB with it fixed at 1 MB (and ~20 MB less at any length). Fixing it
also fixes glibc's trim threshold, at 128 kB unless set: :func:`map_large_blocks` sets
that to :data:`TRIM_THRESHOLD_BYTES`, and :func:`heap_blocks_below` lifts both around
calls that copy a large image each time (on the equal-work benchmark graph together:
0.84-1.6 M minor page faults a run -> ~0.7 M, counted apart from the benchmark).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import functools
import sys
import threading
from collections.abc import Callable, Iterator

MMAP_THRESHOLD_BYTES = 1 << 20
"""Blocks from this size up are mapped on their own (a 640x480 RGB frame, 0.9 MB, stays in
the heap; a 1080p one, 6.2 MB, costs ~0.4 ms more per allocation mapped)."""
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_M_TRIM_THRESHOLD = -1
TRIM_THRESHOLD_BYTES = 2 << 20
"""With the 1 MB policy, the heap's free top is given back only from this size up (glibc's
default, 128 kB, gives back a 640x480 frame's 0.9 MB each time one is freed at the top, so
the next frame's allocation takes fresh pages: a page fault and a zero fill per 4 kB
page, every frame). Small, because each thread's heap keeps its own free top:
:func:`heap_blocks_below` raises it inside its blocks. Between steps
:func:`release_free_heap` gives back everything free."""

TEMPORARIES_MMAP_THRESHOLD_BYTES = 64 << 20
"""Inside :func:`temporaries_in_heap`, only blocks from this size up are mapped (wav2vec
2.0's first convolution output on 10 s of audio is ~80 MB: it stays mapped)."""
TEMPORARIES_TRIM_THRESHOLD_BYTES = 1 << 30
"""... and the heap's free top is kept (not given back after each pass) up to this size."""

HEAP_BLOCKS_MAX_BYTES = TEMPORARIES_MMAP_THRESHOLD_BYTES
"""The largest size :func:`heap_blocks_below` asks for (larger requests are capped)."""

_scope_lock = threading.Lock()
_scope_depth = 0  # open temporaries_in_heap blocks
_heap_below: collections.Counter[int] = collections.Counter()  # size asked -> open blocks (> 0)
_thresholds = (MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)  # (mmap, trim) the blocks last set


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 - musl has no malloc_trim
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, None where there is none."""
    libc = _glibc()
    return None if libc is None else libc.malloc_trim


@functools.cache
def map_large_blocks() -> bool:
    """From now on, allocations of :data:`MMAP_THRESHOLD_BYTES` or more are mapped on their
    own and go back to the OS when freed (glibc's ``mallopt(M_MMAP_THRESHOLD)``, which also
    stops glibc raising the threshold itself), and the heap's free top is kept up to
    :data:`TRIM_THRESHOLD_BYTES` (``M_TRIM_THRESHOLD``), so arrays made and freed frame
    after frame reuse their pages. Once per process; True when it was set."""
    libc = _glibc()
    if libc is None or libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        return False
    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return True


def release_free_heap() -> None:
    """Return the process's free heap memory to the operating system (glibc only)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def temporaries_in_heap() -> Iterator[None]:
    """Within the block, blocks under :data:`TEMPORARIES_MMAP_THRESHOLD_BYTES` come from the
    heap and freed heap stays with the process, so a model's forward passes reuse the same
    memory for their temporaries instead of mapping, zero-filling and unmapping each one
    (wav2vec 2.0 base, 6 clips of 8 s, one thread: ~190,000 minor page faults and 0.42 s
    of system CPU a clip with 1 MB blocks mapped, ~12,000 and 0.03 s inside this block).
    Only where the 1 MB policy is in force (:func:`map_large_blocks` was called: steps
    call it); elsewhere glibc's own adaptive threshold already keeps such blocks in the
    heap, and the block changes nothing. On leaving the outermost block the 1 MB policy
    is restored and the free heap given back (:func:`release_free_heap`), so RSS between
    steps is as before. The peak inside is higher by what the heap cannot reuse
    (measured: 6 clips of 8 s, 1,111 vs 1,005 MB; 100 s in batches of 8 windows, 1,998
    vs 1,784 MB; a 32 MB threshold saved a third of the system CPU less for ~50 MB
    less). Nests, and is safe from several threads (the policy is restored when the last
    one leaves)."""
    with _heap_block(TEMPORARIES_MMAP_THRESHOLD_BYTES, temporaries=True):
        yield


@contextlib.contextmanager
def heap_blocks_below(size: int) -> Iterator[None]:
    """Within the block, blocks under ``size`` bytes (at least the 1 MB policy's) come from
    the heap: for a call that copies an image each time (mediapipe makes a packet of every
    image it is given), so the copy reuses the heap the previous call freed instead of
    mapping, zero-filling and unmapping fresh pages (the face step's tracking mesh on a
    ~640 px crop, 1.2 MB: ~300 minor page faults a frame mapped, ~0 in the heap). The
    thresholds are the process's: while a block is open, other threads' allocations under
    ``size`` come from the heap too. ``size`` is capped at :data:`HEAP_BLOCKS_MAX_BYTES`.
    Only where the 1 MB policy is in force, as :func:`temporaries_in_heap`;
    nests with it, and is safe from several threads: the largest size an open block asks
    for is in force, and the heap's free top is kept up to that size too (then given back
    from :data:`TRIM_THRESHOLD_BYTES` up again, and all of it between steps:
    :func:`release_free_heap`)."""
    if size <= MMAP_THRESHOLD_BYTES:
        yield
        return
    with _heap_block(min(size, HEAP_BLOCKS_MAX_BYTES)):
        yield


@contextlib.contextmanager
def _heap_block(size: int, temporaries: bool = False) -> Iterator[None]:
    """An open block asking for ``size`` (a :func:`temporaries_in_heap` block when
    ``temporaries``): counted, the thresholds set for every open block, and undone on
    leaving, also when interrupted; the last temporaries block to leave trims the heap."""
    global _scope_depth
    libc = _policy_libc()
    if libc is None:
        yield
        return
    entered = False
    try:
        with _scope_lock:
            _heap_below[size] += 1
            _scope_depth += temporaries
            entered = True
            _apply_thresholds(libc)
        yield
    finally:
        trim = False
        if entered:
            with _scope_lock:
                _heap_below[size] -= 1
                if not _heap_below[size]:
                    del _heap_below[size]
                _scope_depth -= temporaries
                _apply_thresholds(libc)
                trim = temporaries and not _scope_depth
        if trim:  # outside the lock: other threads' blocks need not wait for it
            libc.malloc_trim(0)


def _policy_libc() -> ctypes.CDLL | None:
    """glibc, when the 1 MB policy is in force (:func:`map_large_blocks` was called)."""
    libc = _glibc()
    if libc is None or not (map_large_blocks.cache_info().currsize and map_large_blocks()):
        return None
    return libc


def _apply_thresholds(libc: ctypes.CDLL) -> None:
    """Set glibc's mmap threshold to the largest size an open block asks for (the 1 MB
    policy's when none is open), and its trim threshold to that size too (at least
    :data:`TRIM_THRESHOLD_BYTES`; :data:`TEMPORARIES_TRIM_THRESHOLD_BYTES` while a
    :func:`temporaries_in_heap` block is open). Call with ``_scope_lock`` held."""
    global _thresholds
    wanted = max(_heap_below, default=0)
    mmap_bytes = max(wanted, MMAP_THRESHOLD_BYTES)
    trim_bytes = (
        TEMPORARIES_TRIM_THRESHOLD_BYTES if _scope_depth else max(wanted, TRIM_THRESHOLD_BYTES)
    )
    if (mmap_bytes, trim_bytes) != _thresholds:
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes)
        _thresholds = (mmap_bytes, trim_bytes)
