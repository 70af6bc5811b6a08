"""Dagster asset checks: one ``output_valid`` check per checked datatype, per video.

Each check runs after its asset in the same run (Dagster adds the checks of selected assets
to a job) and can be run on its own from the UI. It applies
:func:`dpl_assets.validation.check_artifact` to every video of the step that has the
artefact (rejected and missing videos are skipped), records each video's problems under
``_checks/`` (read into ``report.json``) and reports one result for the step: passed when
every video passed, with the failing videos and their problems as metadata.

The checks are not partitioned: Dagster 1.13 attaches a partitioned check's result to a
partition only in single-partition runs, so batched runs would show every video as
"skipped". Unpartitioned, the UI shows the latest verdict over the run's videos (read from
the run's partition tags), and a check launched on its own checks every registered video.
"""

from collections.abc import Sequence

import dagster as dg

from dpl_assets.datatypes import AUDIO_REFERENCE, FRAME_REFERENCE
from dpl_assets.executors import step_tags
from dpl_assets.interrupts import step_stops_on_interrupt
from dpl_assets.memory import release_free_heap
from dpl_assets.partitions import (
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    VIDEOS_PARTITION_NAME,
)
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.store import ArtifactStore
from dpl_assets.validation import VideoFacts, check_artifact, checked_keys

CHECK_NAME = "output_valid"
MAX_LISTED = 50  # failing videos listed in the metadata table


def check_videos(store: ArtifactStore, key: str, video_ids: list[str]) -> dict[str, list[str]]:
    """Check ``key`` for each video that has it; record and return ``{video_id: problems}``.

    Each artefact is compared with the same video's reference frames and audio (the
    registry's :data:`~dpl_assets.datatypes.FRAME_REFERENCE` and
    :data:`~dpl_assets.datatypes.AUDIO_REFERENCE`). The heap the checks freed goes back to
    the OS at the end (:func:`~dpl_assets.memory.release_free_heap`).
    """
    results = {}
    for video_id in video_ids:
        path = store.artifact_path(key, video_id)
        if not path.exists():
            continue
        facts = VideoFacts.read(
            store.artifact_path(FRAME_REFERENCE, video_id),
            store.artifact_path(AUDIO_REFERENCE, video_id),
        )
        problems = check_artifact(key, path, facts)
        store.save_check(key, video_id, problems)
        results[video_id] = problems
    release_free_heap()
    return results


def step_videos(context: dg.AssetCheckExecutionContext, store: ArtifactStore) -> list[str]:
    """The videos of the run (its partition or partition range; every registered video
    when the check runs on its own, unpartitioned, e.g. from the UI)."""
    tags = context.run.tags
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    first, last = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if first and last:
        ordered = list(context.instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME))
        if first in ordered and last in ordered:
            return ordered[ordered.index(first) : ordered.index(last) + 1]
        # An end of the range was deleted since the run was launched: every video that has
        # outputs is checked instead (the check only reads files that exist).
    return list(store.catalog.entries())


def _markdown_table(failures: dict[str, list[str]]) -> str:
    lines = ["| video | problems |", "|---|---|"]
    for video_id, problems in list(failures.items())[:MAX_LISTED]:
        cell = "; ".join(problems).replace("|", "\\|")
        lines.append(f"| `{video_id}` | {cell} |")
    if len(failures) > MAX_LISTED:
        lines.append(f"| ... | {len(failures) - MAX_LISTED} more in report.json |")
    return "\n".join(lines)


def output_check(key: str) -> dg.AssetChecksDefinition:
    """The ``output_valid`` check of datatype ``key``."""

    @dg.asset_check(
        asset=key,
        name=CHECK_NAME,
        op_tags=step_tags(needs_gpu=False),
        description=f"Every {key} file has the shape, values and frame count it promises "
        "(dpl_assets/validation.py).",
    )
    def _check(context: dg.AssetCheckExecutionContext, storage: ArtifactStorage):
        with step_stops_on_interrupt(context.run.run_id):
            store = storage.store()
            results = check_videos(store, key, step_videos(context, store))
        failures = {video_id: problems for video_id, problems in results.items() if problems}
        metadata: dict[str, dg.MetadataValue] = {
            "videos_checked": dg.MetadataValue.int(len(results)),
            "videos_failed": dg.MetadataValue.int(len(failures)),
        }
        if failures:
            metadata["failures"] = dg.MetadataValue.md(_markdown_table(failures))
        return dg.AssetCheckResult(passed=not failures, metadata=metadata)

    return _check


def output_checks(
    assets: Sequence[dg.AssetsDefinition | dg.AssetSpec],
) -> list[dg.AssetChecksDefinition]:
    """The ``output_valid`` checks of ``assets``: one per checked datatype among them
    (:func:`dpl_assets.validation.checked_keys`, custom nodes' datatypes included)."""
    keys = {
        key.path[-1]
        for asset in assets
        if isinstance(asset, dg.AssetsDefinition)
        for key in asset.keys
    }
    return [output_check(key) for key in checked_keys() if key in keys]
