"""The datatype registry: the one place that says what each datatype key means.

A datatype key (``video``, ``wav``, ``wav2vec``, ...) names both a Dagster asset and the folder
``{output_dir}/{key}/`` that holds its files, as in the original tool. Each datatype has a
storage format, the file extensions accepted when users give a root folder for it, for
array datatypes a shape/dtype contract that every written array is checked against, and
the axis its rows run along (video frames or 50 Hz audio steps) with its NaN rule, and the
extra rules its output check applies: value rules of arrays (:data:`ValueRule`) and the
check of a datatype written as a whole file (:data:`FileCheck`). These are plain data, run
by :mod:`dpl_assets.validation`, which names no datatype. What a packer may pack and which
datatypes have output checks follow from these facts (:func:`packable_keys`,
:func:`dpl_assets.validation.checked_keys`). The registry also names the two reference
artefacts the rows are counted against (:data:`FRAME_REFERENCE`, :data:`AUDIO_REFERENCE`).

Custom nodes (:mod:`dpl_assets.specs`) add their own datatypes with :func:`register_datatype`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

from dpl_assets.datatype_rules import (
    ArrayContract,
    Codes,
    CropBoxes,
    DetectionBoxes,
    FileCheck,
    NonNegative,
    NpzFrames,
    PngImage,
    PointsNearFrame,
    PreviewVideo,
    RecordStat,
    TrainingFile,
    ValueRule,
)

FRAME: Final = "frame"
"""``Datatype.per``: one row (or image) per video frame; N = the frame count of the
video's :data:`FRAME_REFERENCE` stack."""

AUDIO_STEP: Final = "audio_step"
"""``Datatype.per``: one row per 50 Hz audio step (320 samples at 16 kHz), as wav2vec;
T follows from the length of the video's :data:`AUDIO_REFERENCE` audio."""

FRAME_REFERENCE: Final = "images"
"""The image stack that defines a video's frames: every other per-frame datatype (arrays,
image stacks, training files, previews) must have its frame count, and its frame size is
the one boxes and landmarks are checked against."""

AUDIO_REFERENCE: Final = "wav"
"""The 16 kHz mono audio of a video (:attr:`StorageFormat.WAV`): audio-step datatypes
have as many rows as its samples give 50 Hz steps."""

AUDIO_SAMPLE_RATE_HZ = 16_000
"""Every ``wav`` artefact is mono PCM16 at this rate: what wav2vec-family models expect."""


class StorageFormat(enum.Enum):
    """How a datatype's per-video artefact is stored on disk."""

    MEDIA = "media"  # user-provided source files (videos, aac); never written by the pipeline
    WAV = "wav"  # 16 kHz mono PCM16 WAV
    NPY = "npy"  # one numpy array per video
    JSON = "json"  # one JSON object per video
    IMAGE_STACK = "image_stack"  # HDF5: one encoded JPEG/PNG per frame + timestamps
    FILE = "file"  # any other file a node writes whole (packed HDF5, mp4, png): read as a path


