"""Decoded frames kept on a memory-backed file system between the steps of one process.

The ``images`` step decodes each video; the nodes after it (faces, crops, previews,
aligned crops) decode the same video again by the stack's recipe
(:meth:`dpl_assets.storage.video_io.VideoIO.frames`). When they run in the same process
shortly after (the steps of one run: ``dpl run``'s runs, a run worker, ``dagster asset
materialize``), reading the decoded RGB back costs ~0.3 ms a 640x480 frame against
~1.3-2.5 ms to decode it again (measured on the benchmark clips; ``benchmarks/README.md``).

What is kept: one entry per (video file, its size/mtime/inode, decode recipe): the frames'
RGB uint8 back to back, their timestamps (float64 s) and their shape. An entry becomes
visible only when the whole video was written (renamed into place), and a reader still
checks every frame's time against the stack (``VideoIO.frames``), so a changed video is
never served stale frames.

Bounds: entries go to ``DPL_FRAME_CACHE_DIR`` (default ``/dev/shm``: tmpfs, so nothing is
written to disk and nothing counts in the process's RSS) under a folder of this process;
at most ``DPL_FRAME_CACHE_MB`` (default 2048, or an eighth of the machine's memory when
that is less; 0 turns keeping off) per process, and never
while the file system would have under :data:`FREE_RESERVE_BYTES` left. A video that does
not fit is simply not kept (its readers decode it, as without the cache); nothing is
evicted (an earlier video is read later in the same run as much as a later one).
Frames are kept only for later steps of the same run in the same process (the code
location's in-process executor: not with ``multiprocess`` run config, Celery or
Kubernetes, where each step has a process of its own; see
``dpl_assets.assets.video_step.read_later_in_run``). What a process keeps is removed when
its run ends (:func:`clear`, called by ``dpl run`` after each run), when it keeps frames
for another run, and at process exit; folders of processes that died are removed when
another process opens the cache.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from dpl_assets.media.frames import DecodeRecipe, VideoFrame

CACHE_DIR_ENV = "DPL_FRAME_CACHE_DIR"
CACHE_MB_ENV = "DPL_FRAME_CACHE_MB"
DEFAULT_DIR = Path("/dev/shm")  # noqa: S108 (a private folder in it: see _private_folder)
DEFAULT_MB = 2048
FREE_RESERVE_BYTES = 512 * 2**20
"""Stop keeping frames when the cache's file system would have less than this free."""
_log = logging.getLogger(__name__)
_FREE_CHECK_EVERY = 32  # frames between free-space checks (statvfs is cheap, not free)


def _process_tag(pid: int) -> str | None:
    """``{pid}-{start time in clock ticks}`` (``/proc/<pid>/stat``): a pid reused by a new
    process gets another tag. None when the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22 (starttime); the command name (field 2) may hold spaces: split after ')'
    return f"{pid}-{stat.rsplit(')', 1)[1].split()[19]}"


def _entry_name(video: Path, recipe: DecodeRecipe) -> str:
    st = video.stat()
    identity = json.dumps(
        [str(video.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, recipe.to_json()]
    )
    return hashlib.sha256(identity.encode()).hexdigest()


@dataclass(frozen=True)
class _Shape:
    height: int
    width: int

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width * 3


class FrameCache:
    """The frames this process keeps under ``root`` (see the module docstring); at most
    ``budget_bytes`` in all, of one Dagster run: the first frames kept for another run
    remove the earlier run's (nothing reads them once their run is over, and a process
    that runs one run after another, a notebook, a test session, keeps no more than the
    last one's). Thread-safe (a step decodes several videos at once)."""

    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self._used = 0
        self._run: str | None = None
        self._lock = threading.Lock()

    def _reserve(self, nbytes: int) -> bool:
        with self._lock:
            if self._used + nbytes > self.budget_bytes:
                return False
            self._used += nbytes
            return True

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._used = max(self._used - nbytes, 0)

    @property
    def used_bytes(self) -> int:
        """Bytes of frames this process keeps now (entries being written included)."""
        with self._lock:
            return self._used

    @contextlib.contextmanager
    def writer(self, video: Path, recipe: DecodeRecipe, run: str) -> Iterator[EntryWriter]:
        """Keep the frames ``add``-ed inside the block as ``video``'s decode by ``recipe``
        for the later steps of run ``run`` (its id): published when the block ends without
        an exception, dropped otherwise (and when they stop fitting: :attr:`EntryWriter.kept`
        turns False)."""
        with self._lock:
            if run != self._run:
                shutil.rmtree(self.root, ignore_errors=True)
                self._used, self._run = 0, run
        entry = EntryWriter(self, self.root / _entry_name(video, recipe))
        try:
            yield entry
        except BaseException:
            entry.drop()
            raise
        entry.publish()

    def frames(self, video: Path, recipe: DecodeRecipe, run: str) -> Iterator[VideoFrame] | None:
        """``video``'s frames by ``recipe`` kept for run ``run`` (new arrays, in order), or
        None when they are not kept (or the video's file changed since)."""
        with self._lock:
            if run != self._run:
                return None
        try:
            base = self.root / _entry_name(video, recipe)
            meta = json.loads(base.with_suffix(".json").read_text())
            data = open(base.with_suffix(".rgb"), "rb")  # noqa: SIM115 (closed by _read)
        except (OSError, ValueError):
            return None
        shape = _Shape(int(meta["height"]), int(meta["width"]))
        times = np.asarray(meta["times"], np.float64)
        if os.fstat(data.fileno()).st_size != shape.frame_bytes * times.size:
            data.close()
            return None
        return _read(data, shape, times)

    def clear(self) -> None:
        """Remove every kept frame of this process (no entry may be being written)."""
        with self._lock:
            shutil.rmtree(self.root, ignore_errors=True)
            self._used, self._run = 0, None


