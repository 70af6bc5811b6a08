"""The node boundary: what one video's computation reads and where it writes.

A node's per-video function gets a :class:`VideoIO`. It is a mapping of the node's declared
inputs (loaded by the IO manager), and it also loads, through the same codec registry, the
inputs a node declares as optional or names in its config (the packers' ``datatypes``). It
locates the user's source media, hands out the staging path of a file output, and gives
the video's frame times by the one rule. Nodes never build storage paths or read the store.

Typed values, by storage format (:func:`dpl_assets.storage.formats.read_artifact`): arrays
for ``.npy`` datatypes, float32 (N,) samples at 16 kHz for ``wav``, dicts for JSON records,
:class:`~dpl_assets.storage.handles.ImageStackRef` for image stacks, a path for other files.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from dpl_assets import collector
from dpl_assets.datatypes import AUDIO_REFERENCE, FRAME_REFERENCE
from dpl_assets.media import timeline
from dpl_assets.media.frames import DECODE_RECIPE_ATTR, DecodeRecipe, VideoFrame
from dpl_assets.outcomes import InputRejected, Rejected
from dpl_assets.storage import frame_cache
from dpl_assets.storage.frame_cache import EntryWriter, KeptFrames
from dpl_assets.storage.store import ArtifactStore, MissingArtifactError


class UndeclaredInput(TypeError):
    """A node read a datatype its declaration does not name (a bug in the node: without
    the declaration, nothing makes that input exist before the node runs)."""


class UpstreamRejected(Exception):
    """An input the node reads was rejected for this video: the video's outcome is that
    same rejection."""

    def __init__(self, rejection: Rejected):
        super().__init__(rejection.reason)
        self.rejection = rejection


@dataclass(frozen=True)
class Reads:
    """What a node may read: the datatypes it declares (inputs, optional inputs, and those
    its config names); reading another raises :class:`UndeclaredInput`."""

    node: str
    keys: frozenset[str]


class StepTools:
    """What a step's videos share: the node's device (resolved on first use, so a step
    whose videos are all done leases no GPU) and its models (one per worker thread, made
    on first use: models are not thread-safe; :meth:`close` closes them)."""

    def __init__(
        self,
        device: Callable[[], str] | None = None,
        model: Callable[[Callable[[], str]], Any] | None = None,
    ):
        self._resolve_device, self._new_model = device, model
        self._device: str | None = None
        self._per_thread = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()
        self.model_seconds = 0.0
        """Wall seconds spent making models (imports and loads included), over threads."""

    @property
    def device(self) -> str:
        """The torch device the node runs on (``cpu``, ``cuda:N``)."""
        with self._lock:
            if self._device is None:
                self._device = self._resolve_device() if self._resolve_device else "cpu"
            return self._device

    def model(self) -> Any:
        """This thread's model (made by the node's ``model`` factory, which may ask for the
        device)."""
        if self._new_model is None:
            raise TypeError("this node declares no model")
        if not hasattr(self._per_thread, "model"):
            started = time.perf_counter()
            # Outside dpl run's preload (UI, sensor, Celery runs) a first model imports
            # its libraries: without collections (dpl_assets.collector)
            with collector.paused():
                self._per_thread.model = self._new_model(lambda: self.device)
            with self._lock:
                self._opened.append(self._per_thread.model)
                self.model_seconds += time.perf_counter() - started
        return self._per_thread.model

    def close(self) -> None:
        """Close every model made (those with a ``close`` method)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for model in opened:
            close = getattr(model, "close", None)
            if callable(close):
                close()