@dataclass(frozen=True)
class Datatype:
    """One datatype: its key, storage format and accepted extensions.

    ``extensions`` are matched case-insensitively; a file belongs to the datatype when its
    name ends with *any* of them. The first one is the extension the pipeline writes.
    ``per``: the axis the rows run along (:data:`FRAME`, :data:`AUDIO_STEP`, or None);
    ``nan_rows``: a frame without a face is a whole NaN row (else no NaN is allowed).
    ``values``: extra rules of an array's values (:data:`ValueRule`); ``file_check``: what
    the output check verifies of a :attr:`StorageFormat.FILE` datatype (None: nothing, and
    the datatype has no output check). ``record_stats``: numbers of a JSON record shown
    with each materialization (:class:`RecordStat`). ``window_samples``: for audio-step
    arrays, the 16 kHz samples each step summarizes (its time is the window's centre; None:
    wav2vec's 400). ``columns``: names of the entries of an array's last axis, in order
    (a table's columns), so readers need not guess them; empty when not a table.
    """

    key: str
    storage: StorageFormat
    extensions: tuple[str, ...]
    description: str
    contract: ArrayContract | None = None
    per: Literal["frame", "audio_step"] | None = None
    nan_rows: bool = False
    values: tuple[ValueRule, ...] = ()
    file_check: FileCheck | None = None
    record_stats: tuple[RecordStat, ...] = ()
    window_samples: int | None = None
    columns: tuple[str, ...] = ()

    @property
    def packable(self) -> bool:
        """A packer can put it in a training file: an image stack, or an array with one row
        per frame or per audio step (audio steps are resampled onto the frames)."""
        if self.storage is StorageFormat.IMAGE_STACK:
            return True
        return self.storage is StorageFormat.NPY and self.per is not None

    @property
    def output_extension(self) -> str:
        return self.extensions[0]

    def matches(self, filename: str) -> bool:
        return filename.lower().endswith(tuple(self.extensions))

    def strip_extension(self, filename: str) -> str:
        """``filename`` without the longest of this datatype's extensions it ends with."""
        lowered = filename.lower()
        ext = max((e for e in self.extensions if lowered.endswith(e)), key=len, default=None)
        if ext is not None:  # the first of the longest, as a stable sort by length would
            return filename[: len(filename) - len(ext)]
        raise ValueError(
            f"{filename!r} has none of the extensions {self.extensions} of {self.key!r}"
        )


A2EN_ARRAYS = ("wav2vec", "volume", "exp", "jaw", "left_blink", "right_blink", "average_blink")
"""Arrays every A2EN ``.npz`` holds (:mod:`dpl_assets.assets.a2en` writes them)."""

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")

