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

from dpl_assets.assets.batch import load_required, per_video_asset, run_videos
from dpl_assets.assets.config import ContactSheetConfig, PreviewConfig
from dpl_assets.media import timeline
from dpl_assets.outcomes import Kept, Rejected, StagedFile
from dpl_assets.report import per_video_datatypes, rejection_reasons, without_subject
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.store import ArtifactStore, MissingArtifactError
from dpl_assets.visualize.contact_sheet import contact_sheet as draw_contact_sheet
from dpl_assets.visualize.contact_sheet import write_png
from dpl_assets.visualize.overlay import Overlays
from dpl_assets.visualize.preview import write_preview

OVERLAY_INPUTS = ("raw_bboxes", "bboxes", "landmarks", "head_pose", "face_mask")
DRAWN_WHEN_PRESENT = (*OVERLAY_INPUTS, "wav")
PREVIEW_FALLBACK_FPS = 25.0
"""Playback rate of a one-frame clip (no frame interval to take a rate from)."""


def _optional(store: ArtifactStore, key: str, video_id: str) -> Any:
    """The artefact, or None when it is rejected or not produced for this video."""
    try:
        value = store.load(key, video_id)
    except MissingArtifactError:
        return None
    return None if isinstance(value, Rejected) else value


def overlays_for(store: ArtifactStore, video_id: str) -> Overlays:
    """The video's annotations that exist: crop and detector boxes, landmarks, ..."""
    found = {key: _optional(store, key, video_id) for key in OVERLAY_INPUTS}
    return Overlays(
        boxes=found["bboxes"],
        detector_boxes=found["raw_bboxes"],
        landmarks=found["landmarks"],
        head_pose=found["head_pose"],
        face_mask=found["face_mask"],
    )


REJECTED_PREFIX = "REJECTED: "


def rejection_mark(store: ArtifactStore, video_id: str) -> str | None:
    """The banner text of a rejected video, ``REJECTED: <reason>; <reason>`` (every reason
    recorded so far, besides those of the visualizations themselves, without the file name
    they start with); None when the video has no rejection."""
    keys = [key for key in per_video_datatypes() if key not in ("preview", "contact_sheet")]
    reasons = rejection_reasons(store, video_id, keys)
    if not reasons:
        return None
    subjects = (store.catalog.entry(video_id).primary_source, video_id)
    return REJECTED_PREFIX + "; ".join(without_subject(r, subjects) for r in reasons)


def wav_path(store: ArtifactStore, video_id: str) -> Path | None:
    """The video's 16 kHz wav file (the user's or ours), if any."""
    return store.existing_file("wav", video_id)


def announce(context: dg.AssetExecutionContext, store: ArtifactStore, outcomes: dict) -> None:
    """An observation on each partition that got a new file: its path, as a UI link."""
    key = context.asset_key.path[-1]
    for video_id, outcome in outcomes.items():
        if isinstance(outcome, Kept | Rejected):
            continue
        path = store.artifact_path(key, video_id)
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
    store: ArtifactStore,
    config: PreviewConfig | ContactSheetConfig,
    draw: Callable[[str, Path], Path],
) -> dict:
    """Run ``draw(video_id, images_path) -> staged file`` over the step's videos (a video
    whose images were rejected carries that rejection) and announce the new files."""

    def one(video_id: str, _: dict) -> Any:
        return StagedFile(draw(video_id, load_required(store, "images", video_id)))

    outcomes = run_videos(
        context, store, recompute=config.recompute, inputs={}, compute_one=one,
        workers=config.num_jobs,
    )  # fmt: skip
    announce(context, store, outcomes)
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
    store = storage.store()

    def render(video_id: str, images: Path) -> Path:
        staged = store.staging_path("preview", video_id)
        with ImageStack(images, "images") as stack:
            times = timeline.frame_times_for(stack.timestamps, len(stack))
            fps = float(stack.attrs["fps"]) or PREVIEW_FALLBACK_FPS
            write_preview(
                staged, stack, fps=fps, wav=wav_path(store, video_id),
                overlays=overlays_for(store, video_id), audio_start_s=float(times[0]),
                mark=rejection_mark(store, video_id),
            )  # fmt: skip
        return staged

    return draw_each(context, store, config, render)


@per_video_asset(
    group_name="visualize",
    deps=["images", *OVERLAY_INPUTS],
)
def contact_sheet(
    context: dg.AssetExecutionContext, config: ContactSheetConfig, storage: ArtifactStorage
) -> dict:
    """Contact sheet PNG per video (``ContactSheetNode``): ``count`` evenly spaced frames."""
    store = storage.store()

    def draw(video_id: str, images: Path) -> Path:
        with ImageStack(images, "images") as stack:
            sheet = draw_contact_sheet(
                stack, count=config.count, columns=config.columns,
                tile_width=config.tile_width, overlays=overlays_for(store, video_id),
                timestamps=timeline.frame_times_for(stack.timestamps, len(stack)),
                title=video_id, mark=rejection_mark(store, video_id),
            )  # fmt: skip
        staged = store.staging_path("contact_sheet", video_id)
        write_png(staged, sheet)
        return staged

    return draw_each(context, store, config, draw)


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
