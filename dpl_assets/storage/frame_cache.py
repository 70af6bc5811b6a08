"""Decoded frames kept on a memory-backed file system between the steps of one process.

The ``images`` step decodes each video; the nodes after it (faces, crops, previews,
aligned crops) decode the same video again by the stack's recipe
(:meth:`dpl_assets.storage.video_io.VideoIO.frames`). When they run in the same process
shortly after (the steps of one run: ``dpl run``'s runs, a run worker, ``dagster asset
materialize``), reading the decoded RGB back costs ~0.3 ms a 640x480 frame against
~1.3-2.5 ms to decode it again (measured on the benchmark clips; ``benchmarks/README.md``).

What is kept: one entry per (video file, its size/mtime_ns/inode, decode recipe): the
frames' RGB uint8 back to back, their timestamps (float64 s) and their shape. An entry
becomes visible only when the whole video was written (renamed into place). A video
rewritten since (another size, mtime or inode) is not served its old frames; one rewritten
in place with its size and mtime kept is (as the stack it was decoded with would be).

Bounds: entries go to ``DPL_FRAME_CACHE_DIR`` (default ``/dev/shm``: tmpfs, so nothing is
written to disk; the pages are memory, though in no process's RSS) under a private folder
of this process; at most ``DPL_FRAME_CACHE_MB`` (default 2048, or an eighth of the
machine's memory when that is less; 0 turns keeping off) per process, and keeping stops
when the file system or the machine's (or the container's) memory has less than
:data:`FREE_RESERVE_BYTES` left (checked every 32 frames). A video that does not fit is
simply not kept (its readers decode it, as without the cache); nothing is evicted (an
earlier video is read later in the same run as much as a later one). Nothing the keeping
meets (a full file system, a folder removed) fails a step.

Frames are kept only for later steps of the same run in the same process (the code
location's in-process executor: not with ``multiprocess`` run config, Celery or
Kubernetes, where each step has a process of its own; see
``dpl_assets.assets.video_step.read_later_in_run``). What a process keeps is removed when
its run ends (:func:`clear`, called by ``dpl run`` after each run), when it keeps frames
for another run, and at process exit; folders of processes that died are removed when
a process opens the cache or clears it.
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

import numpy as np

from dpl_assets.media.frames import DecodeRecipe, VideoFrame, fitted_size
from dpl_assets.media.probe import probe_media
from dpl_assets.outcomes import InputRejected
from dpl_assets.processes import process_tag
from dpl_assets.settings import bytes_from_mb_env

CACHE_DIR_ENV = "DPL_FRAME_CACHE_DIR"
CACHE_MB_ENV = "DPL_FRAME_CACHE_MB"
DEFAULT_DIR = Path("/dev/shm")  # noqa: S108 (a private folder in it: see _private_folder)
DEFAULT_MB = 2048
FREE_RESERVE_BYTES = 512 * 2**20
"""Keeping stops when the cache's file system, or the machine's (or container's) memory,
has less than this left."""
_ROOM_CHECK_EVERY = 32  # frames between free space / memory checks (cheap, not free)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_log = logging.getLogger(__name__)


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
    def writer(
        self, video: Path, recipe: DecodeRecipe, run: str, expected_bytes: int | None = None
    ) -> Iterator[EntryWriter]:
        """Keep the frames ``add``-ed inside the block as ``video``'s decode by ``recipe``
        for the later steps of run ``run`` (its id): published when the block ends without
        an exception, dropped otherwise (and when they stop fitting: :attr:`EntryWriter.kept`
        turns False). ``expected_bytes`` (:func:`estimated_bytes`): a video that will not
        fit is not started (a long clip is not written up to the budget and then dropped)."""
        with self._lock:
            if run != self._run:
                shutil.rmtree(self.root, ignore_errors=True)
                self._used, self._run = 0, run
            hopeless = expected_bytes is not None and (
                self._used + expected_bytes > self.budget_bytes
            )
        entry = EntryWriter(self, self.root / _entry_name(video, recipe))
        if hopeless:
            entry.drop()
        try:
            yield entry
        except BaseException:
            entry.drop()
            raise
        entry.publish()

    def frames(self, video: Path, recipe: DecodeRecipe, run: str) -> KeptFrames | None:
        """``video``'s frames by ``recipe`` kept for run ``run`` (new arrays, in order;
        ``close()`` the iterator when it is not read to the end), or None when they are not
        kept (or the video's file changed since: another size, mtime or inode)."""
        with self._lock:
            if run != self._run:
                return None
        try:
            base = self.root / _entry_name(video, recipe)
            meta = json.loads(base.with_suffix(".json").read_text())
            shape = _Shape(int(meta["height"]), int(meta["width"]))
            times = np.asarray(meta["times"], np.float64).reshape(-1)
            data = open(base.with_suffix(".rgb"), "rb", buffering=0)  # noqa: SIM115 (KeptFrames)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if os.fstat(data.fileno()).st_size != shape.frame_bytes * times.size:
            data.close()
            return None
        return KeptFrames(data, shape, times)

    def private_root(self) -> Path:
        """:attr:`root`, made when missing (after :meth:`clear`, or removed by someone), and
        checked to be a folder only this user can enter; OSError when it is not (then
        nothing is kept: another user may have taken the name in a shared ``/dev/shm``)."""
        if _private_folder(self.root.parent) is None:
            raise OSError(f"{self.root.parent} is not a private folder")
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.root, 0o700)
        if not _is_private(os.lstat(self.root)):
            raise OSError(f"{self.root} is not a private folder")
        return self.root

    def clear(self) -> None:
        """Remove every kept frame of this process (no entry may be being written), and
        the folders of processes that died meanwhile (a killed worker's)."""
        with self._lock:
            shutil.rmtree(self.root, ignore_errors=True)
            self._used, self._run = 0, None
        _remove_dead(self.root.parent)