DATATYPES: dict[str, Datatype] = {
    dt.key: dt
    for dt in (
        Datatype("video", StorageFormat.MEDIA, VIDEO_EXTENSIONS, "Source talking-head videos."),
        Datatype("aac", StorageFormat.MEDIA, (".m4a", ".aac"), "Source AAC audio tracks."),
        Datatype(
            "probe",
            StorageFormat.JSON,
            (".json",),
            "Per-video record: source path, size, container, duration, streams, rotation.",
        ),
        Datatype(
            "wav",
            StorageFormat.WAV,
            (".wav",),
            f"Mono PCM16 audio at {AUDIO_SAMPLE_RATE_HZ} Hz; in memory float32 (N,) in [-1, 1].",
            ArrayContract(("N",), "float32"),
        ),
        Datatype(
            "images",
            StorageFormat.IMAGE_STACK,
            (".h5",),
            "Video frames, upright, native size unless resized: HDF5 of JPEG/PNG + timestamps.",
            per=FRAME,
        ),
        Datatype(
            "scenes",
            StorageFormat.JSON,
            (".json",),
            "Shots of images: [start_frame, end_frame) per scene, cut frames and their times "
            "(s) (PySceneDetect content detector).",
            record_stats=(RecordStat("scene_count", "scenes"), RecordStat("cut_count", "cuts")),
        ),
        Datatype(
            "segments",
            StorageFormat.JSON,
            (".json",),
            "Training segments: kept [start_frame, end_frame) ranges of images, dropped spans "
            "with their reasons, seconds kept and dropped per reason (SegmentNode).",
            record_stats=(
                RecordStat("segment_count", "segments"),
                RecordStat("kept_s", "kept_s", scale=1),
                RecordStat("dropped_total_s", "dropped_s", scale=1),
            ),
        ),
        Datatype(
            "segment_ids",
            StorageFormat.NPY,
            (".npy",),
            "Kept segment of each frame (N,) int32: its index in segments, -1 = dropped.",
            ArrayContract(("N",), "int32"),
            per=FRAME,
        ),
        Datatype(
            "crops",
            StorageFormat.IMAGE_STACK,
            (".h5",),
            "Square face crops per frame, same layout as images.",
            per=FRAME,
        ),
        Datatype(
            "aligned_crops",
            StorageFormat.IMAGE_STACK,
            (".h5",),
            "Face crops aligned to a 5-point template per frame (black where no face), "
            "same layout as images.",
            per=FRAME,
        ),
        Datatype(
            "aligned_affines",
            StorageFormat.NPY,
            (".npy",),
            "Per-frame 2x3 affine (N, 2, 3) float32 mapping frame px to aligned-crop px; "
            "NaN = no face.",
            ArrayContract(("N", 2, 3), "float32"),
            per=FRAME,
            nan_rows=True,
        ),
        Datatype(
            "frame_quality",
            StorageFormat.NPY,
            (".npy",),
            "Face quality per frame (N, 5) float32 [sharpness, face_px, yaw_deg, pitch_deg, "
            "brightness]; NaN = no face.",
            ArrayContract(("N", 5), "float32"),
            per=FRAME,
            nan_rows=True,
            columns=("sharpness", "face_px", "yaw_deg", "pitch_deg", "brightness"),
        ),
        Datatype(
            "frame_quality_ok",
            StorageFormat.NPY,
            (".npy",),
            "Per-frame (N,) uint8: 1 = a face meeting every FrameQualityNode threshold, else 0.",
            ArrayContract(("N",), "uint8"),
            per=FRAME,
            values=(Codes((0, 1)),),
        ),
        Datatype(
            "raw_bboxes",
            StorageFormat.NPY,
            (".npy",),
            "Detected face box per frame (N, 5) float32 [x1, y1, x2, y2, conf] px; NaN = none.",
            ArrayContract(("N", 5), "float32"),
            per=FRAME,
            nan_rows=True,
            values=(DetectionBoxes(),),
        ),
        Datatype(
            "landmarks",
            StorageFormat.NPY,
            (".npy",),
            "68-point landmarks (N, 68, 2) float32 px (iBUG order); NaN where no face.",
            ArrayContract(("N", 68, 2), "float32"),
            per=FRAME,
            nan_rows=True,
            values=(PointsNearFrame(),),
        ),
        Datatype(
            "landmarks_mesh",
            StorageFormat.NPY,
            (".npy",),
            "MediaPipe 478-point mesh (N, 478, 3) float32 px (z: relative depth, px scale).",
            ArrayContract(("N", 478, 3), "float32"),
            per=FRAME,
            nan_rows=True,
        ),
        Datatype(
            "face_mask",
            StorageFormat.NPY,
            (".npy",),
            "Per-frame face validity (N,) uint8: 0 no face, 1 detected, 2 gap filled.",
            ArrayContract(("N",), "uint8"),
            per=FRAME,
            values=(Codes((0, 1, 2)),),
        ),
        Datatype(
            "faces",
            StorageFormat.JSON,
            (".json",),
            "Face tracking record: faces seen, the identity followed, coverage, filled frames.",
            record_stats=(
                RecordStat("frames", "video_frames"),
                RecordStat("frames_with_face", "frames_with_face"),
                RecordStat("filled_frames", "frames_gap_filled"),
                RecordStat("tracks_seen", "faces_seen"),
                RecordStat("max_faces_in_a_frame", "most_faces_in_a_frame"),
                RecordStat("coverage", "face_coverage_pct", scale=100),
            ),
        ),
        Datatype(
            "face_tracks",
            StorageFormat.JSON,
            (".json",),
            "Every face track: per frame box and mouth opening (null where absent), the "
            "followed one first.",
        ),
        Datatype(
            "av_sync",
            StorageFormat.JSON,
            (".json",),
            "Audio-visual offset per face track (best lag in frames, positive = audio late; "
            "confidence; the lag curve), the speaking track and its offset.",
            record_stats=(
                RecordStat("offset_frames", "av_offset_frames"),
                RecordStat("confidence", "av_sync_confidence_x100", scale=100),
            ),
        ),
        Datatype(
            "bboxes",
            StorageFormat.NPY,
            (".npy",),
            "Square crop boxes per frame (N, 4) int64 [x1, y1, x2, y2] px; may exceed the frame.",
            ArrayContract(("N", 4), "int64"),
            per=FRAME,
            values=(CropBoxes(),),
        ),
        Datatype(
            "head_pose",
            StorageFormat.NPY,
            (".npy",),
            "Head pose (N, 6) float32 [yaw, pitch, roll] degrees + translation; NaN = no face.",
            ArrayContract(("N", 6), "float32"),
            per=FRAME,
            nan_rows=True,
        ),
        Datatype(
            "blinks",
            StorageFormat.NPY,
            (".npy",),
            "Eye opening (N, 3) float32 [left, right, average] from the 68 landmarks.",
            ArrayContract(("N", 3), "float32"),
            per=FRAME,
            nan_rows=True,
        ),
        Datatype(
            "wav2vec",
            StorageFormat.NPY,
            (".npy",),
            "wav2vec 2.0 features (T, D) float32 at 50 Hz (320-sample hop at 16 kHz).",
            ArrayContract(("T", "D"), "float32"),
            per=AUDIO_STEP,
            window_samples=400,
        ),
        Datatype(
            "volume",
            StorageFormat.NPY,
            (".npy",),
            "Loudness envelope (T,) float32: mean |x| per 320-sample hop, T as for wav2vec.",
            ArrayContract(("T",), "float32"),
            per=AUDIO_STEP,
            window_samples=320,  # mean |x| over one 320-sample hop
            values=(NonNegative(),),
        ),
        Datatype(
            "speech",
            StorageFormat.NPY,
            (".npy",),
            "Speech probability (T,) float32 in [0, 1] per 20 ms step k ([0.02k, 0.02(k+1)) s), "
            "T as for volume (Silero VAD).",
            ArrayContract(("T",), "float32"),
            per=AUDIO_STEP,
            window_samples=320,  # step k covers samples [320 k, 320 k + 320)
            values=(NonNegative(),),
        ),
        Datatype(
            "speech_spans",
            StorageFormat.JSON,
            (".json",),
            "Speech spans [start_s, end_s) on the wav clock, with the threshold and minimum "
            "durations that make speech's boolean per step.",
            record_stats=(
                RecordStat("speech_s", "speech_s", scale=1),
                RecordStat("speech_fraction", "speech_pct", scale=100),
                RecordStat("span_count", "speech_spans"),
            ),
        ),
        Datatype(
            "shape",
            StorageFormat.NPY,
            (".npy",),
            "FLAME shape coefficients per frame (N, S) float32 (EMOCA: S = 100).",
            ArrayContract(("N", "S"), "float32"),
            per=FRAME,
        ),
        Datatype(
            "tex",
            StorageFormat.NPY,
            (".npy",),
            "FLAME albedo (texture) coefficients per frame (N, 50) float32.",
            ArrayContract(("N", "K"), "float32"),
            per=FRAME,
        ),
        Datatype(
            "exp",
            StorageFormat.NPY,
            (".npy",),
            "FLAME expression coefficients per frame (N, E) float32 (EMOCA: E = 50).",
            ArrayContract(("N", "E"), "float32"),
            per=FRAME,
        ),
        Datatype(
            "pose",
            StorageFormat.NPY,
            (".npy",),
            "FLAME pose per frame (N, 6) float32: global rotation, jaw (axis-angle, radians).",
            ArrayContract(("N", 6), "float32"),
            per=FRAME,
        ),
        Datatype(
            "cam",
            StorageFormat.NPY,
            (".npy",),
            "Orthographic camera per frame (N, 3) float32 [scale, tx, ty].",
            ArrayContract(("N", 3), "float32"),
            per=FRAME,
        ),
        Datatype(
            "light",
            StorageFormat.NPY,
            (".npy",),
            "Spherical-harmonics lighting per frame (N, 9, 3) float32.",
            ArrayContract(("N", 9, 3), "float32"),
            per=FRAME,
        ),
        Datatype(
            "verts",
            StorageFormat.NPY,
            (".npy",),
            "FLAME mesh vertices per frame (N, V, 3) float32, metres (FLAME: V = 5023).",
            ArrayContract(("N", "V", 3), "float32"),
            per=FRAME,
        ),
        Datatype(
            "landmarks3d",
            StorageFormat.NPY,
            (".npy",),
            "68 FLAME landmarks per frame (N, 68, 3) float32, metres (model space).",
            ArrayContract(("N", 68, 3), "float32"),
            per=FRAME,
        ),
        Datatype(
            "render_normal",
            StorageFormat.IMAGE_STACK,
            (".h5",),
            "Normal renders of the FLAME mesh per frame, same layout as images.",
            per=FRAME,
        ),
        Datatype(
            "render_uv",
            StorageFormat.IMAGE_STACK,
            (".h5",),
            "UV renders (u, 1 - v, 0.5) x SH shading per frame, same layout as images.",
            per=FRAME,
        ),
        Datatype(
            "render_mask",
            StorageFormat.IMAGE_STACK,
            (".h5",),
            "Mesh coverage per frame (white = mesh), lossless PNG in the images layout.",
            per=FRAME,
        ),
        Datatype(
            "a2en",
            StorageFormat.FILE,
            (".npz",),
            "A2EN training file: wav2vec and volume on the expression frames, exp, jaw, blinks.",
            file_check=NpzFrames(A2EN_ARRAYS),
        ),
        Datatype(
            "h5_dataset",
            StorageFormat.FILE,
            (".h5",),
            "Training file per video (H5DatasetNode): the chosen datatypes, images as JPEG/PNG.",
            file_check=TrainingFile(),
        ),
        Datatype(
            "source_sequence",
            StorageFormat.FILE,
            (".h5",),
            "Training file per video (SourceSequenceNode): frames, boxes, crops, landmarks...",
            file_check=TrainingFile(),
        ),
        Datatype(
            "vid2vid_dataset",
            StorageFormat.FILE,
            (".h5",),
            "Training file per video (Vid2vidDatasetNode): crops with their UV and normal renders.",
            file_check=TrainingFile(),
        ),
        Datatype(
            "vid2vid_audio",
            StorageFormat.FILE,
            (".h5",),
            "Training file per video (Vid2vidAudioNode): crops + audio features per frame.",
            file_check=TrainingFile(),
        ),
        Datatype(
            "preview",
            StorageFormat.FILE,
            (".mp4",),
            "Preview video: frames with box, landmarks and head-pose axes, 16 kHz audio.",
            file_check=PreviewVideo(),
        ),
        Datatype(
            "contact_sheet",
            StorageFormat.FILE,
            (".png",),
            "Contact sheet PNG: evenly spaced frames with the face overlays.",
            file_check=PngImage(),
        ),
    )
}