class VideoIO(Mapping[str, Any]):
    """One video at the node boundary (see the module docstring).

    ``io[key]``: an input the node declares (loaded on first use unless the IO manager
    loaded it; a rejection of it raises :class:`UpstreamRejected`, a missing one
    :class:`~dpl_assets.storage.store.MissingArtifactError`, an undeclared one
    :class:`UndeclaredInput`). Iterating gives the inputs the IO manager loaded.
    """

    def __init__(
        self,
        store: ArtifactStore,
        video_id: str,
        declared: Mapping[str, Any],
        tools: StepTools | None = None,
        reads: Reads | None = None,
        run_id: str = "",
        frames_read_later: bool = False,
    ):
        self._store, self.video_id = store, video_id
        self._declared = dict(declared)
        self._loaded: dict[str, Any] = {}
        self._tools = tools or StepTools()
        self._reads = reads
        self._run_id, self._frames_read_later = run_id, frames_read_later

    def _check_declared(self, key: str) -> None:
        if self._reads is not None and key not in self._reads.keys:
            raise UndeclaredInput(
                f"{self._reads.node} reads {key!r} but does not declare it: add it to the "
                "node's inputs or optional_inputs"
            )

    @property
    def device(self) -> str:
        """The torch device of the step (the node's ``device`` param, else the resource)."""
        return self._tools.device

    @property
    def model(self) -> Any:
        """The node's model for this thread (see :class:`StepTools`)."""
        return self._tools.model()

    def __getitem__(self, key: str) -> Any:
        if key in self._declared:
            return self._declared[key]
        self._check_declared(key)
        if key not in self._loaded:
            value = self._store.load(key, self.video_id)
            if isinstance(value, Rejected):
                raise UpstreamRejected(value)
            self._loaded[key] = value
        return self._loaded[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._declared)

    def __len__(self) -> int:
        return len(self._declared)

    @contextlib.contextmanager
    def frames(self, key: str) -> Iterator[Iterator[np.ndarray]]:
        """The frames of the image-stack input ``key`` as RGB uint8 (H, W, 3), in order:
        ``with io.frames(key) as frames: for rgb in frames: ...``.

        When the stack is this pipeline's own decode of the registered video (it carries
        its :class:`~dpl_assets.media.frames.DecodeRecipe`, the inputs do not give the
        stack, and the video decoded cleanly), the video is decoded again by that recipe:
        the same frames at the same times, without the JPEG loss, and several times faster
        than decoding the stored JPEGs; or, when the step that made the stack kept what it
        decoded for this run (:mod:`dpl_assets.storage.frame_cache`), those frames are read
        back instead of decoding. Otherwise (the user's stacks, damaged videos, crops,
        renders) the stored images are decoded. Raises :class:`StackMismatch` naming the
        video when it now decodes to other frames (count or times) than the stack holds.
        """
        stack_ref = self[key]
        attrs = stack_ref.attrs
        recipe_json = attrs.get(DECODE_RECIPE_ATTR)
        video = self.sources.get("video")
        if recipe_json is None or video is None or attrs.get("decode_errors") or self.given(key):
            with stack_ref.open() as stack:
                yield iter(stack)
            return
        recipe = DecodeRecipe.from_json(str(recipe_json))
        cache = frame_cache.process_cache()
        kept = cache.frames(Path(video), recipe, self._run_id) if cache is not None else None
        decoded: KeptFrames | Generator[VideoFrame, None, None] = (
            kept if kept is not None else recipe.frames(video)
        )
        frames = _same_as_stack(decoded, stack_ref.timestamps, f"{video} ({key})")
        try:
            yield frames
        finally:  # the decoder or the kept frames' file, also when the node stops early
            frames.close()
            decoded.close()

    @contextlib.contextmanager
    def keep_decoded(self, video: Path, recipe: DecodeRecipe) -> Iterator[EntryWriter | None]:
        """Where a node that decodes ``video`` by ``recipe`` also keeps the frames for the
        steps after it in this run (:mod:`dpl_assets.storage.frame_cache`), or None when
        no later step of the run reads this step's outputs or keeping is off:
        ``with io.keep_decoded(video, recipe) as keep: ... keep.add(frame)``."""
        cache = frame_cache.process_cache() if self._frames_read_later and self._run_id else None
        if cache is None:
            yield None
            return
        expected = frame_cache.estimated_bytes(video, recipe)
        with cache.writer(video, recipe, self._run_id, expected) as writer:
            yield writer

    def optional(self, key: str) -> Any | None:
        """The input ``key``, or None when it is not produced or rejected for this video."""
        try:
            return self[key]
        except (MissingArtifactError, UpstreamRejected):
            return None

    def given(self, key: str) -> bool:
        """Whether the user's inputs give this video's ``key`` (a root of their own files)."""
        self._check_declared(key)
        return self._store.user_source(key, self.video_id) is not None

    def source(self, kind: str) -> Path:
        """The user's ``kind`` source file (``video``, ``aac``); rejects the video when the
        inputs gave none for it."""
        source = self._store.catalog.entry(self.video_id).sources.get(kind)
        if source is None:
            raise InputRejected(
                f"{self.video_id}: no {kind!r} file found for this video "
                f"(give an {kind!r} root in the inputs with the same relative path)"
            )
        return Path(source)

    @property
    def sources(self) -> dict[str, str]:
        """Every source file the inputs gave for this video, by kind (``video``, ``aac``...)."""
        return dict(self._store.catalog.entry(self.video_id).sources)

    @property
    def primary_source(self) -> str:
        """The video's registered source file (what reasons and file attributes name)."""
        return str(self._store.catalog.entry(self.video_id).primary_source)

    def file_of(self, key: str) -> Path | None:
        """The file holding the video's ``key`` (the user's, else ours), None if neither;
        for naming it in a reason or handing it to a library that reads files."""
        self._check_declared(key)
        return self._store.existing_file(key, self.video_id)

    def stage(self, key: str) -> Path:
        """Where this node writes its ``key`` file for this video before it is moved into
        place (return it as a :class:`~dpl_assets.outcomes.StagedFile`)."""
        return self._store.staging_path(key, self.video_id)

    def record_damage(self, key: str, spans: Sequence[Sequence[float]], summary: str) -> None:
        """Record (start_s, end_s) ``spans`` of ``key`` that did not decode (the report's)."""
        self._store.record_damage(key, self.video_id, [list(s) for s in spans], summary)

    def audio_gaps(self) -> list[list[float]]:
        """(start_s, end_s) spans where the source audio did not decode (silence in the
        wav): empty for clean audio or a user's wav."""
        if self.given(AUDIO_REFERENCE):
            return []
        record = self._store.damage(AUDIO_REFERENCE, self.video_id)
        return [list(span) for span in record["spans"]] if record else []

    def wav_samples(self) -> int | None:
        """Length of the video's wav in samples (where its audio ends), None without one;
        an unreadable wav rejects the video."""
        path = self.file_of(AUDIO_REFERENCE)
        if path is None:
            return None
        try:
            return int(soundfile.info(str(path)).frames)
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise InputRejected(f"unreadable wav {path.name}: {error}") from error

    def stored_timestamps(self, stacks: Sequence[str], count: int | None = None) -> Any:
        """float64 (N,) timestamps of the first of the image stacks ``stacks`` the video has
        (the first with ``count`` frames, when given and one has); None when it has none."""
        found = None
        for key in stacks:
            ref = self.optional(key) if self.file_of(key) is not None else None
            if ref is None:
                continue
            if count is None or len(ref) == count:
                return ref.timestamps
            found = ref.timestamps if found is None else found
        return found

    def frame_times(
        self,
        count: int,
        fps: float | None = None,
        stacks: Sequence[str] = (FRAME_REFERENCE,),
        *,
        assume_fps: float | None = None,
    ) -> np.ndarray:
        """float64 (count,) seconds of ``count`` frames of this video, by the one rule
        (:func:`~dpl_assets.media.timeline.frame_times_for`): ``i / fps``, else the
        timestamps of its ``stacks``, else ``i / assume_fps``. No frame times, or a count
        that disagrees, rejects the video with the reason."""
        timestamps = None if fps else self.stored_timestamps(stacks, count)
        try:
            return timeline.frame_times_for(timestamps, count, fps, assume_fps=assume_fps)
        except ValueError as error:
            raise InputRejected(str(error)) from error

    def rejection_reasons(self, keys: Sequence[str]) -> list[str]:
        """Every distinct reason this video was rejected for among ``keys``, where each
        originated first (:func:`dpl_assets.report.rejection_reasons`)."""
        from dpl_assets.report import rejection_reasons  # the report reads the store too

        return rejection_reasons(self._store, self.video_id, keys)


class StackMismatch(RuntimeError):
    """A video decodes to other frames than the image stack made from it (it changed after
    the stack was made): a failure of the step, not a property of the video."""


def _same_as_stack(
    frames: Iterator[VideoFrame], times: np.ndarray, name: str
) -> Generator[np.ndarray, None, None]:
    """The RGB of ``frames``, checked to be exactly the stack's frames: as many, at the
    stored ``times`` (seconds, within 1 us); :class:`StackMismatch` naming ``name`` if not."""
    count = 0
    for frame in frames:
        if count >= len(times) or abs(frame.time_s - float(times[count])) > 1e-6:
            break
        count += 1
        yield frame.rgb
    else:
        if count == len(times):
            return
    raise StackMismatch(
        f"{name}: the video decodes to other frames than its stack holds (frame {count} of "
        f"{len(times)}): the video changed after the stack was made; run again"
    )
