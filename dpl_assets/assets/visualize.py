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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from dpl_assets.assets.batch import per_video_asset, run_videos
from dpl_assets.assets.config import ContactSheetConfig, PreviewConfig
from dpl_assets.datatypes import FRAME_REFERENCE
from dpl_assets.outcomes import Kept, Rejected, StagedFile
from dpl_assets.report import per_video_datatypes, without_subject
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.video_io import VideoIO
from dpl_assets.visualize.contact_sheet import contact_sheet as draw_contact_sheet
from dpl_assets.visualize.contact_sheet import write_png
from dpl_assets.visualize.overlay import Overlays
from dpl_assets.visualize.preview import write_preview

OVERLAY_INPUTS = ("raw_bboxes", "bboxes", "landmarks", "head_pose", "face_mask")
DRAWN_WHEN_PRESENT = (*OVERLAY_INPUTS, "wav")
PREVIEW_FALLBACK_FPS = 25.0
"""Playback rate of a one-frame clip (no frame interval to take a rate from)."""


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


def announce(context: dg.AssetExecutionContext, paths: dict[str, Path], outcomes: dict) -> None:
    """An observation on each partition that got a new file: its path, as a UI link."""
    key = context.asset_key.path[-1]
    for video_id, outcome in outcomes.items():
        if isinstance(outcome, Kept | Rejected) or video_id not in paths:
            continue
        path = paths[video_id]
        context.log_event(
            dg.AssetObservation(
                asset_key=key,
                partition=video_id,
                metadata={
                    "path": dg.MetadataValue.path(str(path)),
                    "open": dg.MetadataValue.md(f"[{path.name}]({path.as_uri()})"),
                },
            )
        )


def draw_each(
    context: dg.AssetExecutionContext,
    storage: ArtifactStorage,
    config: PreviewConfig | ContactSheetConfig,
    draw: Callable[[VideoIO, ImageStackRef], Path],
) -> dict:
    """Run ``draw(io, images) -> staged file`` over the step's videos (a video whose
    images were rejected carries that rejection) and announce the new files."""
    key = context.asset_key.path[-1]
    paths: dict[str, Path] = {}

    def one(video_id: str, io: VideoIO) -> Any:
        staged = StagedFile(draw(io, io[FRAME_REFERENCE]))
        paths[video_id] = io.final_path(key)
        return staged

    outcomes = run_videos(
        context, storage, recompute=config.recompute, inputs={}, compute_one=one,
        workers=config.num_jobs,
    )  # fmt: skip
    announce(context, paths, outcomes)
    return outcomes


@per_video_asset(
    group_name="visualize",
    deps=["images", *DRAWN_WHEN_PRESENT],
)
def preview(
    context: dg.AssetExecutionContext, config: PreviewConfig, storage: ArtifactStorage
) -> dict:
    """Preview mp4 per video (``PreviewNode``): every frame with box, landmarks and head-pose
    axes, the 16 kHz audio muxed in as AAC."""

    def render(io: VideoIO, images: ImageStackRef) -> Path:
        staged = io.stage("preview")
        times = images.frame_times()
        fps = float(images.attrs["fps"]) or PREVIEW_FALLBACK_FPS
        with images.open() as stack:
            write_preview(
                staged, stack, fps=fps, wav=io.file_of("wav"), overlays=overlays_for(io),
                audio_start_s=float(times[0]), mark=rejection_mark(io),
            )  # fmt: skip
        return staged

    return draw_each(context, storage, config, render)


@per_video_asset(
    group_name="visualize",
    deps=["images", *OVERLAY_INPUTS],
)
def contact_sheet(
    context: dg.AssetExecutionContext, config: ContactSheetConfig, storage: ArtifactStorage
) -> dict:
    """Contact sheet PNG per video (``ContactSheetNode``): ``count`` evenly spaced frames."""

    def draw(io: VideoIO, images: ImageStackRef) -> Path:
        with images.open() as stack:
            sheet = draw_contact_sheet(
                stack, count=config.count, columns=config.columns,
                tile_width=config.tile_width, overlays=overlays_for(io),
                timestamps=images.frame_times(), title=io.video_id, mark=rejection_mark(io),
            )  # fmt: skip
        staged = io.stage("contact_sheet")
        write_png(staged, sheet)
        return staged

    return draw_each(context, storage, config, draw)


PREVIEW_NODE = NodeSpec(
    name="PreviewNode",
    inputs=("images",),
    optional_inputs=DRAWN_WHEN_PRESENT,
    outputs=("preview",),
    config=PreviewConfig,
    summary="mp4 of every frame with boxes, landmarks and head-pose axes, and the audio",
    asset=preview,
)
CONTACT_SHEET_NODE = NodeSpec(
    name="ContactSheetNode",
    inputs=("images",),
    optional_inputs=OVERLAY_INPUTS,
    outputs=("contact_sheet",),
    config=ContactSheetConfig,
    summary="PNG grid of evenly spaced frames with the face overlays",
    asset=contact_sheet,
)
