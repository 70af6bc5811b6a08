"""Output checks: does each stored artefact have the shape, values and length it promises?

Writers already enforce the registry's array contracts, so these checks catch what a
contract cannot see or what happened after writing: a damaged or hand-edited file, a
user-given root of the wrong kind, NaN where none is allowed, boxes that miss the frame,
and per-frame datatypes whose frame counts disagree with the video's.

:func:`check_artifact` reads the file under its final name directly (never through the
contract-checking reader, which would stop at the first problem; arrays a block of rows at a
time, so memory does not grow with the clip) and returns every problem as a sentence; an
empty list means the artefact passed. This module names no datatype: it
follows what :mod:`dpl_assets.datatypes` declares of each one (storage format, ``per``,
``nan_rows``, value rules, file check), and compares with the video's reference artefacts,
:data:`~dpl_assets.datatypes.FRAME_REFERENCE` (``images``: the frame count and size) and
:data:`~dpl_assets.datatypes.AUDIO_REFERENCE` (``wav``: the audio length). The rules, with
examples of the built-in datatypes they apply to:

- every array datatype: shape and dtype against its :class:`~dpl_assets.datatypes.ArrayContract`;
- audio (``StorageFormat.WAV``): a 16 kHz mono PCM16 file, at least one sample;
- audio-step arrays (``per=AUDIO_STEP``: ``wav2vec``, ``volume``): finite; T = the wav2vec
  step count of the video's reference audio
  (``floor((N - 400) / 320) + 1`` for N >= 400 samples);
- per-frame arrays (``per=FRAME``: ``raw_bboxes``, ``landmarks``, ... and a custom node's):
  N = the frame count of the reference stack; NaN only as whole rows (a frame has a face
  or not) where the datatype allows NaN rows (``nan_rows``), else none (so FLAME
  parameters, vertices and 3D landmarks have one finite row per frame);
- value rules (``Datatype.values``), on the rows without NaN: ``NonNegative`` (``volume``)
  no negative value; ``Codes`` (``face_mask``: 0, 1, 2) only the allowed codes;
  ``DetectionBoxes`` (``raw_bboxes``) and ``CropBoxes`` (``bboxes``): ``x1 < x2``,
  ``y1 < y2``, each box overlaps the frame and runs past it by at most its own size (the
  crop pads at most that much), crop boxes square, detection scores in [0, 1];
  ``PointsNearFrame`` (``landmarks``): points within the frame widened by half its size;
- image stacks (``images``, ``crops``, renders): ``count`` attribute, entries and
  timestamps agree, timestamps strictly increasing, the first image decodes at the stated
  size; every stack but the reference has the reference's frame count;
- whole files, by their declared check (``Datatype.file_check``; none: not checked):
  ``TrainingFile`` (``h5_dataset``, ...): every dataset (resampled audio features
  included) has the file's frame count, which is the reference's; the first image of each
  image dataset decodes; ``PreviewVideo`` (``preview``): one video stream with one packet
  per reference frame, and an audio stream when the video has reference audio;
  ``PngImage`` (``contact_sheet``): a PNG that decodes; ``NpzFrames`` (``a2en``): every
  array has a frame axis, all of one length, and the required arrays are present.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

import av
import cv2
import h5py
import numpy as np
import soundfile

from dpl_assets.datatypes import (
    AUDIO_REFERENCE,
    AUDIO_SAMPLE_RATE_HZ,
    AUDIO_STEP,
    DATATYPES,
    FRAME,
    FRAME_REFERENCE,
    Codes,
    CropBoxes,
    Datatype,
    DetectionBoxes,
    NonNegative,
    NpzFrames,
    PngImage,
    PointsNearFrame,
    PreviewVideo,
    StorageFormat,
    TrainingFile,
    get_datatype,
)
from dpl_assets.packing.layouts import open_images
from dpl_assets.storage.image_stack import decode_image


def checked_keys() -> tuple[str, ...]:
    """Datatypes with output checks, in registry order: every wav, image stack and array
    datatype (custom ones too), and the whole files that declare a ``file_check``."""
    return tuple(
        key
        for key, datatype in DATATYPES.items()
        if datatype.storage in (StorageFormat.WAV, StorageFormat.IMAGE_STACK, StorageFormat.NPY)
        or datatype.file_check is not None
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class VideoFacts:
    """What the checks compare an artefact with: the video's frame count and size (from its
    :data:`~dpl_assets.datatypes.FRAME_REFERENCE` stack) and its reference audio's length
    in samples (:data:`~dpl_assets.datatypes.AUDIO_REFERENCE`); None where that artefact is
    absent or unreadable."""

    frame_count: int | None = None
    frame_size: tuple[int, int] | None = None  # (width, height) px
    wav_samples: int | None = None

    @classmethod
    def read(cls, frames: Path | None, audio: Path | None) -> VideoFacts:
        """The facts from the video's reference stack file ``frames`` and reference audio
        file ``audio`` (either may be None or missing; a damaged one is reported by its
        own check, here it only leaves its facts None)."""
        frame_count = frame_size = wav_samples = None
        if frames is not None and frames.exists():
            with contextlib.suppress(OSError, KeyError), h5py.File(frames, "r") as file:
                frame_count = int(file[FRAME_REFERENCE].shape[0])
                frame_size = (int(file.attrs["width"]), int(file.attrs["height"]))
        if audio is not None and audio.exists():
            with contextlib.suppress(RuntimeError, soundfile.LibsndfileError):
                wav_samples = int(soundfile.info(audio).frames)
        return cls(frame_count, frame_size, wav_samples)


def check_artifact(key: str, path: Path, facts: VideoFacts) -> list[str]:
    """Every problem of the artefact ``path`` of datatype ``key`` (empty list: it passed).

    Raises KeyError for a datatype that is not registered."""
    datatype = get_datatype(key)
    if datatype.storage is StorageFormat.FILE:
        return [] if datatype.file_check is None else _check_file(datatype, path, facts)
    if datatype.storage is StorageFormat.WAV:
        return _check_wav(path)
    if datatype.storage is StorageFormat.IMAGE_STACK:
        return _check_image_stack(key, path, facts)
    try:
        array = NpyRows(path)
    except (OSError, ValueError) as error:
        return [f"unreadable .npy file: {error}"]
    assert datatype.contract is not None
    violation = datatype.contract.shape_violation(array.shape, array.dtype)
    if violation:
        return [f"{violation} (contract {datatype.contract.shape} {datatype.contract.dtype})"]
    try:
        if datatype.per == AUDIO_STEP:
            return _check_audio_rate(datatype, array, facts)
        return _check_per_frame(datatype, array, facts)
    except (OSError, ValueError) as error:
        return [f"unreadable .npy file: {error}"]


ROW_BLOCK_BYTES = 8 * 1024 * 1024
"""An array artefact is read and checked this many bytes of its rows (as float64) at a
time: memory stays the same whatever the clip's length."""


