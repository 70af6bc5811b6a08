"""What a per-video step records: its progress lines, one event per video on its partition,
the step's summary line and totals, and the step's failure after its successes are saved.

Dagster 1.13 would record a materialization for *every* partition of a step that returns
its output, rejected videos included (see :mod:`dpl_assets.assets.batch`); the step's
outputs carry :data:`NO_FRAMEWORK_ASSET_EVENTS` and these functions record each video's
own event instead.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np
from dagster._core.definitions.source_asset import SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ, StorageFormat, get_datatype
from dpl_assets.outcomes import Kept, Rejected, StagedFile
from dpl_assets.storage.store import FEATURE_RATE_HZ, ArtifactStore, artifact_stats

COMPUTED_IDS_LABEL = "computed ids:"
"""Each step's summary log line ends with this label and a JSON list of the videos it
computed (at most :data:`MAX_LISTED_IDS`), so runs can be audited for duplicated work."""

MODELS_MADE_LABEL = "models made in"
"""... and, when the step made models, this label and their seconds (imports and weight
loads: start-up cost, which per-frame rates leave out)."""

MAX_LISTED_IDS = 100

PROGRESS_EVERY_S = 30.0
"""Seconds between progress lines in a step's log (each line is an event row)."""

NO_FRAMEWORK_ASSET_EVENTS = SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION
"""Output metadata key that stops Dagster 1.13 from recording its own asset events for an
output (``execute_step._log_materialization_or_observation_events_for_asset``): the loop
records one event per video instead (see the module docstring). Imported, not copied, so a
Dagster without it fails at import instead of silently marking rejected videos
materialized; ``test_partition_states.py`` checks the effect."""

STATUS_WRITTEN = "written"
STATUS_KEPT = "kept (done in an earlier run)"
STATUS_REJECTED = "rejected"


def listing(video_ids: list[str]) -> str:
    """The ids as a JSON list for a log line, the first :data:`MAX_LISTED_IDS` only
    (``... and N more``)."""
    listed = json.dumps(video_ids[:MAX_LISTED_IDS], ensure_ascii=False)
    more = len(video_ids) - MAX_LISTED_IDS
    return listed + (f" and {more} more" if more > 0 else "")


def output_name(context: dg.AssetExecutionContext, key: str) -> str:
    """The step's output name for asset ``key`` (a multi-asset names outputs its own way)."""
    return context.assets_def.get_output_name_for_asset_key(dg.AssetKey(key))


class Progress:
    """Videos done / total, videos per second, work per second (video frames, or seconds of
    audio for audio assets) and ETA, logged at most every :data:`PROGRESS_EVERY_S` seconds;
    the totals go on the step's output (the run's log), not on any partition."""

    def __init__(self, context: dg.AssetExecutionContext, name: str, total: int):
        self.context, self.name, self.total = context, name, total
        self.count = 0
        self.work: dict[str, float] = {}  # unit -> amount computed
        self.started = self.last_log = time.perf_counter()
        self.lock = threading.Lock()

    def done(self, key: str, outcome: Any) -> None:
        """Count one video computed, with its work of output ``key`` (frames or audio
        seconds), and log progress if :data:`PROGRESS_EVERY_S` seconds passed."""
        unit, amount = work_of(key, outcome)
        with self.lock:
            self.count += 1
            if unit:
                self.work[unit] = self.work.get(unit, 0.0) + amount
            now = time.perf_counter()
            if now - self.last_log < PROGRESS_EVERY_S or self.count == self.total:
                return
            self.last_log = now
            rate = self.count / (now - self.started)
            eta = (self.total - self.count) / rate if rate else float("inf")
            rates = "".join(
                f", {value / (now - self.started):.1f} {unit.replace('_', ' ')}/s"
                for unit, value in self.work.items()
            )
        self.context.log.info(
            f"{self.name}: {self.count}/{self.total} videos, {rate:.2f} videos/s{rates}, "
            f"ETA {eta:.0f} s"
        )

    def skip(self) -> None:
        """One video fewer to do (another process did it)."""
        with self.lock:
            self.total -= 1

    def metadata(self, elapsed: float) -> dict[str, Any]:
        """The step's totals for its output: ``step_s`` (``elapsed`` seconds), videos
        computed, and per work unit the amount and its rate per second."""
        metadata: dict[str, Any] = {"step_s": round(elapsed, 3), "videos_computed": self.count}
        for unit, value in self.work.items():
            metadata[unit] = round(value, 3) if unit == "audio_s" else int(value)
            metadata[f"{unit}_per_s"] = round(value / elapsed, 1) if elapsed > 0 else 0.0
        return metadata