def _read(data: io.BufferedReader, shape: _Shape, times: np.ndarray) -> Iterator[VideoFrame]:
    with data:
        for time_s in times:
            rgb = np.empty((shape.height, shape.width, 3), np.uint8)
            if data.readinto(rgb.data) != shape.frame_bytes:
                raise OSError(f"{data.name}: shorter than its frames")
            yield VideoFrame(float(time_s), rgb)


class EntryWriter:
    """One video's frames being kept (made by :meth:`FrameCache.writer`)."""

    def __init__(self, cache: FrameCache, base: Path) -> None:
        self._cache, self._base = cache, base
        self._partial = base.with_name(f"{base.name}.{threading.get_ident()}.partial")
        self._file: BinaryIO | None = None
        self._shape: _Shape | None = None
        self._times: list[float] = []
        self._reserved = 0
        self.kept = True
        """False once a frame did not fit (budget, free space, a change of frame size)."""

    def add(self, frame: VideoFrame) -> None:
        """Keep ``frame`` (RGB uint8 (H, W, 3)) after the ones added before."""
        if not self.kept:
            return
        rgb = frame.rgb
        shape = _Shape(rgb.shape[0], rgb.shape[1])
        if self._shape is None:
            self._shape = shape
        fits = (
            shape == self._shape
            and rgb.dtype == np.uint8
            and rgb.ndim == 3
            and rgb.shape[2] == 3
            and self._cache._reserve(shape.frame_bytes)
        )
        if fits:
            self._reserved += shape.frame_bytes
        try:
            if fits and self._file is None:
                self._cache.root.mkdir(parents=True, exist_ok=True)
                self._file = open(self._partial, "wb")  # noqa: SIM115 (closed in publish/drop)
            if fits and len(self._times) % _FREE_CHECK_EVERY == 0:
                stats = os.statvfs(self._partial)
                fits = stats.f_bavail * stats.f_frsize >= FREE_RESERVE_BYTES
            if fits:
                assert self._file is not None
                self._file.write(np.ascontiguousarray(rgb).data)
        except OSError:  # the file system filled up or went away: not kept, nothing lost
            fits = False
        if not fits:
            self.drop()
            return
        self._times.append(frame.time_s)

    def publish(self) -> None:
        if not self.kept or self._file is None or self._shape is None:
            self.drop()
            return
        try:
            self._file.close()
            meta = {"height": self._shape.height, "width": self._shape.width,
                    "times": self._times}  # fmt: skip
            self._base.with_suffix(".json").write_text(json.dumps(meta))
            os.replace(self._partial, self._base.with_suffix(".rgb"))
        except OSError:
            self.drop()

    def drop(self) -> None:
        """Keep nothing of this video (idempotent)."""
        self.kept = False
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self._partial.unlink()
        self._cache._release(self._reserved)
        self._reserved = 0


_lock = threading.Lock()
_cache: dict[int, FrameCache | None] = {}  # pid -> this process's cache (None: off)


def process_cache() -> FrameCache | None:
    """This process's cache, made on first use (and then folders of dead processes are
    removed); None when ``DPL_FRAME_CACHE_MB`` is 0 or the cache's folder is missing.
    ValueError naming the variable when it is not a whole number >= 0."""
    pid = os.getpid()
    with _lock:
        if pid in _cache:  # keyed by pid: a forked child makes its own
            return _cache[pid]
        _cache[pid] = cache = _open()
        return cache


def default_budget_bytes() -> int:
    """:data:`DEFAULT_MB`, or an eighth of the machine's memory when that is less (an
    8 GB machine keeps at most 1 GB per process)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 0
    return min(DEFAULT_MB * 2**20, total // 8) if total > 0 else DEFAULT_MB * 2**20


def _open() -> FrameCache | None:
    text = os.environ.get(CACHE_MB_ENV) or str(default_budget_bytes() // 2**20)
    try:
        megabytes = int(text)
        if megabytes < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{CACHE_MB_ENV}={text!r}: give a whole number of MB >= 0") from None
    base = Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_DIR)
    tag = _process_tag(os.getpid())
    if megabytes == 0 or not base.is_dir() or tag is None:
        return None
    parent = _private_folder(base / f"dpl-frames-{os.getuid()}")
    if parent is None:
        return None
    _remove_dead(parent)
    cache = FrameCache(parent / tag, megabytes * 2**20)
    atexit.register(cache.clear)
    return cache


def _private_folder(path: Path) -> Path | None:
    """``path`` as a folder only this user can enter (made so when missing or ours but
    open to others), or None when it is something else: another user's, a link, not a
    folder (``/dev/shm`` is shared by every user)."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700)  # ours (a sticky /dev/shm: nobody else can swap it)
            st = os.lstat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        _log.warning("decoded frames are not kept between steps: %s is not a private folder", path)
        return None
    return path


def _remove_dead(parent: Path) -> None:
    """Remove the folders of processes that no longer run (killed before their exit)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid, _, _ = name.partition("-")
        if pid.isdigit() and _process_tag(int(pid)) != name:
            shutil.rmtree(parent / name, ignore_errors=True)


def clear() -> None:
    """Remove what this process keeps (the end of a run: nothing reads it later)."""
    with _lock:
        cache = _cache.get(os.getpid())
    if cache is not None:
        cache.clear()
