"""The one loop every per-video asset runs: skip done videos, propagate rejections, isolate
failures, and still record every success when some videos of the batch fail.

An asset step may cover one video or many (a backfill run over a partition range). For each
video it resolves to exactly one outcome: ``Kept`` (done before, ``recompute`` off), a
``Rejected`` (upstream rejection or :class:`InputRejected` from the node), an artefact, or
a failure. Failures are recorded per video; the successes of the batch are written and
reported to Dagster as materializations before the step fails, so nothing is lost.

What Dagster records per video (partition), by the loop itself: one ``AssetMaterialization``
per video whose artefact exists (written in this step or kept), with that video's own
metadata (status, path, size and what the file holds, each named with its unit), and one
``AssetObservation`` per rejected video (status, reason, the asset that rejected it). A
rejected video is therefore never among the asset's materialized partitions: the UI shows
it as missing (failed, when another video failed the run) with its reason on its partition.

Dagster 1.13 itself would record a materialization for *every* partition of a step that
returns its output, rejected videos included, with the step's metadata on each; it has no
public way to leave partitions out (dagster-io/dagster#17836, #21072) and open-source
storage neither stores asset-failure events nor wipes single partitions. So the step's
outputs carry the marker Dagster's own source-asset observation functions use to suppress
those framework events (:data:`~dpl_assets.assets.step_log.NO_FRAMEWORK_ASSET_EVENTS`),
and the loop records its own;
the outputs are still returned, so downstream steps run and the IO manager is called. The
step's totals go on the step's output (the run's log), never on a partition.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from dpl_assets import threads
from dpl_assets.assets.video_step import VideoStep
from dpl_assets.interrupts import step_stops_on_interrupt
from dpl_assets.memory import map_large_blocks
from dpl_assets.partitions import per_video_backfill, video_partitions
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.video_io import Reads, StepTools, VideoIO

# backfill_policy (here) and pool (generated.py, which imports this module first) are marked
# beta in dagster 1.13; we rely on them deliberately. Every asset decorator comes after this.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

TRANSIENT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""Steps that failed on a transient error (out of memory, a lost GPU) are run again; the
videos already saved are kept, so a retry redoes only the failed ones."""


def per_video_asset(**kwargs: Any) -> Any:
    """``@dg.asset`` partitioned per video, batched in backfills, stored by the IO manager."""
    kwargs.setdefault("retry_policy", TRANSIENT_RETRY_POLICY)
    return dg.asset(
        partitions_def=video_partitions,
        backfill_policy=per_video_backfill,
        io_manager_key="artifacts",
        **kwargs,
    )


def per_video_multi_asset(outputs: Sequence[str], **kwargs: Any) -> Any:
    """``@dg.multi_asset`` whose outputs are per-video datatypes stored by the IO manager."""
    kwargs.setdefault("retry_policy", TRANSIENT_RETRY_POLICY)
    metadata = kwargs.pop("metadata", None)  # a multi-asset's metadata lives on its outputs
    return dg.multi_asset(
        outs={key: dg.AssetOut(io_manager_key="artifacts", metadata=metadata) for key in outputs},
        partitions_def=video_partitions,
        backfill_policy=per_video_backfill,
        **kwargs,
    )


def multi_outputs(per_output: Mapping[str, Mapping[str, Any]]) -> Iterator[dg.Output]:
    """A multi-asset's results (:func:`run_videos_multi`) as one Dagster output per asset."""
    for key, outcomes in per_output.items():
        yield dg.Output(outcomes, output_name=key)


def run_videos_multi(
    context: dg.AssetExecutionContext,
    storage: ArtifactStorage,
    *,
    outputs: Sequence[str],
    recompute: bool,
    inputs: Mapping[str, Mapping[str, Any]],
    compute_one: Callable[[str, VideoIO], dict[str, Any]],
    compute_many: Callable[[dict[str, VideoIO]], dict[str, dict[str, Any]]] | None = None,
    workers: int = 1,
    tools: StepTools | None = None,
    reads: Reads | None = None,
) -> dict[str, dict[str, Any]]:
    """Run one node over the step's videos; return ``{output_key: {video_id: outcome}}``
    for the IO manager (one asset is a node with one output).

    Args:
        storage: the output dir (the loop reads and writes it; the node never does).
        outputs: the node's output keys; a video is done when every output is, and a
            rejection rejects every output.
        inputs: input name -> ``{video_id: artefact}`` (lazy mappings from the IO manager).
        compute_one: (video_id, io) -> ``{output_key: artefact}``, where ``io`` is the
            video's :class:`~dpl_assets.storage.video_io.VideoIO` (its declared inputs, and
            the rest of the node boundary); raises InputRejected for bad input.
        compute_many: optional batched version over many videos (one GPU batch); when it
            raises, the videos are retried one by one so one bad video cannot sink the rest.
        workers: threads for loading inputs and for ``compute_one`` (subprocess-bound work),
            at most the process's thread budget (:mod:`dpl_assets.threads`).
        tools: the node's device and models, shared by the step's videos (``io.device``,
            ``io.model``).
    """
    budget = threads.budget(context.instance)
    threads.apply(budget)  # before a model loads torch
    map_large_blocks()  # a clip's arrays leave the process's RSS when they are freed
    workers = min(workers, budget)  # a node's num_jobs threads share this process's cores
    step = VideoStep(
        context, storage.store(), outputs, recompute=recompute, workers=workers, tools=tools,
        reads=reads,
    )  # fmt: skip
    with step_stops_on_interrupt(context.run_id):  # Ctrl-C: stop, not retry (interrupts)
        todo = step.gather_all(inputs)
        try:
            if compute_many is not None and len(todo) > 1:
                step.compute_batched(todo, compute_one, compute_many)
            else:
                # Batched (model) work goes one video at a time; subprocess work uses the
                # workers.
                step.compute_each(todo, compute_one, 1 if compute_many is not None else workers)
        finally:
            step.claims.release_all()
        return step.results()
