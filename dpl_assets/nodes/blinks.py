"""Blinks family: 68-point landmarks -> per-frame eye openness.

Output float32 (N, 3) ``[left, right, average]``, each eye's opening as a fraction of its
width (about 0.25-0.35 open, near 0 closed); NaN where the frame has no face. As in the
original, "left" is points 36-41 (the eye on the image's left, the subject's right eye)
and "right" is points 42-47 (0-based iBUG-68 indices).
"""

from __future__ import annotations

import numpy as np

# (upper lid, lower lid) pairs and (outer, inner) corners per eye, 0-based iBUG-68 indices.
LEFT_EYE_LIDS = ((37, 41), (38, 40))
LEFT_EYE_CORNERS = (36, 39)
RIGHT_EYE_LIDS = ((43, 47), (44, 46))
RIGHT_EYE_CORNERS = (42, 45)


def _distance(landmarks: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """Per-frame float64 distance between two points (only those two are converted)."""
    first = landmarks[:, pair[0]].astype(np.float64)
    return np.linalg.norm(first - landmarks[:, pair[1]].astype(np.float64), axis=-1)


def _openness(
    landmarks: np.ndarray, lids: tuple[tuple[int, int], ...], corners: tuple[int, int]
) -> np.ndarray:
    opening = np.mean([_distance(landmarks, pair) for pair in lids], axis=0)
    width = _distance(landmarks, corners)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(width > 0, opening / width, np.nan)


def eye_openness(landmarks68: np.ndarray) -> np.ndarray:
    """Eye openness float32 (N, 3) ``[left, right, average]`` from landmarks (N, 68, D).

    ``D`` = 2 (pixels) or 3 (e.g. FLAME's 3D landmarks): distances are Euclidean. An eye's
    opening = mean of its two lid distances / its corner-to-corner width; the average is
    the mean of both eyes. NaN points (or a zero-width eye) give NaN.
    """
    points = np.asarray(landmarks68)  # distances are in float64 (see _distance)
    if points.ndim != 3 or points.shape[1] != 68:
        raise ValueError(f"landmarks must be (N, 68, D), not {points.shape}")
    left = _openness(points, LEFT_EYE_LIDS, LEFT_EYE_CORNERS)
    right = _openness(points, RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS)
    return np.stack([left, right, (left + right) / 2], axis=-1).astype(np.float32)
