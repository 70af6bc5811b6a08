"""Output checks: does each stored artefact have the shape, values and length it promises?

Writers already enforce the registry's array contracts, so these checks catch what a
contract cannot see or what happened after writing: a damaged or hand-edited file, a
user-given root of the wrong kind, NaN where none is allowed, boxes that miss the frame,
and per-frame datatypes whose frame counts disagree with the video's.

:func:`check_artifact` reads the file under its final name directly (never through the
contract-checking reader, which would stop at the first problem) and returns every problem
as a sentence; an empty list means the artefact passed. This module names no datatype: it
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
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        return [f"unreadable .npy file: {error}"]
    assert datatype.contract is not None
    violation = datatype.contract.violation(array)
    if violation:
        return [f"{violation} (contract {datatype.contract.shape} {datatype.contract.dtype})"]
    if datatype.per == AUDIO_STEP:
        return _check_audio_rate(datatype, array, facts)
    return _check_per_frame(datatype, array, facts)


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


def _check_audio_rate(datatype: Datatype, array: np.ndarray, facts: VideoFacts) -> list[str]:
    problems = []
    if not np.isfinite(array).all():
        problems.append(f"{int((~np.isfinite(array)).sum())} non-finite values")
    problems += _check_values(datatype, array, facts.frame_size)
    if facts.wav_samples is not None:
        expected = wav2vec_steps(facts.wav_samples)
        if array.shape[0] != expected:
            problems.append(
                f"{array.shape[0]} steps where the {AUDIO_REFERENCE}'s {facts.wav_samples} "
                f"samples give {expected}"
            )
    return problems


def _check_per_frame(datatype: Datatype, array: np.ndarray, facts: VideoFacts) -> list[str]:
    problems = []
    per_frame = datatype.per == FRAME
    if per_frame and facts.frame_count is not None and array.shape[0] != facts.frame_count:
        problems.append(
            f"{array.shape[0]} rows where {FRAME_REFERENCE} has {facts.frame_count} frames"
        )
    if array.ndim == 0:
        return problems + ([] if np.isfinite(array).all() else ["non-finite value"])
    finite = np.isfinite(_as_rows(array))
    if datatype.nan_rows:
        partial = int((finite.any(axis=1) & ~finite.all(axis=1)).sum())
        if partial:
            problems.append(f"{partial} rows partly NaN (a row is all NaN or all numbers)")
    elif not finite.all():
        problems.append(f"{int((~finite).sum())} non-finite values")
    return problems + _check_values(datatype, array, facts.frame_size)


def _as_rows(array: np.ndarray) -> np.ndarray:
    """``array`` as float64 rows (first axis kept, the rest flattened): (R, K)."""
    if not array.size:
        return np.zeros((0, 1))
    return array.reshape(array.shape[0], -1).astype(np.float64)


def _check_values(
    datatype: Datatype, array: np.ndarray, frame_size: tuple[int, int] | None
) -> list[str]:
    """The problems of ``array`` under the datatype's value rules (boxes and points: on its
    rows without NaN, against the reference frame of ``frame_size`` (width, height) px)."""
    problems: list[str] = []
    if not datatype.values or array.ndim == 0:
        return problems
    values = _as_rows(array)
    rows = values[np.isfinite(values).all(axis=1)]
    for rule in datatype.values:
        match rule:
            case NonNegative():
                if (array < 0).any():
                    problems.append(f"negative {datatype.key} values")
            case Codes(allowed):
                codes = set(np.unique(array).tolist()) - set(allowed)
                if codes:
                    listed = ", ".join(str(code) for code in allowed)
                    problems.append(
                        f"unknown {datatype.key} codes {sorted(codes)} ({listed} allowed)"
                    )
            case DetectionBoxes() | CropBoxes():
                problems += _check_boxes(rule, rows, frame_size)
            case PointsNearFrame():
                problems += _check_points(rows, array.shape[-1], frame_size)
            case _:
                assert_never(rule)
    return problems


def _check_points(
    rows: np.ndarray, coordinates: int, frame_size: tuple[int, int] | None
) -> list[str]:
    """Points (x, y, ...) px of ``rows``, ``coordinates`` numbers each, within the frame
    widened by half its size on every side."""
    if frame_size is None or not rows.size:
        return []
    width, height = frame_size
    points = rows.reshape(-1, coordinates)
    outside = (
        (points[:, 0] < -width / 2) | (points[:, 0] > 1.5 * width)
        | (points[:, 1] < -height / 2) | (points[:, 1] > 1.5 * height)
    )  # fmt: skip
    return [f"{int(outside.sum())} landmark points far outside the frame"] if outside.any() else []


def _check_boxes(
    rule: DetectionBoxes | CropBoxes, boxes: np.ndarray, frame_size: tuple[int, int] | None
) -> list[str]:
    problems: list[str] = []
    if not boxes.size:
        return problems
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    empty = (x2 <= x1) | (y2 <= y1)
    if empty.any():
        problems.append(f"{int(empty.sum())} boxes with x2 <= x1 or y2 <= y1")
    if isinstance(rule, CropBoxes):
        not_square = np.abs((x2 - x1) - (y2 - y1)) > 1
        if not_square.any():
            problems.append(f"{int(not_square.sum())} crop boxes not square")
    else:
        scores = boxes[:, 4]
        if ((scores < 0) | (scores > 1)).any():
            problems.append("detection scores outside [0, 1]")
    if frame_size is not None:
        width, height = frame_size
        box_w, box_h = x2 - x1, y2 - y1
        misses = (x2 <= 0) | (y2 <= 0) | (x1 >= width) | (y1 >= height)
        beyond = (x1 < -box_w) | (y1 < -box_h) | (x2 > width + box_w) | (y2 > height + box_h)
        if misses.any():
            problems.append(f"{int(misses.sum())} boxes miss the {width}x{height} frame")
        if (beyond & ~misses).any():
            problems.append(
                f"{int((beyond & ~misses).sum())} boxes run past the frame by more than "
                "their own size"
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