BUILT_IN_DATATYPES: tuple[str, ...] = tuple(DATATYPES)
"""The package's own datatype keys (custom nodes register more in :data:`DATATYPES`)."""


WRITTEN_EXTENSION: dict[StorageFormat, str] = {
    StorageFormat.WAV: ".wav",
    StorageFormat.NPY: ".npy",
    StorageFormat.JSON: ".json",
    StorageFormat.IMAGE_STACK: ".h5",
}
"""The extension each storage format's files are written with (whole files: any)."""


def register_datatype(datatype: Datatype) -> None:
    """Add a custom node's datatype to the registry (the same declaration again is a no-op;
    a different one under a known key is an error)."""
    known = DATATYPES.get(datatype.key)
    if known is not None and known != datatype:
        raise ValueError(f"datatype {datatype.key!r} is already registered differently: {known}")
    if datatype.storage is StorageFormat.MEDIA:
        raise ValueError(f"datatype {datatype.key!r}: custom datatypes cannot be source media")
    written = WRITTEN_EXTENSION.get(datatype.storage)
    if written is not None and datatype.output_extension.lower() != written:
        raise ValueError(
            f"datatype {datatype.key!r}: {datatype.storage.value} files are written as "
            f"{written}, not {datatype.output_extension} (make {written!r} the first extension)"
        )
    DATATYPES[datatype.key] = datatype


def packable_keys() -> list[str]:
    """Datatypes a packer (``H5DatasetNode``...) can include, in registry order."""
    return [key for key, datatype in DATATYPES.items() if datatype.packable]


def get_datatype(key: str) -> Datatype:
    """The datatype registered under ``key``; a KeyError lists the known keys."""
    try:
        return DATATYPES[key]
    except KeyError:
        raise KeyError(f"unknown datatype {key!r}; known: {', '.join(sorted(DATATYPES))}") from None
