"""``SceneCutNode``: the shots of each video's frames (PySceneDetect's content detector); its
asset is generated from this declaration.

Stored as ``scenes``, a JSON record (a few numbers per shot: no array file needed):
``scenes`` ``[[start_frame, end_frame), ...]`` covering frames 0..N of ``images`` in order
(int64 (S, 2) as :func:`~dpl_assets.nodes.scenes.scene_ranges` gives it), ``cut_frames``
(the first frame of every scene after the first), ``cut_times_s`` (those frames'
timestamps on the container clock), ``frames`` (N) and the detector's parameters.
"""

from typing import Any

from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.media.timeline import NOMINAL_FPS
from dpl_assets.nodes.scenes import (
    DEFAULT_DOWNSCALE_WIDTH,
    DEFAULT_MIN_SCENE_LEN,
    DEFAULT_THRESHOLD,
    detect_cuts,
    scene_ranges,
)
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.video_io import VideoIO


class SceneCutConfig(NodeConfig):
    """``SceneCutNode``."""

    threshold: float = Field(
        default=DEFAULT_THRESHOLD,
        gt=0,
        description="Content score (mean HSV change, 0-255) that makes a cut.",
    )
    min_scene_len: int = Field(
        default=DEFAULT_MIN_SCENE_LEN, ge=1, description="Frames a scene lasts at least."
    )
    downscale_width: int = Field(
        default=DEFAULT_DOWNSCALE_WIDTH,
        ge=0,
        description="Frames wider than this are shrunk by width / downscale_width first "
        "(PySceneDetect's auto downscale); 0: full size.",
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos analysed in parallel threads.")


def scenes_of(io: VideoIO, config: SceneCutConfig) -> dict[str, Any]:
    """Scenes of the video's ``images`` frames (decoded again by their recipe where
    possible, :meth:`~dpl_assets.storage.video_io.VideoIO.frames`): frame ranges, the cut
    frames and their times."""
    images: ImageStackRef = io["images"]
    times = images.frame_times()
    fps = float(images.attrs.get("fps") or 0.0) or NOMINAL_FPS
    with io.frames("images") as frames:
        cuts, count = detect_cuts(
            frames, fps, config.threshold, config.min_scene_len, config.downscale_width
        )
    scenes = scene_ranges(cuts, count)
    cut_frames = [int(start) for start in scenes[1:, 0]]
    record = {
        "frames": count,
        "scene_count": len(scenes),
        "cut_count": len(cut_frames),
        "scenes": scenes.tolist(),
        "cut_frames": cut_frames,
        "cut_times_s": [round(float(times[i]), 6) for i in cut_frames],
        "threshold": config.threshold,
        "min_scene_len": config.min_scene_len,
        "downscale_width": config.downscale_width,
        "detector": "scenedetect ContentDetector",
    }
    return {"scenes": record}


SCENE_CUT_NODE = NodeSpec(
    name="SceneCutNode",
    inputs=("images",),
    outputs=("scenes",),
    config=SceneCutConfig,
    summary="shots of the frames: [start, end) frame ranges and cut times (PySceneDetect)",
    compute=scenes_of,
    preload=("scenedetect",),
    group="vision",
)
