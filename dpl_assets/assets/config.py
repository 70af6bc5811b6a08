"""Typed node parameters (Dagster ``Config``), named as in the original tool."""

from typing import Literal

import dagster as dg
from pydantic import Field, field_validator, model_validator

from dpl_assets.datatypes import DATATYPES, packable_keys
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


class H5DatasetConfig(NodeConfig):
    """``H5DatasetNode``: one training HDF5 file per video with the chosen datatypes.

    Every file also gets the per-frame validity data: ``face_mask`` whenever the video has
    the face node's (named in ``datatypes`` or not) and ``audio_mask`` with audio features.
    """

    datatypes: list[str] = Field(
        default=["images", "crops", "landmarks", "bboxes", "head_pose", "blinks", "volume"],
        min_length=1,
        description="Datatypes to include; audio features are resampled onto the frames "
        "(silence and audio_mask False after the audio's end); face_mask is added whenever "
        "the video has one.",
    )
    image_format: Literal["jpeg", "png"] = Field(default="jpeg", description="Stored images.")
    jpeg_quality: int = Field(default=95, ge=1, le=100, description="JPEG quality.")
    layout: Literal["vlen", "filter32019"] = Field(
        default="vlen",
        description="'vlen' (plain h5py) or 'filter32019' (the original's jpegHDF5 files).",
    )
    window_size: int = Field(
        default=0, ge=0, description="Moving average (frames) over resampled audio; 0 = none."
    )
    fps: float | None = Field(
        default=None, gt=0, description="Frame times i / fps instead of the frames' timestamps."
    )
    audio_blink_feature: bool = Field(
        default=False,
        description="Add audio_blink_feature (N, D + 3): wav2vec, volume, left and right eye "
        "opening per frame (needs wav2vec, volume and blinks in datatypes).",
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos packed in parallel.")

    @field_validator("datatypes")
    @classmethod
    def _packable(cls, datatypes: list[str]) -> list[str]:
        # Dagster config cannot take a list of Literals; the registry says what is packable
        # (image stacks, per-frame and audio-step arrays, custom nodes' ones too).
        packable = packable_keys()
        unknown = [key for key in datatypes if key not in DATATYPES]
        if unknown:
            raise ValueError(
                f"unknown datatypes {unknown}: not built in, and no node loaded declares them; "
                "a custom node's datatypes are known once the node writing them is in the graph "
                "(or in DPL_NODES, for the Dagster UI); "
                f"packable datatypes: {', '.join(packable)}"
            )
        unpackable = [key for key in datatypes if key not in packable]
        if unpackable:
            raise ValueError(f"cannot pack {unpackable}; packable datatypes: {', '.join(packable)}")
        return datatypes

    @model_validator(mode="after")
    def _feature_inputs(self) -> "H5DatasetConfig":
        missing = {"wav2vec", "volume", "blinks"} - set(self.datatypes)
        if self.audio_blink_feature and missing:
            raise ValueError(f"audio_blink_feature needs {sorted(missing)} in datatypes")
        return self


class SourceSequenceConfig(H5DatasetConfig):
    """``SourceSequenceNode``: the original's source sequence: frames, boxes, crops, FLAME
    parameters, landmarks (2D and 3D), renders and blinks."""

    datatypes: list[str] = Field(
        default=[
            "images", "bboxes", "crops", "shape", "exp", "pose", "cam", "light", "landmarks",
            "landmarks3d", "render_uv", "render_normal", "blinks",
        ],
        min_length=1,
    )  # fmt: skip


class Vid2vidDatasetConfig(H5DatasetConfig):
    """``Vid2vidDatasetNode``: crops with their UV and normal renders."""

    datatypes: list[str] = Field(default=["crops", "render_uv", "render_normal"], min_length=1)


class Vid2vidAudioConfig(H5DatasetConfig):
    """``Vid2vidAudioNode``: crops + wav2vec/volume on the crop frames, smoothed, and
    ``audio_blink_feature`` (N, D + 3) = wav2vec, volume, left and right eye opening."""

    datatypes: list[str] = Field(default=["crops", "wav2vec", "volume", "blinks"], min_length=1)
    window_size: int = Field(
        default=16, ge=0, description="Moving average (frames) over resampled audio; 0 = none."
    )
    audio_blink_feature: bool = Field(
        default=True, description="Add audio_blink_feature (N, D + 3) (see H5DatasetNode)."
    )


class PreviewConfig(NodeConfig):
    """``PreviewNode``: an mp4 per video with the face overlays and the 16 kHz audio."""

    num_jobs: int = Field(default=2, ge=1, description="Videos rendered in parallel.")


class ContactSheetConfig(NodeConfig):
    """``ContactSheetNode``: a PNG grid of evenly spaced frames with the face overlays."""

    count: int = Field(default=12, ge=1, description="Frames shown.")
    columns: int = Field(default=4, ge=1, description="Frames per row.")
    tile_width: int = Field(default=256, ge=16, description="Width of each frame, px.")
    num_jobs: int = Field(default=2, ge=1, description="Videos drawn in parallel.")


class DatasetPackConfig(dg.Config):
    """``DatasetPackNode``: append every video's packed file to one sharded dataset."""

    source: Literal["h5_dataset", "source_sequence", "vid2vid_audio", "vid2vid_dataset"] = Field(
        default="h5_dataset", description="Which per-video packed files to collect."
    )
    max_videos_per_shard: int = Field(default=1000, ge=1, description="Videos per shard file.")
    max_shard_gb: float = Field(default=4.0, gt=0, description="Shard size limit, GB.")


class DatasetSummaryConfig(dg.Config):
    """``DatasetSummaryNode``: plots and a markdown digest over every registered video."""


class EmocaConfig(NodeConfig):
    """``EmocaNode`` (source crops) / ``EmocaFromImagesNode`` (source images + bboxes)."""

    weights_path: str = Field(
        default="", description="EMOCA checkpoint (.ckpt) or DECA model (.tar); see README."
    )
    source: Literal["crops", "images"] = Field(
        default="crops", description="Encode the crops, or crop the images by bboxes on the fly."
    )
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")
    batch_size: int = Field(default=4, ge=1, description="Images per forward pass.")
    use_smoothing: bool = Field(default=False, description="Savitzky-Golay over time.")


class FlameConfig(NodeConfig):
    """``FlameNode``: FLAME vertices and 68 3D landmarks from shape, expression and pose."""

    flame_model_path: str = Field(default="", description="FLAME generic_model.pkl.")
    flame_lmk_embedding_path: str = Field(default="", description="landmark_embedding.npy.")
    n_shape: int = Field(default=100, ge=1, le=300, description="Shape coefficients used.")
    n_exp: int = Field(default=50, ge=1, le=100, description="Expression coefficients used.")
    batch_size: int = Field(default=256, ge=1, description="Frames per batch.")
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")


class RenderingConfig(NodeConfig):
    """``RenderingNode``: normal, UV and mask renders of the FLAME mesh."""

    head_template_path: str = Field(default="", description="Head template .obj with UVs.")
    image_size: int = Field(default=224, ge=16, description="Render size, px (square).")
    uv_size: int = Field(default=256, ge=16, description="UV map size, px.")
    batch_size: int = Field(default=16, ge=1, description="Frames per batch.")
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")
    backend: Literal["auto", "torch", "pytorch3d"] = Field(
        default="auto", description="Rasterizer: pytorch3d when importable, else pure torch."
    )


class A2enConfig(NodeConfig):
    """``A2enDatasetNode``: the A2EN training file per video."""

    fps: float | None = Field(
        default=None, gt=0, description="Frame rate of exp; default: the images' timestamps."
    )
