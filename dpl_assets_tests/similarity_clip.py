"""A real face photo (skimage's astronaut) moved by known similarity transforms, frame by
frame: the input of the aligned-crop and frame-quality tests and benchmarks."""

from __future__ import annotations

import functools

import cv2
import numpy as np
from skimage.data import astronaut

WIDTH, HEIGHT = 320, 240
FACE_CENTRE = np.array([225.5, 130.5])
"""The astronaut's face centre in the 512 x 512 photo (px; the face spans x 178..273,
y 83..178)."""


@functools.cache
def photo() -> np.ndarray:
    """The astronaut photo, RGB uint8 (512, 512, 3)."""
    return np.ascontiguousarray(astronaut())


def photo_to_frame(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """(2, 3) similarity mapping photo px to frame px (continuous coordinates, pixel
    ``(x, y)`` covering ``[x, x+1)``): the face centre goes to the frame centre plus
    ``shift``, turned counter-clockwise on screen by ``angle_deg`` and scaled by ``scale``."""
    turn = np.radians(angle_deg)
    linear = scale * np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    centre = np.array([WIDTH / 2 + shift[0], HEIGHT / 2 + shift[1]])
    return np.hstack([linear, (centre - linear @ FACE_CENTRE)[:, None]])


def render(transform: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """``image`` (default the photo) under ``transform`` (photo px -> frame px), as a
    WIDTH x HEIGHT RGB frame (edges reflected, so no black border makes edges)."""
    centred = np.asarray(transform, np.float64).copy()
    centred[:, 2] += centred[:, :2] @ [0.5, 0.5] - 0.5  # cv2's pixel centres are integers
    source = photo() if image is None else image
    return cv2.warpAffine(
        source,
        centred,
        (WIDTH, HEIGHT),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REFLECT,
    )


def clip_transforms(count: int = 20) -> list[np.ndarray]:
    """``count`` known photo -> frame similarities: turning -12..12 degrees, scale 0.8..1.25,
    drifting up to 25 px."""
    phases = np.linspace(0.0, 1.0, count)
    return [
        photo_to_frame(
            12 * np.sin(2 * np.pi * p), 0.8 * (1.25 / 0.8) ** p, (25 * p - 12, 8 * np.cos(3 * p))
        )
        for p in phases
    ]


def clip(count: int = 20) -> list[np.ndarray]:
    """The frames of :func:`clip_transforms`."""
    return [render(transform) for transform in clip_transforms(count)]
