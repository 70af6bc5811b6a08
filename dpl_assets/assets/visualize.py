"""Per-video visualizations: a preview video and a contact sheet with the face overlays.

Both need only ``images``; boxes, landmarks, head pose, the face mask and the wav are drawn
(or muxed) when the video has them. The crop box (``bboxes``, what the crops cut) is drawn
solid and the detector's box (``raw_bboxes``) thin, dashed and paler.

A rejected video still gets both whenever it has frames (a film with no face or no audio
stream): they show what went wrong. They carry a red banner "REJECTED: <reasons>" (every
rejection recorded for the video when they are drawn, which includes those of all their
inputs; the reasons without the file name). A video without frames (an empty or unreadable
file) has neither: its rejection is carried on.

Each new file is announced on its partition in the Dagster UI (an observation with the
file's path and a markdown line).
"""

from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import FRAME_REFERENCE
from dpl_assets.media.timeline import NOMINAL_FPS
from dpl_assets.outcomes import StagedFile
from dpl_assets.report import per_video_datatypes, without_subject
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.video_io import VideoIO
from dpl_assets.visualize.contact_sheet import contact_sheet as draw_contact_sheet
from dpl_assets.visualize.contact_sheet import write_png
from dpl_assets.visualize.overlay import Overlays
from dpl_assets.visualize.preview import write_preview


class PreviewConfig(NodeConfig):
    """``PreviewNode``: an mp4 per video with the face overlays and the 16 kHz audio."""

    num_jobs: int = Field(default=2, ge=1, description="Videos rendered in parallel.")


class ContactSheetConfig(NodeConfig):
    """``ContactSheetNode``: a PNG grid of evenly spaced frames with the face overlays."""

    count: int = Field(default=12, ge=1, description="Frames shown.")
    columns: int = Field(default=4, ge=1, description="Frames per row.")
    tile_width: int = Field(default=256, ge=16, description="Width of each frame, px.")
    num_jobs: int = Field(default=2, ge=1, description="Videos drawn in parallel.")


OVERLAY_INPUTS = ("raw_bboxes", "bboxes", "landmarks", "head_pose", "face_mask")
DRAWN_WHEN_PRESENT = (*OVERLAY_INPUTS, "wav")


def overlays_for(io: VideoIO) -> Overlays:
    """The video's annotations that exist: crop and detector boxes, landmarks, ..."""
    found = {key: io.optional(key) for key in OVERLAY_INPUTS}
    return Overlays(
        boxes=found["bboxes"],
        detector_boxes=found["raw_bboxes"],
        landmarks=found["landmarks"],
        head_pose=found["head_pose"],
        face_mask=found["face_mask"],
    )


REJECTED_PREFIX = "REJECTED: "


def rejection_mark(io: VideoIO) -> str | None:
    """The banner text of a rejected video, ``REJECTED: <reason>; <reason>`` (every reason
    recorded so far, besides those of the visualizations themselves, without the file name
    they start with); None when the video has no rejection."""
    drawn_here = {spec_output for spec in (PREVIEW_NODE, CONTACT_SHEET_NODE)
                  for spec_output in spec.outputs}  # fmt: skip
    reasons = io.rejection_reasons([k for k in per_video_datatypes() if k not in drawn_here])
    if not reasons:
        return None
    subjects = (io.primary_source, io.video_id)
    return REJECTED_PREFIX + "; ".join(without_subject(r, subjects) for r in reasons)


def render_preview(io: VideoIO, config: PreviewConfig) -> dict[str, StagedFile]:
    """Preview mp4 of the video: every frame with box, landmarks and head-pose axes, the
    16 kHz audio muxed in as AAC from the first frame's time."""
    images: ImageStackRef = io[FRAME_REFERENCE]
    staged = io.stage("preview")
    times = images.frame_times()
    fps = float(images.attrs["fps"]) or NOMINAL_FPS  # a one-frame clip
    with io.frames(FRAME_REFERENCE) as frames:  # decoded again from the video when it can
        write_preview(
            staged, frames, fps=fps, wav=io.file_of("wav"), overlays=overlays_for(io),
            audio_start_s=float(times[0]), mark=rejection_mark(io), frame_count=len(images),
        )  # fmt: skip
    return {"preview": StagedFile(staged)}


def draw_sheet(io: VideoIO, config: ContactSheetConfig) -> dict[str, StagedFile]:
    """Contact sheet PNG of the video: ``count`` evenly spaced frames with the overlays."""
    images: ImageStackRef = io[FRAME_REFERENCE]
    with images.open() as stack:
        sheet = draw_contact_sheet(
            stack, count=config.count, columns=config.columns, tile_width=config.tile_width,
            overlays=overlays_for(io), timestamps=images.frame_times(), title=io.video_id,
            mark=rejection_mark(io),
        )  # fmt: skip
    staged = io.stage("contact_sheet")
    write_png(staged, sheet)
    return {"contact_sheet": StagedFile(staged)}


PREVIEW_NODE = NodeSpec(
    name="PreviewNode",
    inputs=("images",),
    optional_inputs=DRAWN_WHEN_PRESENT,
    outputs=("preview",),
    config=PreviewConfig,
    summary="mp4 of every frame with boxes, landmarks and head-pose axes, and the audio",
    compute=render_preview,
    announce=True,
    group="visualize",
)
CONTACT_SHEET_NODE = NodeSpec(
    name="ContactSheetNode",
    inputs=("images",),
    optional_inputs=OVERLAY_INPUTS,
    outputs=("contact_sheet",),
    config=ContactSheetConfig,
    summary="PNG grid of evenly spaced frames with the face overlays",
    compute=draw_sheet,
    announce=True,
    group="visualize",
)
