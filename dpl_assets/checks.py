"""Dagster asset checks: one ``output_valid`` check per checked datatype, per video.

Each check runs after its asset in the same run (Dagster adds the checks of selected assets
to a job) and can be run on its own from the UI. It applies
:func:`dpl_assets.validation.check_artifact` to every video of the step that has the
artefact (rejected and missing videos are skipped), records each video's problems under
``_checks/`` (read into ``report.json``) and reports one result for the step: passed when
every video passed, with the failing videos and their problems as metadata. Dagster
attaches a check result to a partition only in single-partition runs; batched runs carry
the video ids in the metadata.
"""

import dagster as dg

from dpl_assets.partitions import video_partitions
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.store import ArtifactStore
from dpl_assets.validation import CHECKED, VideoFacts, check_artifact

CHECK_NAME = "output_valid"
MAX_LISTED = 50  # failing videos listed in the metadata table


def check_videos(store: ArtifactStore, key: str, video_ids: list[str]) -> dict[str, list[str]]:
    """Check ``key`` for each video that has it; record and return ``{video_id: problems}``."""
    results = {}
    for video_id in video_ids:
        path = store.artifact_path(key, video_id)
        if not path.exists():
            continue
        facts = VideoFacts.read(
            store.artifact_path("images", video_id), store.artifact_path("wav", video_id)
        )
        problems = check_artifact(key, path, facts)
        store.save_check(key, video_id, problems)
        results[video_id] = problems
    return results


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
        partitions_def=video_partitions,
        description=f"Every {key} file has the shape, values and frame count it promises "
        "(dpl_assets/validation.py).",
    )
    def _check(context: dg.AssetCheckExecutionContext, storage: ArtifactStorage):
        results = check_videos(storage.store(), key, list(context.partition_keys))
        failures = {video_id: problems for video_id, problems in results.items() if problems}
        metadata: dict[str, dg.MetadataValue] = {
            "videos_checked": dg.MetadataValue.int(len(results)),
            "videos_failed": dg.MetadataValue.int(len(failures)),
        }
        if failures:
            metadata["failures"] = dg.MetadataValue.md(_markdown_table(failures))
        return dg.AssetCheckResult(passed=not failures, metadata=metadata)

    return _check


OUTPUT_CHECKS = [output_check(key) for key in CHECKED]
