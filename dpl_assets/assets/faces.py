"""Face nodes: detection, tracking and landmarks (one computation, three node names), then
per-frame geometry; their assets are generated from these declarations."""

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from dpl_assets.assets.av_sync import SPEECH_INPUT, activity_on_frames
from dpl_assets.assets.config import NodeConfig
from dpl_assets.nodes.av_sync import DEFAULT_MAX_LAG_FRAMES, sync_tracks
from dpl_assets.nodes.blinks import eye_openness
from dpl_assets.nodes.face_tracking import TrackSummary, tracks_record
from dpl_assets.nodes.faces import (
    DEFAULT_DETECT_EVERY,
    DEFAULT_LANDMARK_MODE,
    FaceAnalyzer,
    FaceModel,
    LandmarkMode,
    check_coverage,
    fill_gaps,
    landmarks_in_boxes,
    track_faces,
)
from dpl_assets.nodes.fan_faces import FanFaceModel
from dpl_assets.nodes.head_pose import head_pose as estimate_head_pose
from dpl_assets.nodes.mediapipe_faces import import_mediapipe
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.video_io import VideoIO


class FaceAlignmentConfig(NodeConfig):
    """``FaceAlignmentNode`` / ``FaceDetectionNode`` / ``FaceLandmarksNode``."""

    backend: Literal["mediapipe", "face_alignment"] = Field(
        default="mediapipe",
        description="'mediapipe' (bundled, offline, adds the 478-point mesh) or "
        "'face_alignment' (the original's S3FD + FAN; needs its weights, see README).",
    )
    device: str = Field(
        default="auto", description="face_alignment backend: 'auto', 'cpu' or 'cuda:N'."
    )

    filter_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Minimum face detection confidence."
    )
    landmark_mode: LandmarkMode = Field(
        default=DEFAULT_LANDMARK_MODE,
        description="'tracking': the detector every detect_every frames (and when a face is "
        "lost), a tracking-mode mesh following each face in between; 'static': the detector "
        "and a static mesh on every frame (the output before tracking mode). The "
        "face_alignment backend, and landmarks in given raw_bboxes, are always static.",
    )
    detect_every: int = Field(
        default=DEFAULT_DETECT_EVERY,
        ge=1,
        description="Tracking mode: frames between detector runs (a face appearing while "
        "another is followed is found within this many frames).",
    )
    max_gap_frames: int = Field(
        default=5, ge=0, description="Gaps without a face up to this long are interpolated."
    )
    min_face_coverage: float = Field(
        default=0.5, ge=0, le=1, description="Reject clips with a face in fewer frames."
    )
    min_track_frames: int = Field(
        default=3, ge=1, description="A face must persist this many frames to count."
    )
    follow: Literal["largest", "speaking"] = Field(
        default="largest",
        description="Which face the clip follows: 'largest' (largest summed box area) or "
        "'speaking' (the face whose mouth moves with the audio, as AvSyncNode's correlation "
        "finds it, from volume or wav; the largest when the video has no audio or no face's "
        "mouth can be scored; "
        "not used with given raw_bboxes).",
    )
    max_lag_frames: int = Field(
        default=DEFAULT_MAX_LAG_FRAMES,
        ge=1,
        le=100,
        description="follow='speaking': audio-visual lags tried, -this..+this frames.",
    )
    num_workers: int = Field(default=2, ge=1, description="Videos analysed in parallel.")


class HeadPoseConfig(NodeConfig):
    pass


class BlinksConfig(NodeConfig):
    pass


FACE_OUTPUTS = ("raw_bboxes", "landmarks", "landmarks_mesh", "face_mask", "faces", "face_tracks")

# face_mask codes
NO_FACE, DETECTED, GAP_FILLED = 0, 1, 2


def face_model(config: FaceAlignmentConfig, device: Callable[[], str]) -> FaceModel:
    """The configured face model: MediaPipe on the CPU, or face-alignment on ``device()``."""
    if config.backend == "face_alignment":
        return FanFaceModel(config.filter_threshold, device=device())
    import_mediapipe()  # here, not at the first frame: its 1-2 s are start-up

    return FaceAnalyzer(config.filter_threshold)


def analyze_faces(io: VideoIO, config: FaceAlignmentConfig) -> dict[str, Any]:
    """Faces of the video: every face tracked across frames, one identity followed (the
    largest, most persistent track; detector and mesh as ``landmark_mode`` and
    ``detect_every`` say); where the inputs give the video's ``raw_bboxes``,
    landmarks are found in those boxes instead (no detection). Gaps up to
    ``max_gap_frames`` are filled; clips without a face or with face coverage under
    ``min_face_coverage`` are rejected. Outputs ``raw_bboxes`` (N, 5), ``landmarks``
    (N, 68, 2), ``landmarks_mesh`` (N, 478, 3; NaN with the face_alignment backend),
    ``face_mask`` (N,), the ``faces`` record and the ``face_tracks`` record (every track's
    boxes and mouth opening, the followed one first). ``follow="speaking"`` follows the
    face whose mouth moves with the audio instead of the largest (from ``volume`` or
    ``wav``; the largest, said in ``faces``, when the video has neither).
    """
    images: ImageStackRef = io["images"]
    follow = _speaking_face(io, len(images), config) if config.follow == "speaking" else None
    with io.frames("images") as frames:  # decoded again from the video when it can
        if io.given("raw_bboxes"):  # the user's boxes: landmarks in them, no detection
            result = landmarks_in_boxes(io.model, frames, io["raw_bboxes"])
        else:
            result = track_faces(
                io.model, frames, config.landmark_mode, config.detect_every, follow
            )
    width, height = int(images.attrs["width"]), int(images.attrs["height"])
    result = fill_gaps(result, config.max_gap_frames, in_place=True)
    check_coverage(result, config.min_face_coverage, config.min_track_frames)
    mask = np.where(result.detected, DETECTED, np.where(result.valid, GAP_FILLED, NO_FACE))
    return {
        # Already float32 (FaceTrackResult): no copies of the clip's arrays.
        "raw_bboxes": result.raw_bboxes.astype(np.float32, copy=False),
        "landmarks": result.landmarks.astype(np.float32, copy=False),
        "landmarks_mesh": result.landmarks_mesh.astype(np.float32, copy=False),
        "face_mask": mask.astype(np.uint8),
        "faces": {
            **result.info,
            "frame_width": width,
            "frame_height": height,
            **_follow_note(config, follow is not None),
        },
        "face_tracks": tracks_record(result.tracks, len(result)),
    }


