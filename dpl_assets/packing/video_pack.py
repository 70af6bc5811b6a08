"""One training file per video: images, frame-indexed arrays and audio features on frames.

Layout of a per-video pack (HDF5), every dataset indexed by frame (first axis N):

- ``timestamps``: float64 (N,), seconds (the frames' presentation times);
- one image dataset per image-stack key (``images``, ``crops``, ...), in the chosen layout
  (:mod:`dpl_assets.packing.layouts`: ``vlen`` needs no plugin; ``filter32019`` is the
  original tool's JPEG-filter layout);
- one gzip-compressed dataset per array key (``landmarks`` (N, 68, 2), ``bboxes`` (N, 4),
  ...), dtype as given;
- one float32 dataset per audio feature key (``wav2vec`` (N, D), ``volume`` (N,)),
  linearly resampled from 50 Hz steps onto the frame times, optionally smoothed; frames
  at or after the audio's end (:func:`dpl_assets.media.timeline.frames_with_audio`) hold
  silence (0), never the last audio step;
- ``audio_mask``: bool (N,), written whenever there are audio features: True where the
  frame lies before the audio's end (its audio values are real);
- ``face_mask`` (when given among the arrays): uint8 (N,) 1 detected, 2 interpolated,
  0 no face; ``face_mask`` and ``audio_mask`` have ``kind`` ``mask``, and every dataset
  whose values exist only where the audio does has ``valid_where = "audio_mask"``;
- file attributes ``video_id``, ``fps``, ``frame_count``, ``layout``, ``image_format``,
  ``jpeg_quality``, ``smooth_window``, ``image_keys``/``array_keys``/``audio_keys``,
  ``pack_version``, plus the caller's; each dataset has a ``kind`` attribute
  (``timestamps`` | ``images`` | ``array`` | ``audio`` | ``mask``), and an array whose
  datatype names its columns (``frame_quality``) has them as ``columns``.

Images are streamed from the source image stacks (a block of encoded frames in memory at a
time) and their bytes are copied as they are when the format and JPEG quality already
match, so the common case never decodes a frame. The file is written under a temp name and
renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from dpl_assets.datatypes import DATATYPES, get_datatype
from dpl_assets.media import timeline
from dpl_assets.packing.layouts import LAYOUTS, ImageDatasetReader, ImageDatasetWriter, open_images
from dpl_assets.packing.resample import (
    WAV2VEC_HOP_SAMPLES,
    WAV2VEC_WINDOW_SAMPLES,
    feature_times,
    moving_average,
    resample_to_frames,
)
from dpl_assets.storage.atomic import atomic_path
from dpl_assets.storage.disk_room import ensure_room
from dpl_assets.storage.image_codec import IMAGE_FORMATS
from dpl_assets.storage.image_stack import nominal_fps

PACK_VERSION = 1
TIMESTAMPS_KEY = "timestamps"
AUDIO_MASK_KEY = "audio_mask"
FACE_MASK_KEY = "face_mask"
MASK_KEYS = (FACE_MASK_KEY, AUDIO_MASK_KEY)
VALID_WHERE_ATTR = "valid_where"
"""Dataset attribute: the mask dataset whose True/non-zero frames hold real values."""
_ARRAY_CHUNK_BYTES = 64 * 1024  # gzip chunk size: a 16-frame window touches 1-2 chunks
_RESERVED_ATTRS = frozenset(
    {
        "video_id", "fps", "frame_count", "layout", "image_format", "jpeg_quality",
        "smooth_window", "image_keys", "array_keys", "audio_keys", "pack_version",
    }
)  # fmt: skip


@dataclass(frozen=True)
class PackOptions:
    """How a video is packed.

    ``image_format``: what image entries are stored as; ``jpeg_quality``: 1..100, used when
    frames are (re-)encoded as JPEG and recorded in the attributes; ``layout``: ``vlen``
    (plugin-free) or ``filter32019`` (the original tool's, JPEG only); ``smooth_window``:
    frames of the moving average applied to resampled audio features (0 or 1 = none; the
    original Vid2vidAudioNode used 16); ``audio_offset_s``: the audio-visual offset the
    audio features are moved by (AvSyncNode's, positive = audio late: frame ``i`` takes
    the audio at ``t_i + audio_offset_s``; :mod:`dpl_assets.packing.av_offset`).
    """

    image_format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = 95
    layout: Literal["vlen", "filter32019"] = "vlen"
    smooth_window: int = 0
    audio_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        if self.layout == "filter32019" and self.image_format != "jpeg":
            raise ValueError("the filter32019 layout stores JPEG only")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, not {self.jpeg_quality}")
        if self.smooth_window < 0:
            raise ValueError(f"smooth_window must be >= 0, not {self.smooth_window}")


@dataclass(frozen=True)
class PackSummary:
    """What :func:`pack_video` wrote.

    ``datasets``: key -> shape as read back (images as (N, H, W, 3) whatever the layout);
    ``bytes``: size of the file; ``copied``: image keys whose encoded frames were copied
    unchanged; ``reencoded``: image keys that were decoded and encoded again.
    """

    path: Path
    video_id: str
    frames: int
    datasets: Mapping[str, tuple[int, ...]]
    bytes: int
    copied: tuple[str, ...] = field(default=())
    reencoded: tuple[str, ...] = field(default=())


def pack_video(
    path: Path,
    *,
    video_id: str,
    frame_times: np.ndarray,
    image_stacks: Mapping[str, Path],
    arrays: Mapping[str, np.ndarray],
    audio_features: Mapping[str, np.ndarray],
    options: PackOptions,
    attrs: Mapping[str, Any] | None = None,
    audio_samples: int | None = None,
    audio_derived: tuple[str, ...] = (),
    audio_gaps: Sequence[Sequence[float]] = (),
) -> PackSummary:
    """Write one video's pack file at ``path`` (atomically) and return what it holds.

    ``frame_times``: (N,) seconds, non-decreasing, N >= 1: the frames every dataset is
    indexed by. ``image_stacks``: datatype key -> image-stack ``.h5`` file (as written by
    ``ImageStackWriter``; the dataset named by the key, or the file's only image dataset),
    N frames each. ``arrays``: key -> array with first axis N (numeric or bool).
    ``audio_features``: key -> (T, ...) at wav2vec's step rate (step ``t`` at
    ``feature_times(t)`` seconds on the frames' clock). ``attrs``: extra file attributes.
    ``audio_samples``: the wav's length in samples (16 kHz; where the audio ends on the
    clock); None: the least the audio features account for. ``audio_derived``: array keys
    computed from the audio features (marked ``valid_where = "audio_mask"``).
    ``audio_gaps``: (start_s, end_s) spans where the source's audio was damaged (silence
    in the wav): their frames get ``audio_mask`` False too.

    Every input is checked before anything is written: a length that disagrees with
    ``len(frame_times)`` raises ValueError naming the key, as do clashing or invalid keys.
    """
    if not isinstance(video_id, str) or not video_id:
        raise ValueError(f"video_id must be a non-empty string, not {video_id!r}")
    times = np.asarray(frame_times, dtype=np.float64)
    count = _check_frame_times(times)
    extra = dict(attrs or {})
    if clash := sorted(_RESERVED_ATTRS & set(extra)):
        raise ValueError(f"attrs {clash} are written by pack_video itself")
    frame_arrays, audio = _check_inputs(image_stacks, arrays, audio_features, count)
    audio_times = times + options.audio_offset_s  # where each frame's audio is heard
    with_audio = frames_audio_mask(audio_times, audio, audio_samples, audio_gaps) if audio else None

    # About the file's size (images copied, arrays at most their size): HDF5 does not
    # survive a full disk (dpl_assets.storage.disk_room), so the room is checked first.
    stack_bytes = sum(Path(stack).stat().st_size for stack in image_stacks.values())
    array_bytes = sum(
        np.asarray(value).nbytes for value in (*frame_arrays.values(), *audio.values())
    )
    ensure_room(path, stack_bytes + array_bytes)
    with contextlib.ExitStack() as sources:
        readers = _open_stacks(sources, image_stacks, count)
        with atomic_path(Path(path)) as temp, h5py.File(temp, "w") as out:
            stamps = out.create_dataset(TIMESTAMPS_KEY, data=times)
            stamps.attrs["kind"] = "timestamps"
            shapes: dict[str, tuple[int, ...]] = {TIMESTAMPS_KEY: (count,)}
            copied = _write_images(out, readers, options, shapes)
            # Datasets are written here, not in helpers: a dataset handle closed earlier
            # changes where HDF5 allocates what follows (same contents, other file bytes).
            for key, value in frame_arrays.items():
                dset = _write_array(out, key, value)
                dset.attrs["kind"] = "mask" if key in MASK_KEYS else "array"
                if key in DATATYPES and DATATYPES[key].columns:
                    dset.attrs["columns"] = list(DATATYPES[key].columns)
                if key in audio_derived:
                    dset.attrs[VALID_WHERE_ATTR] = AUDIO_MASK_KEY
                shapes[key] = value.shape
            for key, steps in audio.items():
                resampled = resample_audio_feature(
                    key, steps, audio_times, options.smooth_window, with_audio
                )
                dset = _write_array(out, key, resampled)
                dset.attrs.update(_audio_attrs(key, steps, options.smooth_window))
                shapes[key] = resampled.shape
            if with_audio is not None:
                mask = _write_array(out, AUDIO_MASK_KEY, with_audio)
                end_s = timeline.audio_end_s(audio_end_samples(audio, audio_samples))
                mask.attrs.update({"kind": "mask", "audio_end_s": end_s})
                if options.audio_offset_s:
                    mask.attrs["audio_offset_s"] = options.audio_offset_s
                shapes[AUDIO_MASK_KEY] = with_audio.shape
            keys = (readers.keys(), frame_arrays.keys(), audio.keys())
            out.attrs.update(_file_attrs(video_id, times, options, keys, extra))
    return PackSummary(
        path=Path(path),
        video_id=video_id,
        frames=count,
        datasets=shapes,
        bytes=Path(path).stat().st_size,
        copied=tuple(key for key in readers if key in copied),
        reencoded=tuple(key for key in readers if key not in copied),
    )


def _open_stacks(
    sources: contextlib.ExitStack, image_stacks: Mapping[str, Path], count: int
) -> dict[str, ImageDatasetReader]:
    """A reader per image-stack file (kept open by ``sources``), each of ``count`` frames."""
    readers: dict[str, ImageDatasetReader] = {}
    for key, stack_path in image_stacks.items():
        source = sources.enter_context(h5py.File(stack_path, "r"))
        readers[key] = open_images(_stack_dataset(source, key, Path(stack_path)))
        if len(readers[key]) != count:
            raise ValueError(
                f"{key}: image stack {stack_path} has {len(readers[key])} frames, "
                f"frame_times has {count}"
            )
    return readers


def _write_images(
    out: h5py.File,
    readers: Mapping[str, ImageDatasetReader],
    options: PackOptions,
    shapes: dict[str, tuple[int, ...]],
) -> set[str]:
    """Every stack into ``out``, shapes recorded; the keys whose bytes were copied."""
    copied: set[str] = set()
    for key, reader in readers.items():
        if _pack_images(reader, out, key, options):
            copied.add(key)
        shapes[key] = (len(reader), *reader.frame_shape)
    return copied


def _audio_attrs(key: str, steps: np.ndarray, smooth_window: int) -> dict[str, Any]:
    """The attributes of audio feature ``key`` resampled from ``steps`` (T, ...)."""
    return {
        "kind": "audio",
        "source_steps": steps.shape[0],
        "window_samples": _window_samples(key),
        "smooth_window": smooth_window,
        VALID_WHERE_ATTR: AUDIO_MASK_KEY,
    }


def _file_attrs(
    video_id: str,
    times: np.ndarray,
    options: PackOptions,
    keys: tuple[Iterable[str], Iterable[str], Iterable[str]],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A pack file's attributes; ``keys``: (image, array, audio) dataset keys."""
    image_keys, array_keys, audio_keys = keys
    return {
        "video_id": video_id,
        "fps": nominal_fps(times),
        "frame_count": int(times.size),
        "layout": options.layout,
        "image_format": options.image_format,
        "jpeg_quality": options.jpeg_quality,
        "smooth_window": options.smooth_window,
        "image_keys": _str_array(image_keys),
        "array_keys": _str_array(array_keys),
        "audio_keys": _str_array(audio_keys),
        "pack_version": PACK_VERSION,
        **extra,
    }


