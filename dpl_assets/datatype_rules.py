"""What a datatype promises about its values, declared as data in the registry
(:mod:`dpl_assets.datatypes`) and enforced by the writers (array contracts) and the output
checks (:mod:`dpl_assets.validation`): array contracts, value rules, whole-file checks, and
the record numbers shown with each materialization."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArrayContract:
    """Shape/dtype contract of an array datatype.

    ``shape`` holds one entry per axis: an int fixes that axis, a str names a free axis
    (``"T"`` = time steps). Axes named the same within one contract must agree.
    """

    shape: tuple[int | str, ...]
    dtype: str

    def violation(self, array: np.ndarray) -> str | None:
        """Why ``array`` breaks the contract, or None when it satisfies it."""
        return self.shape_violation(array.shape, array.dtype)

    def shape_violation(self, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
        """:meth:`violation` of an array of ``shape`` and ``dtype`` (e.g. a file's header)."""
        if dtype != np.dtype(self.dtype):
            return f"dtype {dtype} where {self.dtype} is required"
        if len(shape) != len(self.shape):
            return f"shape {shape} where {self.shape} is required"
        named: dict[str, int] = {}
        for axis, (want, got) in enumerate(zip(self.shape, shape, strict=True)):
            if isinstance(want, int) and want != got:
                return f"axis {axis} has {got} entries where {want} are required"
            if isinstance(want, str) and named.setdefault(want, got) != got:
                return f"axes named {want!r} disagree in shape {shape}"
        return None


# Value rules: extra checks of an array datatype's values (finite rows only), on top of its
# contract and NaN rule. Frozen data, so a declaration stays comparable and import-light;
# :mod:`dpl_assets.validation` runs them.


@dataclass(frozen=True)
class NonNegative:
    """Value rule: every value is >= 0 (e.g. a loudness envelope)."""


@dataclass(frozen=True)
class Codes:
    """Value rule: every value is one of ``allowed`` (integer status codes)."""

    allowed: tuple[int, ...]


@dataclass(frozen=True)
class DetectionBoxes:
    """Value rule: rows ``[x1, y1, x2, y2, score]`` px of a face detector: non-empty
    (``x1 < x2``, ``y1 < y2``), overlapping the reference frame and running past it by at
    most their own size; ``score`` in [0, 1]."""


@dataclass(frozen=True)
class CropBoxes:
    """Value rule: rows ``[x1, y1, x2, y2]`` px of square crop windows (sides within 1 px):
    non-empty, overlapping the reference frame and running past it by at most their own
    size (a crop pads at most that much)."""


@dataclass(frozen=True)
class PointsNearFrame:
    """Value rule: image points ``(x, y)`` px (the last axis has 2 entries), each within
    the reference frame widened by half its width and height on every side (landmarks)."""


ValueRule = NonNegative | Codes | DetectionBoxes | CropBoxes | PointsNearFrame
"""An extra rule of an array datatype's values (:attr:`Datatype.values`)."""


# File checks: what is checked of a datatype stored as a whole file (StorageFormat.FILE).


@dataclass(frozen=True)
class TrainingFile:
    """File check: a per-video HDF5 training file (:mod:`dpl_assets.packing.video_pack`):
    every dataset has the file's ``frame_count`` rows, which is the reference frame count;
    the first image of each image dataset decodes at the stated size."""


@dataclass(frozen=True)
class PreviewVideo:
    """File check: a video file with one video stream holding one packet per reference
    frame, and an audio stream when the video has its reference audio."""


@dataclass(frozen=True)
class PngImage:
    """File check: a PNG file (signature) that decodes to a non-empty image."""


@dataclass(frozen=True)
class NpzFrames:
    """File check: an ``.npz`` whose arrays each have a frame axis (first axis), all of the
    same length, holding at least the ``required`` arrays."""

    required: tuple[str, ...]


FileCheck = TrainingFile | PreviewVideo | PngImage | NpzFrames
"""The check of a datatype written as a whole file (:attr:`Datatype.file_check`)."""


@dataclass(frozen=True)
class RecordStat:
    """A number of a JSON record shown in the materialization's metadata: the record's
    ``field`` under ``name``, an int, or times ``scale`` rounded to 1 decimal when given
    (``coverage`` 0..1 shown as ``face_coverage_pct``)."""

    field: str
    name: str
    scale: float | None = None
