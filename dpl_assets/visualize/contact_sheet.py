"""Contact sheets: evenly spaced frames of a clip (with overlays) tiled into one image.

Frames come from anything with ``len`` and ``[index]`` -> RGB, such as an
:class:`~dpl_assets.storage.image_stack.ImageStack`; only the picked frames are decoded.
Each tile is labelled with its frame index and, when timestamps are known, its time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from dpl_assets.storage.atomic import atomic_write_bytes
from dpl_assets.storage.image_stack import encode_image
from dpl_assets.visualize.overlay import Overlays, banner, put_label

BACKGROUND = 24  # grey level behind the title and unused tiles


class FrameSequence(Protocol):
    """Random access to RGB uint8 (H, W, 3) frames."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


def pick_indices(total: int, count: int) -> np.ndarray:
    """``min(count, total)`` distinct frame indices, the centres of equal parts of the clip.

    Centres rather than the very first and last frames, which are often fades or cuts.
    """
    if total <= 0 or count <= 0:
        return np.zeros(0, dtype=np.int64)
    picked = min(count, total)
    # Parts are total / picked >= 1 frames long, so the centres are distinct.
    return np.floor((np.arange(picked) + 0.5) * total / picked).astype(np.int64)


def title_height(tile_width: int) -> int:
    """Height in pixels of the title band above the tiles (0 when there is no title)."""
    return max(20, tile_width // 8)


def mark_height(columns: int, tile_width: int, mark: str) -> int:
    """Height in pixels of the ``mark`` banner on a sheet of ``columns`` tiles."""
    return int(banner(columns * tile_width, mark).shape[0])


def contact_sheet(
    frames: FrameSequence,
    *,
    count: int = 12,
    columns: int = 4,
    tile_width: int = 256,
    overlays: Overlays | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    title: str | None = None,
    mark: str | None = None,
) -> np.ndarray:
    """An RGB uint8 grid of ``count`` evenly spaced frames (all of them when fewer).

    Tiles are ``tile_width`` px wide, keeping the first picked frame's aspect ratio
    (``tile_height = round(tile_width * H / W)``), ``min(columns, picked)`` per row, in
    ``ceil(picked / columns)`` rows, under a :func:`title_height` band when ``title`` is
    given. ``overlays`` (N rows for the N frames) are drawn on each tile after resizing,
    so lines keep their thickness. ``timestamps`` (N,) seconds label each tile with its
    time; by default a ``timestamps`` attribute of ``frames`` is used when present.
    ``mark`` (a rejected video's "REJECTED: <reasons>") is written on a red
    :func:`~dpl_assets.visualize.overlay.banner` across the sheet, between the title band
    and the tiles (:func:`mark_height` rows).
    """
    total = len(frames)
    indices = pick_indices(total, count)
    if indices.size == 0:
        raise ValueError(f"no frames to show (the clip has {total}, count is {count})")
    if columns <= 0 or tile_width <= 0:
        raise ValueError(f"columns and tile_width must be positive, not {columns}, {tile_width}")
    if timestamps is None:
        timestamps = getattr(frames, "timestamps", None)

    columns = min(columns, indices.size)
    rows = math.ceil(indices.size / columns)
    first = frames[int(indices[0])]  # its size sets the tiles' aspect ratio
    height, width = first.shape[:2]
    tile_height = max(1, round(tile_width * height / width))
    band = banner(columns * tile_width, mark) if mark else None
    title_rows = title_height(tile_width) if title else 0
    top = title_rows + (band.shape[0] if band is not None else 0)
    sheet = np.full((top + rows * tile_height, columns * tile_width, 3), BACKGROUND, np.uint8)
    if band is not None:
        sheet[title_rows:top] = band

    for slot, index in enumerate(indices):
        rgb = first if slot == 0 else frames[int(index)]
        tile = _tile(rgb, int(index), tile_width, tile_height, overlays, timestamps)
        row, column = divmod(slot, columns)
        y, x = top + row * tile_height, column * tile_width
        sheet[y : y + tile_height, x : x + tile_width] = tile
    if title:
        # A view: draws into the sheet.
        put_label(sheet[:title_rows], title, font_scale=title_rows / 40)
    return sheet


def _tile(
    rgb: np.ndarray,
    index: int,
    width: int,
    height: int,
    overlays: Overlays | None,
    timestamps: Sequence[float] | np.ndarray | None,
) -> np.ndarray:
    """One frame resized to (height, width), its overlay drawn, and labelled."""
    source_size = (rgb.shape[1], rgb.shape[0])
    # Area averaging when shrinking (no aliasing), bilinear when enlarging.
    shrinking = width < rgb.shape[1]
    tile = cv2.resize(
        rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    if overlays is not None:
        tile = overlays.draw(index, tile, source_size=source_size)
    label = f"#{index}"
    if timestamps is not None and np.isfinite(timestamps[index]):
        label += f"  {float(timestamps[index]):.2f} s"
    put_label(tile, label, corner="bottom-left")
    return tile


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Save RGB uint8 (H, W, 3) as a PNG at ``path``, atomically."""
    atomic_write_bytes(Path(path), encode_image(rgb, "png"))