def _check_inputs(
    image_stacks: Mapping[str, Path],
    arrays: Mapping[str, np.ndarray],
    audio_features: Mapping[str, np.ndarray],
    count: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(frame arrays, audio features) as arrays, once keys, lengths and dtypes are valid."""
    _check_keys(image_stacks, arrays, audio_features)
    frame_arrays = {key: _check_array(key, value, count) for key, value in arrays.items()}
    audio = {key: _check_audio(key, value) for key, value in audio_features.items()}
    if audio and AUDIO_MASK_KEY in frame_arrays:
        raise ValueError(f"{AUDIO_MASK_KEY!r} is written by pack_video itself")
    return frame_arrays, audio


def _check_frame_times(times: np.ndarray) -> int:
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"frame_times must be (N,) with N >= 1, got {times.shape}")
    if not np.all(np.isfinite(times)):
        raise ValueError("frame_times must be finite")
    if np.any(np.diff(times) < 0):
        raise ValueError("frame_times must be non-decreasing")
    return int(times.size)


def _check_keys(*groups: Mapping[str, Any]) -> None:
    seen: set[str] = {TIMESTAMPS_KEY}
    for group in groups:
        for key in group:
            if not key or "/" in key or key == "." or "\x00" in key:
                raise ValueError(f"{key!r} is not a valid dataset name")
            if key in seen:
                raise ValueError(f"{key!r} is given twice (or clashes with {TIMESTAMPS_KEY!r})")
            seen.add(key)


def _check_array(key: str, value: np.ndarray, count: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] != count:
        raise ValueError(f"{key}: first axis has shape {array.shape}, frame_times has {count}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{key}: dtype {array.dtype} is not numeric")
    return array


def _check_audio(key: str, value: np.ndarray) -> np.ndarray:
    steps = np.asarray(value)
    if steps.ndim == 0 or steps.shape[0] == 0:
        raise ValueError(f"{key}: audio features {steps.shape} have no steps")
    if steps.dtype.kind not in "biuf":
        raise ValueError(f"{key}: dtype {steps.dtype} is not numeric")
    return steps


def _stack_dataset(source: h5py.File, key: str, path: Path) -> h5py.Dataset:
    """The image dataset of an image-stack file: the one named ``key``, else the only one."""
    if key in source and isinstance(source[key], h5py.Dataset):
        return source[key]
    names = [
        name
        for name, item in source.items()
        if isinstance(item, h5py.Dataset) and name != TIMESTAMPS_KEY
    ]
    if len(names) != 1:
        raise ValueError(f"{key}: {path} has no dataset {key!r} (datasets: {names})")
    return source[names[0]]


def _pack_images(
    reader: ImageDatasetReader, out: h5py.File, key: str, options: PackOptions
) -> bool:
    """Stream one stack into ``out[key]``; True when the bytes were copied, not re-encoded."""
    same_format = reader.format == options.image_format
    copy = same_format and (options.image_format == "png" or reader.quality == options.jpeg_quality)
    writer = ImageDatasetWriter(
        out, key, layout=options.layout, image_format=options.image_format,
        quality=options.jpeg_quality, frame_shape=reader.frame_shape,
    )  # fmt: skip
    frames = reader.iter_encoded() if copy else iter(reader)
    for frame in frames:
        writer.append(frame)
    writer.finish().attrs["kind"] = "images"
    return copy


def _write_array(out: h5py.File, key: str, array: np.ndarray) -> h5py.Dataset:
    if array.size == 0:
        return out.create_dataset(key, data=array)
    row_bytes = max(1, array.nbytes // array.shape[0])
    rows = int(np.clip(_ARRAY_CHUNK_BYTES // row_bytes, 1, array.shape[0]))
    # Chunks span whole rows (frames) so a window of frames decompresses 1-2 chunks;
    # shuffle groups bytes of equal significance, which helps gzip on floats.
    return out.create_dataset(
        key, data=array, chunks=(rows, *array.shape[1:]), compression="gzip",
        compression_opts=4, shuffle=True,
    )  # fmt: skip


def resample_audio_feature(
    key: str,
    steps: np.ndarray,
    frame_times: np.ndarray,
    smooth_window: int = 0,
    with_audio: np.ndarray | None = None,
) -> np.ndarray:
    """Audio feature ``key`` (T, ...) at wav2vec's step rate -> float32 (N, ...) on the
    frames at ``frame_times`` (N,) seconds, smoothed over ``smooth_window`` frames when > 1.

    ``with_audio`` (N,) bool: the frames before the audio's end (:func:`frames_audio_mask`;
    None: from this feature's own steps). The other frames get silence (0) before and
    after smoothing, never the last step held. Exactly what :func:`pack_video` stores
    under ``key`` (``volume`` steps are centred as its 320-sample hops, every other
    feature as wav2vec's 400-sample windows).
    """
    times = np.asarray(frame_times, np.float64)
    if with_audio is None:
        with_audio = frames_audio_mask(times, {key: steps})
    step_times = feature_times(steps.shape[0], window_samples=_window_samples(key))
    on_frames = timeline.silence_after_audio(
        resample_to_frames(steps, step_times, times), with_audio
    )
    return timeline.silence_after_audio(moving_average(on_frames, smooth_window), with_audio)


def audio_end_samples(
    audio_features: Mapping[str, np.ndarray], audio_samples: int | None = None
) -> int:
    """Where the audio ends, in 16 kHz samples: ``audio_samples`` (the wav's length) when
    known, else the least that any of ``audio_features`` (key -> (T, ...)) accounts for."""
    if audio_samples is not None:
        return int(audio_samples)
    if not audio_features:
        raise ValueError("no audio: neither the wav's length nor audio features")
    return min(
        timeline.feature_end_samples(
            np.asarray(steps).shape[0], WAV2VEC_HOP_SAMPLES, _window_samples(key)
        )
        for key, steps in audio_features.items()
    )


def frames_audio_mask(
    frame_times: np.ndarray,
    audio_features: Mapping[str, np.ndarray],
    audio_samples: int | None = None,
    audio_gaps: Sequence[Sequence[float]] = (),
) -> np.ndarray:
    """bool (N,): frames at ``frame_times`` at or after 0 (an audio offset can place a
    frame's audio before the clip starts) and before the audio's end (see
    :func:`audio_end_samples`), by :func:`dpl_assets.media.timeline.frames_with_audio`,
    and outside ``audio_gaps`` (spans of damaged audio, silence in the wav)."""
    end = audio_end_samples(audio_features, audio_samples)
    with_audio = timeline.frames_with_audio(frame_times, end) & (np.asarray(frame_times) >= 0)
    return with_audio & ~timeline.frames_in_spans(frame_times, audio_gaps)


def _window_samples(key: str) -> int:
    """Samples one step of the audio feature ``key`` summarizes, as its datatype declares
    (the volume envelope's 320-sample hop centres its steps 2.5 ms before wav2vec's)."""
    declared = get_datatype(key).window_samples if key in DATATYPES else None
    return declared or WAV2VEC_WINDOW_SAMPLES


def _str_array(keys: Iterable[str]) -> np.ndarray:
    return np.array(list(keys), dtype=h5py.string_dtype())
