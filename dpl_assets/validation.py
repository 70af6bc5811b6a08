"""Output checks: does each stored artefact have the shape, values and length it promises?

Writers already enforce the registry's array contracts, so these checks catch what a
contract cannot see or what happened after writing: a damaged or hand-edited file, a
user-given root of the wrong kind, NaN where none is allowed, boxes that miss the frame,
and per-frame datatypes whose frame counts disagree with the video's ``images``.

:func:`check_artifact` reads the file under its final name directly (never through the
contract-checking reader, which would stop at the first problem) and returns every problem
as a sentence; an empty list means the artefact passed. Rules per datatype:

- every array datatype: shape and dtype against its :class:`~dpl_assets.datatypes.ArrayContract`;
- ``wav``: a 16 kHz mono PCM16 file, at least one sample;
- audio-step arrays (``per=AUDIO_STEP``: ``wav2vec``, ``volume``): finite; T = the wav2vec
  frame count of the video's wav
  (``floor((N - 400) / 320) + 1`` for N >= 400 samples); volume >= 0;
- per-frame arrays (registry ``per=FRAME``: ``raw_bboxes``, ``landmarks``, ...
  and a custom node's): N = the frame count of ``images``; NaN only as whole rows (a frame
  has a face or not) where the registry allows NaN rows (``nan_rows``), else none;
- boxes: ``x1 < x2``, ``y1 < y2``; each box overlaps the frame and runs past it by at most
  its own size (the crop pads at most that much); ``bboxes`` square; scores in [0, 1];
- ``face_mask`` codes in {0, 1, 2}; landmarks within the frame widened by half its size;
  FLAME parameters, vertices and 3D landmarks one finite row per frame;
- ``a2en``: every array present, one row per expression frame;
- image stacks (``images``, ``crops``): ``count`` attribute, entries and timestamps agree,
  timestamps strictly increasing, the first image decodes at the stated size; ``crops``
  has the frame count of ``images``;
- training files: every dataset (resampled audio features included) has the file's frame
  count, which is that of ``images``; the first image of each image dataset decodes;
- ``preview``: one video stream with one packet per frame of ``images``, and an audio
  stream when the video has a wav; ``contact_sheet``: a PNG that decodes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import soundfile

from dpl_assets.datatypes import (
    AUDIO_SAMPLE_RATE_HZ,
    AUDIO_STEP,
    DATATYPES,
    FRAME,
    StorageFormat,
    get_datatype,
)
from dpl_assets.packing.layouts import open_images
from dpl_assets.storage.image_stack import decode_image

PACKED = ("h5_dataset", "source_sequence", "vid2vid_audio", "vid2vid_dataset")
"""Per-video training files (:mod:`dpl_assets.packing.video_pack`)."""


def per_frame_keys() -> tuple[str, ...]:
    """Arrays with one row per video frame (first axis N = the ``images`` frame count)."""
    return tuple(
        key
        for key, datatype in DATATYPES.items()
        if datatype.storage is StorageFormat.NPY and datatype.per == FRAME
    )


def checked_keys() -> tuple[str, ...]:
    """Datatypes with output checks, in registry order: every wav, image stack and array
    datatype (custom ones too), and the files of the checkers in :data:`FILE_CHECKS`."""
    return tuple(
        key
        for key, datatype in DATATYPES.items()
        if datatype.storage in (StorageFormat.WAV, StorageFormat.IMAGE_STACK, StorageFormat.NPY)
        or key in FILE_CHECKS
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class VideoFacts:
    """What the checks compare an artefact with: the video's frame count and size (from its
    ``images`` stack) and its wav length in samples; None where that artefact is absent."""

    frame_count: int | None = None
    frame_size: tuple[int, int] | None = None  # (width, height) px
    wav_samples: int | None = None

    @classmethod
    def read(cls, images: Path | None, wav: Path | None) -> VideoFacts:
        frame_count = frame_size = wav_samples = None
        if images is not None and images.exists():
            # a damaged stack is reported by the images check itself
            with contextlib.suppress(OSError, KeyError), h5py.File(images, "r") as file:
                frame_count = int(file["images"].shape[0])
                frame_size = (int(file.attrs["width"]), int(file.attrs["height"]))
        if wav is not None and wav.exists():
            with contextlib.suppress(RuntimeError, soundfile.LibsndfileError):
                wav_samples = int(soundfile.info(wav).frames)  # else the wav check reports it
        return cls(frame_count, frame_size, wav_samples)


def check_artifact(key: str, path: Path, facts: VideoFacts) -> list[str]:
    """Every problem of the artefact ``path`` of datatype ``key`` (empty list: it passed)."""
    datatype = get_datatype(key)
    if datatype.storage is StorageFormat.FILE:
        check_file = FILE_CHECKS.get(key)
        return check_file(path, facts) if check_file is not None else []
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
        return _check_audio_rate(key, array, facts)
    return _check_per_frame(key, array, facts)


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


def _check_audio_rate(key: str, array: np.ndarray, facts: VideoFacts) -> list[str]:
    problems = []
    if not np.isfinite(array).all():
        problems.append(f"{int((~np.isfinite(array)).sum())} non-finite values")
    if key == "volume" and (array < 0).any():
        problems.append("negative volume values")
    if facts.wav_samples is not None:
        expected = wav2vec_steps(facts.wav_samples)
        if array.shape[0] != expected:
            problems.append(
                f"{array.shape[0]} steps where the wav's {facts.wav_samples} samples give "
                f"{expected}"
            )
    return problems


def _check_per_frame(key: str, array: np.ndarray, facts: VideoFacts) -> list[str]:
    problems = []
    datatype = get_datatype(key)
    per_frame = datatype.per == FRAME
    if per_frame and facts.frame_count is not None and array.shape[0] != facts.frame_count:
        problems.append(f"{array.shape[0]} rows where images has {facts.frame_count} frames")
    if array.ndim == 0:
        return problems + ([] if np.isfinite(array).all() else ["non-finite value"])
    values = (
        array.reshape(array.shape[0], -1).astype(np.float64) if array.size else np.zeros((0, 1))
    )
    finite = np.isfinite(values)
    if datatype.nan_rows:
        partial = int((finite.any(axis=1) & ~finite.all(axis=1)).sum())
        if partial:
            problems.append(f"{partial} frames partly NaN (a frame has a whole face or none)")
    elif not finite.all():
        problems.append(f"{int((~finite).sum())} non-finite values")
    rows = values[finite.all(axis=1)]
    if key == "face_mask":
        codes = set(np.unique(array).tolist()) - {0, 1, 2}
        if codes:
            problems.append(f"unknown face_mask codes {sorted(codes)} (0, 1, 2 allowed)")
    elif key in ("raw_bboxes", "bboxes"):
        problems += _check_boxes(key, rows, facts.frame_size)
    elif key == "landmarks" and facts.frame_size is not None and rows.size:
        width, height = facts.frame_size
        points = rows.reshape(-1, 2)
        outside = (
            (points[:, 0] < -width / 2) | (points[:, 0] > 1.5 * width)
            | (points[:, 1] < -height / 2) | (points[:, 1] > 1.5 * height)
        )  # fmt: skip
        if outside.any():
            problems.append(f"{int(outside.sum())} landmark points far outside the frame")
    return problems


def _check_boxes(key: str, boxes: np.ndarray, frame_size: tuple[int, int] | None) -> list[str]:
    problems: list[str] = []
    if not boxes.size:
        return problems
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    empty = (x2 <= x1) | (y2 <= y1)
    if empty.any():
        problems.append(f"{int(empty.sum())} boxes with x2 <= x1 or y2 <= y1")
    if key == "bboxes":
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
    if key != "images" and facts.frame_count is not None and count != facts.frame_count:
        problems.append(f"{count} {key} where images has {facts.frame_count} frames")
    return problems


def wav2vec_steps(num_samples: int) -> int:
    """Steps of a 400-sample window moved by 320 samples over ``num_samples`` (0 if short).

    Written out here rather than taken from the feature code, so the check is independent.
    """
    return (num_samples - 400) // 320 + 1 if num_samples >= 400 else 0


def _check_packed(path: Path, facts: VideoFacts) -> list[str]:
    """Every dataset of a training file has the file's frame count; images decode."""
    problems = []
    try:
        with h5py.File(path, "r") as file:
            count = int(file.attrs["frame_count"])
            if facts.frame_count is not None and count != facts.frame_count:
                problems.append(f"{count} frames where images has {facts.frame_count}")
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
    """One video packet per frame of ``images``, and an audio stream when there is a wav."""
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
        problems.append(f"{packets} frames where images has {facts.frame_count}")
    if facts.wav_samples and not audios:
        problems.append("no audio stream although the video has a wav")
    return problems