class KeptFrames(Iterator[VideoFrame]):
    """The kept frames of one video, read one at a time (made by :meth:`FrameCache.frames`)."""

    def __init__(self, data: io.FileIO, shape: _Shape, times: np.ndarray) -> None:
        self._data, self._shape, self._times = data, shape, times
        self._next = 0

    def __next__(self) -> VideoFrame:
        if self._next >= self._times.size:
            self.close()
            raise StopIteration
        rgb = np.empty((self._shape.height, self._shape.width, 3), np.uint8)
        view = rgb.reshape(-1).data
        done = 0
        while done < view.nbytes:
            got = self._data.readinto(view[done:])
            if not got:
                raise OSError(f"{self._data.name}: shorter than its frames")
            done += got
        self._next += 1
        return VideoFrame(float(self._times[self._next - 1]), rgb)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._data.close()


class EntryWriter:
    """One video's frames being kept (made by :meth:`FrameCache.writer`). Nothing it meets
    (a full file system, a folder gone) raises: the video is then simply not kept."""

    def __init__(self, cache: FrameCache, base: Path) -> None:
        self._cache, self._base = cache, base
        self._partial = base.with_name(f"{base.name}.{threading.get_ident()}.partial")
        self._fd: int | None = None
        self._shape: _Shape | None = None
        self._times: list[float] = []
        self._reserved = 0
        self.kept = True
        """False once a frame did not fit (budget, free space or memory, a change of frame
        size, a write that failed)."""

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
            if fits and self._fd is None:
                self._cache.private_root()
                # a new file of ours: never through a link someone put in its place
                self._fd = os.open(self._partial, _NEW_FILE, 0o600)
            if fits and len(self._times) % _ROOM_CHECK_EVERY == 0:
                fits = _room_left(self._partial)
            if fits:
                assert self._fd is not None
                _write_all(self._fd, np.ascontiguousarray(rgb).reshape(-1).data)
        except OSError:  # the file system filled up or went away: not kept, nothing lost
            fits = False
        if not fits:
            self.drop()
            return
        self._times.append(frame.time_s)

    def publish(self) -> None:
        """Make the kept frames visible to readers (or drop them when not all were kept)."""
        if not self.kept or self._fd is None or self._shape is None:
            self.drop()
            return
        meta = {"height": self._shape.height, "width": self._shape.width, "times": self._times}
        temp = self._partial.with_suffix(".json")
        try:
            os.close(self._fd)
            self._fd = None
            fd = os.open(temp, _NEW_FILE, 0o600)
            try:
                _write_all(fd, memoryview(json.dumps(meta).encode()))
            finally:
                os.close(fd)
            os.replace(temp, self._base.with_suffix(".json"))
            os.replace(self._partial, self._base.with_suffix(".rgb"))
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()
            self.drop()

    def drop(self) -> None:
        """Keep nothing of this video (idempotent)."""
        self.kept = False
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self._partial.unlink()
        self._cache._release(self._reserved)
        self._reserved = 0