def _follow_note(config: FaceAlignmentConfig, speaking: bool) -> dict[str, str]:
    """What the ``faces`` record says of ``follow`` (nothing for the default, so the
    record is as before): ``speaking``, or why the largest face was followed instead."""
    if config.follow != "speaking":
        return {}
    return {"follow": "speaking" if speaking else "largest: the video has no audio"}


def _speaking_face(
    io: VideoIO, count: int, config: FaceAlignmentConfig
) -> Callable[[list[TrackSummary]], int | None] | None:
    """``follow`` for :func:`track_faces`: the track whose mouth opening correlates best
    with the audio's activity on the ``count`` frames (:func:`sync_tracks`), None (the
    largest) when no track can be scored; None when the video has no audio (neither
    ``volume`` nor ``wav``)."""
    activity = activity_on_frames(io, count)
    if activity is None:
        return None

    def speaking(tracks: list[TrackSummary]) -> int | None:
        mouths = [track.on_frames(count)[1] for track in tracks]
        return sync_tracks(mouths, activity, config.max_lag_frames)[1]

    return speaking


def face_totals(per_output: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """The step's totals, on its ``faces`` output: videos and frames with a face, the most
    faces seen in one frame."""
    found = [r for r in per_output["faces"].values() if isinstance(r, dict)]
    return {
        "faces": {
            "videos_with_face": len(found),
            "frames_with_face": sum(int(r["frames_with_face"]) for r in found),
            "most_faces_in_a_frame": max(
                (int(r["max_faces_in_a_frame"] or 0) for r in found), default=0
            ),
        }
    }


def face_node(name: str, main: str, summary: str) -> NodeSpec:
    """A node name for the one face computation, whose main output is ``main``."""
    return NodeSpec(
        name=name,
        inputs=("images",),
        outputs=(main, *(key for key in FACE_OUTPUTS if key != main)),
        config=FaceAlignmentConfig,
        summary=summary,
        # Given boxes are read when the inputs have them, whichever name runs the node;
        # the audio only with follow="speaking".
        optional_inputs=("raw_bboxes", "wav", "volume", *SPEECH_INPUT),
        compute=analyze_faces,
        model=face_model,
        preload=("mediapipe",),  # the default backend's library: 1-2 s to import
        summarize=face_totals,
        group="faces",
    )


FACE_ALIGNMENT_NODE = face_node(
    "FaceAlignmentNode", "landmarks",
    "one tracked face per clip: 68 landmarks, detector box, 478-point mesh, face mask "
    "and the tracking record",
)  # fmt: skip
FACE_DETECTION_NODE = face_node(
    "FaceDetectionNode", "raw_bboxes", "the face computation, named by its detector box"
)  # fmt: skip
# Detection, tracking and landmarks are one computation (a graph naming several of these
# nodes runs it once); where the inputs give a video's raw_bboxes, landmarks are found in
# those boxes without detection, as the original FaceLandmarksNode did.
FACE_LANDMARKS_NODE = face_node(
    "FaceLandmarksNode", "landmarks_mesh",
    "landmarks in the given raw_bboxes (else detected), and the face outputs",
)  # fmt: skip


def head_pose_of(inputs: Mapping[str, Any], config: HeadPoseConfig) -> dict[str, np.ndarray]:
    """Head pose (N, 6) float32 ``[yaw, pitch, roll]`` degrees + translation, from the
    landmarks and the frame size in the ``faces`` record."""
    size = (inputs["faces"]["frame_width"], inputs["faces"]["frame_height"])
    return {"head_pose": estimate_head_pose(inputs["landmarks"], size)}


HEAD_POSE_NODE = NodeSpec(
    name="HeadPoseNode",
    inputs=("landmarks", "faces"),
    outputs=("head_pose",),
    config=HeadPoseConfig,
    summary="solvePnP of six landmarks against a generic 3D face",
    compute=head_pose_of,
    group="faces",
)


def blinks_of(inputs: Mapping[str, Any], config: BlinksConfig) -> dict[str, np.ndarray]:
    """Eye opening (N, 3) float32 ``[left, right, average]`` from the 68 landmarks."""
    return {"blinks": eye_openness(inputs["landmarks"])}


BLINKS_NODE = NodeSpec(
    name="BlinksNode",
    inputs=("landmarks",),
    outputs=("blinks",),
    config=BlinksConfig,
    summary="eye opening, as the original defined it",
    compute=blinks_of,
    group="faces",
)
