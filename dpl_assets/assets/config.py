"""Typed node parameters (Dagster ``Config``), named as in the original tool."""

from typing import Literal

import dagster as dg
from pydantic import Field

from dpl_assets.nodes.wav2vec import DEFAULT_CHECKPOINT


class NodeConfig(dg.Config):
    """Parameters every node has."""

    recompute: bool = Field(
        default=False,
        description="Recompute videos whose artefact (or rejection) already exists.",
    )


class ProbeConfig(NodeConfig):
    pass


class WavConfig(NodeConfig):
    """``VideoToWavNode`` (source=video) and ``AacToWavNode`` (source=aac)."""

    source: Literal["video", "aac"] = Field(
        default="video", description="Which registered source file the audio is taken from."
    )
    num_jobs: int = Field(default=4, ge=1, description="ffmpeg processes run in parallel.")


class VolumeConfig(NodeConfig):
    pass


class Wav2vecConfig(NodeConfig):
    """``Wav2vecNode``."""

    checkpoint: str = Field(
        default=DEFAULT_CHECKPOINT,
        description="Model hub id or local folder holding config.json + weights.",
    )
    features: str = Field(
        default="quantized",
        description="'quantized' (projected quantized states, (T, 256) for base) "
        "or 'hidden:K' (transformer hidden state K; -1 = last).",
    )
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")
    batch_size: int = Field(default=8, ge=1, description="Audio windows per forward pass.")
    num_workers: int = Field(default=4, ge=1, description="Threads reading audio files.")
    chunk_seconds: float = Field(default=10.0, gt=0, description="Window length for long audio.")
    context_seconds: float = Field(
        default=1.0, ge=0, description="Context each window adds on both sides (discarded)."
    )


class VideoToImagesConfig(NodeConfig):
    """``VideoToImagesNode``."""

    ext: Literal[".jpg", ".png"] = Field(
        default=".jpg", description="Image format inside the stack: JPEG or lossless PNG."
    )
    quality: int = Field(default=95, ge=1, le=100, description="JPEG quality.")
    fps: float | None = Field(
        default=None, gt=0, description="Resample to this constant rate (e.g. 25); None keeps all."
    )
    max_side: int = Field(
        default=0, ge=0, description="Downscale so the longer side is at most this; 0 = native."
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos decoded in parallel.")


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
    max_gap_frames: int = Field(
        default=5, ge=0, description="Gaps without a face up to this long are interpolated."
    )
    min_face_coverage: float = Field(
        default=0.5, ge=0, le=1, description="Reject clips with a face in fewer frames."
    )
    min_track_frames: int = Field(
        default=3, ge=1, description="A face must persist this many frames to count."
    )
    num_workers: int = Field(default=2, ge=1, description="Videos analysed in parallel.")


class BboxesConfig(NodeConfig):
    """``TransformRawBboxesNode``, ``FixedBboxesNode``, ``EmocaLikeBboxesNode``."""

    method: Literal["transform_raw", "fixed", "emoca_like"] = "fixed"
    extend_factor: float = Field(default=0.1, description="transform_raw: padding factor.")
    scale: float = Field(default=1.25, gt=0, description="fixed / emoca_like: box scale.")
    window_size: int = Field(default=5, ge=1, description="emoca_like: sliding window (frames).")
    use_smoothing: bool = Field(default=True, description="emoca_like: Savitzky-Golay smoothing.")
    equal_size: bool = Field(default=True, description="emoca_like: one size for the clip.")
    size_quantile: float = Field(default=0.75, ge=0, le=1, description="emoca_like: that size.")


class CropConfig(NodeConfig):
    """``CropNode``."""

    size_hw: list[int] = Field(
        default=[256, 256], min_length=1, max_length=2,
        description="Crop (height, width) in pixels; one number for a square.",
    )  # fmt: skip
    output_ext: Literal[".jpg", ".png"] = Field(default=".jpg", description="Crop image format.")
    quality: int = Field(default=95, ge=1, le=100, description="JPEG quality.")
    pad_mode: Literal["constant", "edge"] = Field(
        default="constant", description="Fill where a box runs past the frame edge."
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos cropped in parallel.")


class HeadPoseConfig(NodeConfig):
    pass


class BlinksConfig(NodeConfig):
    pass
