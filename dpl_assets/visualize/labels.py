"""Text on images: a label in a corner, and the red banner that marks a rejected video.

Images are RGB uint8 (H, W, 3); text is OpenCV's Hershey simplex, anti-aliased, sized to
the image it goes on.
"""

from __future__ import annotations

import cv2
import numpy as np

from dpl_assets.visualize.drawing import Color, Style, check_rgb

LABEL_COLOR: Color = (255, 255, 255)
REJECTED_COLOR: Color = (200, 16, 16)  # the banner of a rejected video


def put_label(
    image: np.ndarray,
    text: str,
    *,
    corner: str = "top-left",
    color: Color = LABEL_COLOR,
    font_scale: float | None = None,
) -> None:
    """Write ``text`` in place in a ``corner`` ("top-left" | "bottom-left") of RGB ``image``.

    White-on-black outline so it reads on any background; size scaled to the image unless
    ``font_scale`` is given. ValueError for another ``corner``.
    """
    height, width = image.shape[:2]
    scale = font_scale if font_scale is not None else Style.for_frame(width, height).font_scale
    thickness = max(1, round(scale * 1.5))
    (_, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(2, text_h // 3)
    if corner == "top-left":
        origin = (margin, margin + text_h)
    elif corner == "bottom-left":
        origin = (margin, height - margin - baseline)
    else:
        raise ValueError(f"corner must be 'top-left' or 'bottom-left', not {corner!r}")
    for ink, weight in (((0, 0, 0), thickness + 2), (color, thickness)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, weight, cv2.LINE_AA)


def banner(
    width: int,
    text: str,
    *,
    color: Color = REJECTED_COLOR,
    font_scale: float | None = None,
    max_lines: int = 4,
) -> np.ndarray:
    """An RGB uint8 band ``width`` px wide, filled with ``color``, with ``text`` in white
    wrapped onto at most ``max_lines`` lines (the last one cut with "..." if needed).

    The font scales with the width (readable on a 320 px preview and a 1024 px sheet); the
    band is as tall as its lines. Used to mark the frames of a rejected video. ValueError
    for a ``width`` that is not positive.
    """
    if width <= 0:
        raise ValueError(f"banner width must be positive, not {width}")
    scale = font_scale if font_scale is not None else min(0.9, max(0.4, width / 800))
    thickness = 1 if scale < 0.6 else 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, text_h), baseline = cv2.getTextSize("Ag", font, scale, thickness)
    margin = max(3, text_h // 2)
    lines = wrap_text(text, width - 2 * margin, scale, thickness, max_lines)
    line_h = text_h + baseline + max(2, text_h // 3)
    band = np.empty((2 * margin + len(lines) * line_h, width, 3), np.uint8)
    band[:] = color
    for number, line in enumerate(lines):
        origin = (margin, margin + number * line_h + text_h)
        cv2.putText(band, line, origin, font, scale, LABEL_COLOR, thickness, cv2.LINE_AA)
    return band


def wrap_text(text: str, width: int, scale: float, thickness: int, max_lines: int) -> list[str]:
    """``text`` split at spaces (or inside a word too long for a line) into lines that fit
    ``width`` px in the Hershey simplex font at ``scale`` and ``thickness``; at most
    ``max_lines``, the last ending in "..." when text was left out. Never empty."""

    def fits(line: str) -> bool:
        size = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]
        return bool(size <= width)

    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while not fits(current) and len(current) > 1:  # a word wider than the line
            cut = len(current) - 1
            while cut > 1 and not fits(current[:cut]):
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last + "..."]
    return lines or [""]


def stamp_banner(rgb: np.ndarray, band: np.ndarray, *, where: str = "bottom") -> np.ndarray:
    """A copy of RGB uint8 (H, W, 3) ``rgb`` with ``band`` (from :func:`banner`, as wide as
    ``rgb``) pasted over its top or bottom rows (cut to the frame's height).

    ValueError for a frame that is not RGB uint8, a band of another width, or a ``where``
    other than "top" / "bottom".
    """
    check_rgb(rgb)
    if band.shape[1] != rgb.shape[1]:
        raise ValueError(f"banner width {band.shape[1]} is not the frame's {rgb.shape[1]}")
    out = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    rows = min(band.shape[0], out.shape[0])
    if where == "bottom":
        out[out.shape[0] - rows :] = band[:rows]
    elif where == "top":
        out[:rows] = band[:rows]
    else:
        raise ValueError(f"where must be 'top' or 'bottom', not {where!r}")
    return out