def work_of(key: str, outcome: Any) -> tuple[str, float]:
    """What a computed outcome of output ``key`` amounts to, in its unit: video frames for
    per-frame data, seconds of audio for wav and audio features; ``("", 0)`` if neither."""
    if not isinstance(outcome, dict):
        outcome = {key: outcome}
    value = outcome.get(key)
    datatype = get_datatype(key)
    if isinstance(value, np.ndarray) and value.ndim >= 1:
        if datatype.storage is StorageFormat.WAV:
            return "audio_s", value.shape[0] / AUDIO_SAMPLE_RATE_HZ
        axis = datatype.contract.shape[0] if datatype.contract is not None else None
        if axis == "T":
            return "audio_s", value.shape[0] / FEATURE_RATE_HZ
        if axis == "N":
            return "video_frames", float(value.shape[0])
    elif isinstance(value, StagedFile):
        with contextlib.suppress(OSError):
            stats = artifact_stats(datatype, value.path)
            if "video_frames" in stats:
                return "video_frames", float(stats["video_frames"])
    return "", 0.0


def announce_videos(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    key: str,
    outcomes: Mapping[str, Any],
    *,
    computed_s: Mapping[str, float],
    skip: set[str],
) -> None:
    """Record each video's outcome on its partition of ``key``, with its own metadata: a
    materialization where the artefact exists (written now or kept), an observation with
    the reason where the video is rejected. ``skip``: videos another process finished
    meanwhile (it recorded them)."""
    for video_id, outcome in outcomes.items():
        if video_id in skip:
            continue
        rejection = outcome if isinstance(outcome, Rejected) else None
        if isinstance(outcome, Kept):
            rejection = store.rejection(key, video_id)
            if rejection is None and not store.artifact_path(key, video_id).exists():
                continue  # kept from the user's own file: nothing of ours to announce
        if rejection is not None:
            context.log_event(
                dg.AssetObservation(
                    asset_key=key,
                    partition=video_id,
                    description=f"{video_id}: rejected: {rejection.reason}",
                    metadata={
                        "status": STATUS_REJECTED,
                        "reason": rejection.reason,
                        "rejected_by": rejection.origin,
                        "record": dg.MetadataValue.path(
                            str(store.rejection_record_path(key, video_id))
                        ),
                    },
                )
            )
            continue
        path = store.artifact_path(key, video_id)
        metadata: dict[str, Any] = {
            "status": STATUS_KEPT if isinstance(outcome, Kept) else STATUS_WRITTEN,
            "path": dg.MetadataValue.path(str(path)),
        }
        with contextlib.suppress(OSError):
            metadata.update(store.stats(key, video_id))
        if video_id in computed_s and not isinstance(outcome, Kept):
            metadata["compute_s"] = round(computed_s[video_id], 3)
        context.log_event(
            dg.AssetMaterialization(asset_key=key, partition=video_id, metadata=metadata)
        )


def announce_files(
    context: dg.AssetExecutionContext, store: ArtifactStore, key: str, outcomes: Mapping[str, Any]
) -> None:
    """An observation on each partition of ``key`` that got a new file: its path, as a UI
    link (previews and contact sheets, which people open)."""
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


def fail_after_saving(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    per_output: dict[str, dict[str, Any]],
    failures: dict[str, str],
    retry: bool,
) -> None:
    """Make sure every success is saved (announced already), record the failures, then fail
    the step; with ``retry`` (a transient error) the retry policy runs it again (failed
    videos only)."""
    for key, outcomes in per_output.items():
        for video_id, outcome in outcomes.items():
            if isinstance(outcome, Kept):
                continue
            store.save_once(key, video_id, outcome)
        for video_id, error in failures.items():
            store.record_failure(key, video_id, error)
    listing = "\n".join(f"- {video_id}: {error}" for video_id, error in failures.items())
    saved = len(context.partition_keys) - len(failures)
    raise dg.Failure(
        description=f"{'+'.join(per_output)}: {len(failures)} of {len(context.partition_keys)} "
        f"videos failed (the other {saved} are saved):\n{listing}",
        metadata={"failed_videos": sorted(failures)},
        allow_retries=retry,
    )
