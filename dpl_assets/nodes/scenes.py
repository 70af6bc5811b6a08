"""Scene cuts: PySceneDetect's content detector on the project's own frames.

PySceneDetect (https://www.scenedetect.com, ``scenedetect`` 0.7) scores each frame by how
much its hue, saturation and luma (HSV, 8-bit) differ from the previous frame's, as the
mean absolute pixel difference averaged over the three channels (0-255), and cuts where
the score reaches ``threshold`` (27 by default), at most one cut per ``min_scene_len``
frames (its merge filter: a burst of high scores, a flash or fast motion, merges into one
cut). Frames are fed one at a time through its detector API
(``ContentDetector.process_frame``), never through its own video backends, so frame i is
the i-th frame of the ``images`` stack and cut indices line up with every per-frame
datatype. As its ``SceneManager`` does, frames are first downscaled (bilinear) by
``width / downscale_width`` when wider than ``downscale_width`` (its auto downscale keeps
at least 256 px).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import cv2
import numpy as np

DEFAULT_THRESHOLD = 27.0
"""ContentDetector's default threshold (mean HSV difference, 0-255)."""
DEFAULT_MIN_SCENE_LEN = 15
"""ContentDetector's default minimum scene length (frames)."""
DEFAULT_DOWNSCALE_WIDTH = 256
"""PySceneDetect's ``DEFAULT_MIN_WIDTH``: the width its auto downscale keeps at least."""


def detect_cuts(
    frames: Iterable[np.ndarray],
    fps: float,
    threshold: float = DEFAULT_THRESHOLD,
    min_scene_len: int = DEFAULT_MIN_SCENE_LEN,
    downscale_width: int = DEFAULT_DOWNSCALE_WIDTH,
) -> tuple[list[int], int]:
    """Cut frames of a shot sequence: (indices of the first frame of every scene after the
    first, ascending; the number of frames read).

    ``frames``: RGB uint8 (H, W, 3), in order; ``fps``: their nominal rate (PySceneDetect's
    timecodes need one; cuts are found by frame index, so it changes nothing here);
    ``threshold``: content score (0-255) that makes a cut; ``min_scene_len``: frames a
    scene lasts at least; ``downscale_width``: frames wider than this are shrunk by the
    factor ``width / downscale_width`` first (PySceneDetect's
    ``compute_downscale_factor``; 0 keeps full size).
    """
    from scenedetect import ContentDetector, FrameTimecode
    from scenedetect.scene_manager import compute_downscale_factor

    detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_len)
    cuts: list[int] = []
    count = 0
    for index, rgb in enumerate(frames):
        height, width = rgb.shape[:2]
        factor = compute_downscale_factor(width, downscale_width) if downscale_width else 1
        if factor > 1:
            size = (max(1, round(width / factor)), max(1, round(height / factor)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # PySceneDetect reads OpenCV's BGR order
        timecode = FrameTimecode(index, fps=fps)
        cuts += [cut.frame_num for cut in detector.process_frame(timecode, bgr)]
        count = index + 1
    if count:
        cuts += [cut.frame_num for cut in detector.post_process(FrameTimecode(count - 1, fps))]
    return sorted(set(cuts)), count


def scene_ranges(cuts: Iterable[int], count: int) -> np.ndarray:
    """int64 (S, 2) ``[start_frame, end_frame)`` of the scenes of ``count`` frames split at
    ``cuts`` (first frames of new scenes, in (0, count)); (0, 2) for no frames."""
    if count <= 0:
        return np.zeros((0, 2), np.int64)
    edges = [0, *sorted({int(c) for c in cuts if 0 < c < count}), count]
    return np.array(list(itertools.pairwise(edges)), np.int64)