def _check_png(path: Path, facts: VideoFacts | None = None) -> list[str]:
    with path.open("rb") as file:
        signature = file.read(len(PNG_SIGNATURE))
    if signature != PNG_SIGNATURE:
        return ["not a PNG file"]
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return [] if image is not None and image.size else ["PNG does not decode"]


A2EN_KEYS = ("wav2vec", "volume", "exp", "jaw", "left_blink", "right_blink", "average_blink")


def _check_a2en(path: Path, facts: VideoFacts | None = None) -> list[str]:
    """All of the file's arrays present, with one row per expression frame."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            shapes = {key: npz[key].shape for key in A2EN_KEYS if key in npz.files}
    except (OSError, ValueError) as error:
        return [f"unreadable a2en file: {error}"]
    if any(len(shape) == 0 for shape in shapes.values()):
        return ["a2en arrays must have a frame axis"]
    lengths = {key: shape[0] for key, shape in shapes.items()}
    problems = [f"no {key}" for key in A2EN_KEYS if key not in lengths]
    if len(set(lengths.values())) > 1:
        problems.append(f"arrays disagree on the frame count: {lengths}")
    return problems


FILE_CHECKS: dict[str, Callable[[Path, VideoFacts], list[str]]] = {
    **dict.fromkeys(PACKED, _check_packed),
    "preview": _check_preview,
    "contact_sheet": _check_png,
    "a2en": _check_a2en,
}
"""Checkers of the datatypes stored as whole files (a custom file datatype has none)."""

CHECKED = checked_keys()
"""The built-in datatypes with output checks (custom ones: :func:`checked_keys` after
their node is loaded)."""