def estimated_bytes(video: Path, recipe: DecodeRecipe) -> int | None:
    """The bytes ``video``'s frames by ``recipe`` will take, from its header (duration,
    frame rate, size), 5 % over; None when the header does not say."""
    try:
        stream = probe_media(video, read_rotation=False).chosen("video")
    except (InputRejected, OSError):
        return None
    if stream is None or not (stream.width and stream.height and stream.duration_s):
        return None
    fps = recipe.fps or stream.fps
    if not fps:
        return None
    width, height = fitted_size(stream.width, stream.height, recipe.max_side)
    return int(stream.duration_s * fps * 1.05) * width * height * 3


def _write_all(fd: int, data: memoryview) -> None:
    while data.nbytes:
        data = data[os.write(fd, data) :]


def memory_available() -> int | None:
    """Bytes of memory the machine can still give (``MemAvailable`` of ``/proc/meminfo``;
    less under a cgroup v2 ``memory.max``, a container's limit, which tmpfs pages count
    against); None when unknown."""
    available = None
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = room if available is None else min(available, room)
    return available


def _room_left(path: Path) -> bool:
    """Whether ``path``'s file system and the memory have :data:`FREE_RESERVE_BYTES` left."""
    stats = os.statvfs(path)
    if stats.f_bavail * stats.f_frsize < FREE_RESERVE_BYTES:
        return False
    memory = memory_available()
    return memory is None or memory >= FREE_RESERVE_BYTES


_lock = threading.Lock()
_cache: dict[int, FrameCache | None] = {}  # pid -> this process's cache (None: off)


def process_cache() -> FrameCache | None:
    """This process's cache, made on first use (and then folders of dead processes are
    removed); None when keeping is off (``DPL_FRAME_CACHE_MB`` 0, or not a whole number:
    a warning names it), or the cache's folder is missing or not private."""
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


def budget_from_env() -> int:
    """The per-process budget in bytes: ``DPL_FRAME_CACHE_MB`` (MB), else
    :func:`default_budget_bytes`. ValueError naming the variable when it is not a whole
    number >= 0 (``dpl run`` checks it before any work)."""
    given = bytes_from_mb_env(CACHE_MB_ENV)
    return default_budget_bytes() if given is None else given


def _open() -> FrameCache | None:
    try:
        budget = budget_from_env()
    except ValueError as error:  # keeping is a saving: a step goes on without it
        _log.warning("decoded frames are not kept between steps: %s", error)
        return None
    base = Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_DIR)
    tag = process_tag(os.getpid())
    if budget == 0 or not base.is_dir() or tag is None:
        return None
    parent = _private_folder(base / f"dpl-frames-{os.getuid()}")
    if parent is None:
        return None
    _remove_dead(parent)
    cache = FrameCache(parent / tag, budget)
    atexit.register(cache.clear)
    return cache


def _is_private(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _private_folder(path: Path) -> Path | None:
    """``path`` as a folder only this user can enter (made so when missing or ours but
    open to others), or None when it is something else: another user's, a link, not a
    folder (``/dev/shm`` is shared by every user)."""
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700, follow_symlinks=False)  # ours; a sticky /dev/shm: not swappable
            st = os.lstat(path)
    except OSError:
        st = None
    if st is None or not _is_private(st):
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
        if pid.isdigit() and process_tag(int(pid)) != name:
            shutil.rmtree(parent / name, ignore_errors=True)


def discard() -> None:
    """Remove what this process keeps at once, taking no lock (the process is about to end
    abruptly: :func:`dpl_assets.processes.exit_with_parent`; a writer may be mid-frame)."""
    cache = _cache.get(os.getpid())
    if cache is not None:
        shutil.rmtree(cache.root, ignore_errors=True)


def clear() -> None:
    """Remove what this process keeps (the end of a run: nothing reads it later)."""
    with _lock:
        cache = _cache.get(os.getpid())
    if cache is not None:
        cache.clear()