class NpyRows:
    """A ``.npy`` file read block by block along its first axis: ``shape`` and ``dtype``
    from the header (ValueError for an object array or a file shorter than its header
    says), :meth:`blocks` of rows, :meth:`load` of all of it. A Fortran-ordered array
    (columns first on disk) is loaded whole, then handed out in the same blocks."""

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as file:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f".npy format version {version} is not read here")
            self.offset = file.tell()
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        self.fortran_order = bool(fortran_order) and len(shape) > 1
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype: np.dtype = dtype
        self.ndim = len(self.shape)
        self.row_size = math.prod(self.shape[1:])  # elements per row (1 for (N,))
        size = math.prod(self.shape) * dtype.itemsize
        if path.stat().st_size < self.offset + size:
            raise ValueError(
                f"the file holds {path.stat().st_size - self.offset} bytes of data, its "
                f"header says {self.shape} {self.dtype} ({size} bytes)"
            )

    def load(self) -> np.ndarray:
        """The whole array."""
        if self.fortran_order:
            return np.load(self.path, allow_pickle=False)
        with self.path.open("rb") as file:
            file.seek(self.offset)
            return np.fromfile(file, self.dtype, math.prod(self.shape)).reshape(self.shape)

    def blocks(self) -> Iterator[np.ndarray]:
        """Consecutive blocks of rows, (R, ...) each, about :data:`ROW_BLOCK_BYTES` as
        float64; nothing for an array without rows."""
        if self.ndim == 0:
            raise ValueError("a 0-d array has no rows")
        rows = max(1, ROW_BLOCK_BYTES // (8 * max(1, self.row_size)))
        if self.fortran_order:
            whole = self.load()
            for start in range(0, self.shape[0], rows):
                yield whole[start : start + rows]
            return
        with self.path.open("rb") as file:
            file.seek(self.offset)
            for start in range(0, self.shape[0], rows):
                count = min(rows, self.shape[0] - start)
                block = np.fromfile(file, self.dtype, count * self.row_size)
                yield block.reshape(count, *self.shape[1:])


def _check_wav(path: Path) -> list[str]:
    try:
        info = soundfile.info(path)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        return [f"unreadable wav: {error}"]
    problems = []
    if info.samplerate != AUDIO_SAMPLE_RATE_HZ:
        problems.append(f"sample rate {info.samplerate} Hz where {AUDIO_SAMPLE_RATE_HZ} Hz")
    if info.channels != 1:
        problems.append(f"{info.channels} channels where 1 (mono)")
    if info.subtype != "PCM_16":
        problems.append(f"sample format {info.subtype} where PCM_16")
    if info.frames == 0:
        problems.append("no samples")
    return problems


def _check_audio_rate(datatype: Datatype, array: NpyRows, facts: VideoFacts) -> list[str]:
    scan = _RowScan(datatype, facts.frame_size)
    for block in array.blocks():
        scan.nonfinite += int((~np.isfinite(block)).sum())
        scan.add_values(block)
    problems = []
    if scan.nonfinite:
        problems.append(f"{scan.nonfinite} non-finite values")
    problems += scan.value_problems()
    if facts.wav_samples is not None:
        expected = wav2vec_steps(facts.wav_samples)
        if array.shape[0] != expected:
            problems.append(
                f"{array.shape[0]} steps where the {AUDIO_REFERENCE}'s {facts.wav_samples} "
                f"samples give {expected}"
            )
    return problems


def _check_per_frame(datatype: Datatype, array: NpyRows, facts: VideoFacts) -> list[str]:
    problems = []
    per_frame = datatype.per == FRAME
    if per_frame and facts.frame_count is not None and array.shape[0] != facts.frame_count:
        problems.append(
            f"{array.shape[0]} rows where {FRAME_REFERENCE} has {facts.frame_count} frames"
        )
    if array.ndim == 0:
        return problems + ([] if np.isfinite(array.load()).all() else ["non-finite value"])
    scan = _RowScan(datatype, facts.frame_size)
    for block in array.blocks():
        finite = np.isfinite(_as_rows(block))
        if datatype.nan_rows:
            scan.partial += int((finite.any(axis=1) & ~finite.all(axis=1)).sum())
        else:
            scan.nonfinite += int((~finite).sum())
        scan.add_values(block)
    if scan.partial:
        problems.append(f"{scan.partial} rows partly NaN (a row is all NaN or all numbers)")
    if scan.nonfinite:
        problems.append(f"{scan.nonfinite} non-finite values")
    return problems + scan.value_problems()


def _as_rows(array: np.ndarray) -> np.ndarray:
    """``array`` as float64 rows (first axis kept, the rest flattened): (R, K)."""
    if not array.size:
        return np.zeros((0, 1))
    return array.reshape(array.shape[0], -1).astype(np.float64)


class _RowScan:
    """Counts over an array's blocks of rows: non-finite values, partly-NaN rows, and what
    the datatype's value rules find (boxes and points: on the rows without NaN, against
    the reference frame of ``frame_size`` (width, height) px)."""

    def __init__(self, datatype: Datatype, frame_size: tuple[int, int] | None):
        self.datatype, self.frame_size = datatype, frame_size
        self.nonfinite = self.partial = 0
        self.negative = False
        self.codes: set[int | float] = set()
        self.boxes: dict[str, int] = dict.fromkeys(BOX_COUNTS, 0)
        self.points_outside = 0

    def add_values(self, block: np.ndarray) -> None:
        """Apply the value rules to ``block`` (rows of the array, any shape after the first)."""
        if not self.datatype.values:
            return
        values = _as_rows(block)
        rows = values[np.isfinite(values).all(axis=1)]
        for rule in self.datatype.values:
            match rule:
                case NonNegative():
                    self.negative = self.negative or bool((block < 0).any())
                case Codes():
                    self.codes.update(np.unique(block).tolist())
                case DetectionBoxes() | CropBoxes():
                    for name, count in _box_counts(rule, rows, self.frame_size).items():
                        self.boxes[name] += count
                case PointsNearFrame():
                    self.points_outside += _points_outside(rows, block.shape[-1], self.frame_size)
                case _:
                    assert_never(rule)

    def value_problems(self) -> list[str]:
        """The problems the value rules found, one sentence each, in the rules' order."""
        problems: list[str] = []
        key = self.datatype.key
        for rule in self.datatype.values:
            match rule:
                case NonNegative():
                    if self.negative:
                        problems.append(f"negative {key} values")
                case Codes(allowed):
                    codes = self.codes - set(allowed)
                    if codes:
                        listed = ", ".join(str(code) for code in allowed)
                        problems.append(f"unknown {key} codes {sorted(codes)} ({listed} allowed)")
                case DetectionBoxes() | CropBoxes():
                    problems += _box_problems(rule, self.boxes, self.frame_size)
                case PointsNearFrame():
                    if self.points_outside:
                        problems.append(
                            f"{self.points_outside} landmark points far outside the frame"
                        )
                case _:
                    assert_never(rule)
        return problems


def _points_outside(rows: np.ndarray, coordinates: int, frame_size: tuple[int, int] | None) -> int:
    """How many points (x, y, ...) px of ``rows``, ``coordinates`` numbers each, lie outside
    the frame widened by half its size on every side."""
    if frame_size is None or not rows.size:
        return 0
    width, height = frame_size
    points = rows.reshape(-1, coordinates)
    outside = (
        (points[:, 0] < -width / 2) | (points[:, 0] > 1.5 * width)
        | (points[:, 1] < -height / 2) | (points[:, 1] > 1.5 * height)
    )  # fmt: skip
    return int(outside.sum())


BOX_COUNTS = ("empty", "not_square", "bad_scores", "misses", "beyond")
"""What :func:`_box_counts` counts among box rows."""


def _box_counts(
    rule: DetectionBoxes | CropBoxes, boxes: np.ndarray, frame_size: tuple[int, int] | None
) -> dict[str, int]:
    """Box rows that are empty, not square (crop boxes), with a score outside [0, 1]
    (detections), missing the frame, or running past it by more than their own size."""
    counts = dict.fromkeys(BOX_COUNTS, 0)
    if not boxes.size:
        return counts
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    counts["empty"] = int(((x2 <= x1) | (y2 <= y1)).sum())
    if isinstance(rule, CropBoxes):
        counts["not_square"] = int((np.abs((x2 - x1) - (y2 - y1)) > 1).sum())
    else:
        scores = boxes[:, 4]
        counts["bad_scores"] = int(((scores < 0) | (scores > 1)).sum())
    if frame_size is not None:
        width, height = frame_size
        box_w, box_h = x2 - x1, y2 - y1
        misses = (x2 <= 0) | (y2 <= 0) | (x1 >= width) | (y1 >= height)
        beyond = (x1 < -box_w) | (y1 < -box_h) | (x2 > width + box_w) | (y2 > height + box_h)
        counts["misses"] = int(misses.sum())
        counts["beyond"] = int((beyond & ~misses).sum())
    return counts


def _box_problems(
    rule: DetectionBoxes | CropBoxes, counts: dict[str, int], frame_size: tuple[int, int] | None
) -> list[str]:
    """The sentences of :func:`_box_counts`' counts."""
    problems: list[str] = []
    if counts["empty"]:
        problems.append(f"{counts['empty']} boxes with x2 <= x1 or y2 <= y1")
    if isinstance(rule, CropBoxes):
        if counts["not_square"]:
            problems.append(f"{counts['not_square']} crop boxes not square")
    elif counts["bad_scores"]:
        problems.append("detection scores outside [0, 1]")
    if frame_size is not None:
        width, height = frame_size
        if counts["misses"]:
            problems.append(f"{counts['misses']} boxes miss the {width}x{height} frame")
        if counts["beyond"]:
            problems.append(
                f"{counts['beyond']} boxes run past the frame by more than their own size"
            )
    return problems


def _check_image_stack(key: str, path: Path, facts: VideoFacts) -> list[str]:
    problems = []
    try:
        with h5py.File(path, "r") as file:
            images, timestamps = file[key], file["timestamps"]
            count = int(images.shape[0])
            stated = int(file.attrs.get("count", -1))
            if stated != count or timestamps.shape[0] != count:
                problems.append(
                    f"{count} images, {timestamps.shape[0]} timestamps, count attribute "
                    f"{stated}: they must agree"
                )
            times = np.asarray(timestamps[:], np.float64)
            if times.size > 1 and not (np.diff(times) > 0).all():
                problems.append("timestamps not strictly increasing")
            if count:
                first = decode_image(images[0])
                size = (int(file.attrs["width"]), int(file.attrs["height"]))
                if (first.shape[1], first.shape[0]) != size:
                    problems.append(
                        f"first image is {first.shape[1]}x{first.shape[0]}, attributes say "
                        f"{size[0]}x{size[1]}"
                    )
            else:
                problems.append("no images")
    except (OSError, KeyError, ValueError) as error:
        return [f"unreadable image stack: {error}"]
    if key != FRAME_REFERENCE and facts.frame_count is not None and count != facts.frame_count:
        problems.append(f"{count} {key} where {FRAME_REFERENCE} has {facts.frame_count} frames")
    return problems


def wav2vec_steps(num_samples: int) -> int:
    """Steps of a 400-sample window moved by 320 samples over ``num_samples`` (0 if short).

    Written out here rather than taken from the feature code, so the check is independent.
    """
    return (num_samples - 400) // 320 + 1 if num_samples >= 400 else 0


def _check_file(datatype: Datatype, path: Path, facts: VideoFacts) -> list[str]:
    """The problems of a whole-file artefact under the datatype's declared file check."""
    match datatype.file_check:
        case TrainingFile():
            return _check_training_file(path, facts)
        case PreviewVideo():
            return _check_preview(path, facts)
        case PngImage():
            return _check_png(path)
        case NpzFrames(required):
            return _check_npz_frames(datatype.key, required, path)
        case None:
            return []
        case _:
            assert_never(datatype.file_check)


def _check_training_file(path: Path, facts: VideoFacts) -> list[str]:
    """Every dataset of a training file has the file's frame count; images decode."""
    problems = []
    try:
        with h5py.File(path, "r") as file:
            count = int(file.attrs["frame_count"])
            if facts.frame_count is not None and count != facts.frame_count:
                problems.append(f"{count} frames where {FRAME_REFERENCE} has {facts.frame_count}")
            for key, dataset in file.items():
                if not isinstance(dataset, h5py.Dataset) or dataset.ndim == 0:
                    problems.append(f"{key} is not a per-frame dataset")
                elif dataset.shape[0] != count:
                    problems.append(f"{key} has {dataset.shape[0]} rows, the file {count} frames")
            for key in file.attrs.get("image_keys", []):
                images = open_images(file[key])
                if count and images[0].shape[:2] != images.frame_shape[:2]:
                    problems.append(f"{key}: first image does not have the stated size")
    except (OSError, KeyError, ValueError) as error:
        return [f"unreadable training file: {error}"]
    return problems


def _check_preview(path: Path, facts: VideoFacts) -> list[str]:
    """One video packet per reference frame, and an audio stream when there is audio."""
    try:
        with av.open(str(path)) as container:
            videos = [s for s in container.streams if s.type == "video"]
            audios = [s for s in container.streams if s.type == "audio"]
            if len(videos) != 1:
                return [f"{len(videos)} video streams where 1"]
            packets = sum(1 for p in container.demux(videos[0]) if p.size)
    except (av.FFmpegError, OSError) as error:
        return [f"unreadable preview: {error}"]
    problems = []
    if facts.frame_count is not None and packets != facts.frame_count:
        problems.append(f"{packets} frames where {FRAME_REFERENCE} has {facts.frame_count}")
    if facts.wav_samples and not audios:
        problems.append(f"no audio stream although the video has a {AUDIO_REFERENCE}")
    return problems


def _check_png(path: Path) -> list[str]:
    with path.open("rb") as file:
        signature = file.read(len(PNG_SIGNATURE))
    if signature != PNG_SIGNATURE:
        return ["not a PNG file"]
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return [] if image is not None and image.size else ["PNG does not decode"]


def _check_npz_frames(key: str, required: tuple[str, ...], path: Path) -> list[str]:
    """Every array of the ``.npz`` has a frame axis, all of one length; ``required`` present."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            shapes = {name: npz[name].shape for name in npz.files}
    except (OSError, ValueError) as error:
        return [f"unreadable {key} file: {error}"]
    if any(len(shape) == 0 for shape in shapes.values()):
        return [f"{key} arrays must have a frame axis"]
    lengths = {name: shape[0] for name, shape in shapes.items()}
    problems = [f"no {name}" for name in required if name not in lengths]
    if len(set(lengths.values())) > 1:
        problems.append(f"arrays disagree on the frame count: {lengths}")
    return problems


CHECKED = checked_keys()
"""The built-in datatypes with output checks (custom ones: :func:`checked_keys` after
their node is loaded)."""
