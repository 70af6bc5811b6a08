"""The per-video loop of one asset step (:func:`dpl_assets.assets.batch.run_videos_multi`).

For each of the step's videos: gather its inputs (or find it done, or rejected upstream),
claim it (one process computes a video at a time), compute it, and save its outputs while
the claim is held. Every video resolves to one outcome: ``Kept``, ``Rejected``, its
artefacts, or a failure (kept in :attr:`VideoStep.failures` and raised after the successes
are saved).
"""

from __future__ import annotations

import functools
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dagster as dg
import numpy as np

from dpl_assets import interrupts
from dpl_assets.assets.claims import VideoClaims
from dpl_assets.assets.step_log import (
    COMPUTED_IDS_LABEL,
    MODELS_MADE_LABEL,
    NO_FRAMEWORK_ASSET_EVENTS,
    Progress,
    announce_videos,
    fail_after_saving,
    listing,
    output_name,
)
from dpl_assets.executors import executor_name
from dpl_assets.media.errors import decode_rejection
from dpl_assets.memory import release_free_heap
from dpl_assets.outcomes import InputRejected, Kept, Rejected, Saved
from dpl_assets.storage.atomic import remove_dead_temps
from dpl_assets.storage.disk_room import ensure_room, no_room
from dpl_assets.storage.store import ArtifactStore
from dpl_assets.storage.video_io import Reads, StepTools, UpstreamRejected, VideoIO

ComputeVideo = Callable[[str, VideoIO], dict[str, Any]]
"""(video_id, io) -> ``{output_key: artefact}``."""
ComputeVideos = Callable[[dict[str, VideoIO]], dict[str, dict[str, Any]]]
"""``{video_id: io}`` -> ``{video_id: {output_key: artefact}}`` (one batch)."""


def is_transient(error: BaseException) -> bool:
    """Out of memory or a lost/busy GPU: worth retrying, unlike a bug or a bad input."""
    torch = sys.modules.get("torch")  # not loaded: no torch error can have been raised
    if isinstance(error, MemoryError) or (
        torch is not None and isinstance(error, torch.cuda.OutOfMemoryError)
    ):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text
        for marker in ("out of memory", "CUDA error", "CUDA-capable device", "NCCL error")
    )


def naming_source(reason: str, source: str | None) -> str:
    """``reason`` as a user reads it: prefixed with the video's source file unless it
    already names it (nodes that see only arrays, e.g. "no face", cannot)."""
    if source is None or source in reason:
        return reason
    return f"{source}: {reason}"


def read_later_in_run(context: dg.AssetExecutionContext, outputs: Sequence[str]) -> bool:
    """Whether a later step of the run of ``context``, in this process, reads one of
    ``outputs`` (so what this step decodes may be kept for it: see ``io.keep_decoded``):
    the run materializes an asset with one of them as a parent, and its steps share the
    run's process. False when Dagster cannot tell (keeping is only a saving)."""
    if not steps_share_the_run_process(context.run.run_config):
        return False
    try:
        layer = context.job_def.asset_layer
        # a run of a whole asset job has no (or an empty) selection: the job's assets
        keys = context.run.asset_selection or layer.selected_asset_keys
        graph = layer.asset_graph
        produced = {dg.AssetKey(output) for output in outputs}
        return any(
            not produced.isdisjoint(graph.get(key).parent_keys)
            for key in keys
            if key not in produced
        )
    except Exception:  # an API that moved: keep nothing, compute as before
        return False


def steps_share_the_run_process(run_config: Mapping[str, Any]) -> bool:
    """Whether a run with ``run_config`` executes its steps in its own process: the
    code location's default executor (``DPL_EXECUTOR`` unset or ``in_process``) without
    ``execution: {config: {multiprocess: ...}}``; not on Celery or Kubernetes."""
    if executor_name() != "in_process":
        return False
    execution = run_config.get("execution") or {}
    return "multiprocess" not in (execution.get("config") or {})


class VideoStep:
    """One asset step over its videos (the partitions of ``context``); see the module."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        store: ArtifactStore,
        outputs: Sequence[str],
        *,
        recompute: bool,
        workers: int,
        tools: StepTools | None = None,
        reads: Reads | None = None,
    ):
        self.context, self.store, self.outputs = context, store, list(outputs)
        self.tools, self.reads = tools or StepTools(), reads
        self.recompute, self.workers = recompute, max(1, workers)
        self.name = "+".join(outputs)
        self.started, self.step_started = time.perf_counter(), time.time()
        self.outcomes: dict[str, Any] = {}  # video_id -> Kept | Rejected | {key: artefact}
        self.failures: dict[str, str] = {}
        self.sources_at_start: dict[str, list | None] = {}
        self.claims = VideoClaims(store, outputs)
        self.done_elsewhere: set[str] = set()
        self.saved_here: set[str] = set()
        self.transient: set[str] = set()
        self.compute_s: dict[str, float] = {}  # video_id -> seconds (its share of a batch)
        self.later: list[tuple[str, VideoIO]] = []  # claimed by another process first
        self.progress = Progress(context, self.name, 0)
        self.todo: list[str] = []  # the videos to compute, in partition order
        self.read_later = read_later_in_run(context, self.outputs)

    # -- gathering ----------------------------------------------------------------------
    def gather_all(self, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, VideoIO]:
        """The videos to compute, with their inputs; the others get their outcome now."""
        # Files a killed writer left (streamed stacks, temp files): sensor and backfill runs
        # clean up too, not only `dpl run`. Only dead writers' files go (see the store).
        self.store.remove_dead_staging(self.outputs)
        for key in self.outputs:
            remove_dead_temps(self.store.output_dir / key)
        todo: dict[str, VideoIO] = {}
        gather = functools.partial(self._gather, inputs)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for video_id, gathered in pool.map(gather, self.context.partition_keys):
                if isinstance(gathered, str):
                    self.failures[video_id] = gathered
                elif isinstance(gathered, Kept | Rejected):
                    self.outcomes[video_id] = gathered
                else:
                    todo[video_id] = gathered
        self.progress.total = len(todo)
        self.todo = list(todo)
        return todo

    def _gather(
        self, inputs: Mapping[str, Mapping[str, Any]], video_id: str
    ) -> tuple[str, VideoIO | Rejected | Kept | str]:
        if not self.recompute and all(self.store.is_done(k, video_id) for k in self.outputs):
            return video_id, Kept()
        self.sources_at_start[video_id] = self.store.source_fingerprints(video_id)
        try:
            loaded = {name: artefacts[video_id] for name, artefacts in inputs.items()}
        except Exception as error:  # missing or unreadable input: a failure, retried later
            reason = decode_rejection(error)
            if reason is not None:  # a user's file that does not decode: its outcome
                return video_id, Rejected(reason=reason, origin=self.outputs[0])
            return video_id, f"cannot load inputs: {type(error).__name__}: {error}"
        upstream = next((v for v in loaded.values() if isinstance(v, Rejected)), None)
        if upstream is not None:
            return video_id, upstream
        return video_id, VideoIO(
            self.store, video_id, loaded, self.tools, self.reads, self.context.run_id,
            self.read_later,
        )  # fmt: skip

    # -- one video ------------------------------------------------------------------------
    def done_meanwhile(self, video_id: str) -> bool:
        """Done by another process since this step looked (for ``recompute``: written
        since the step started)."""
        if not self.recompute:
            return all(self.store.is_done(key, video_id) for key in self.outputs)
        times = [self.store.done_at(key, video_id) for key in self.outputs]
        return all(t is not None and t >= self.step_started for t in times)

    def keep(self, video_id: str) -> None:
        """Keep the video's outputs another process saved meanwhile: no compute, no save;
        its claim is released."""
        self.outcomes[video_id] = Kept()
        self.done_elsewhere.add(video_id)
        self.progress.skip()
        self.claims.release(video_id)

    def finish(self, video_id: str) -> None:
        """Save the video's outcome while its claim is held, then release the claim."""
        try:
            outcome = self.outcomes.get(video_id)
            if outcome is None or isinstance(outcome, Kept):
                return
            # A source replaced while it was processed (the sensor has discarded its
            # outputs and asked for a new run): what was computed from it is not saved.
            if self.store.source_fingerprints(video_id) != self.sources_at_start.get(video_id):
                del self.outcomes[video_id]
                self.failures[video_id] = "its source file changed while it was processed"
                return
            for key in self.outputs:
                value = outcome if isinstance(outcome, Rejected) else outcome[key]
                self.store.save(key, video_id, value)
                if not isinstance(value, np.ndarray):  # arrays are let go below instead
                    self.store.mark_saved(key, video_id, value)
            if not isinstance(outcome, Rejected):
                # The arrays are on disk: the step returns markers, so neither this loop nor
                # Dagster's output capture holds a clip's arrays through later steps.
                self.outcomes[video_id] = {
                    key: Saved() if isinstance(value, np.ndarray) else value
                    for key, value in outcome.items()
                }
            self.saved_here.add(video_id)
        except Exception as error:
            self.outcomes.pop(video_id, None)
            self.failures[video_id] = f"cannot save: {type(error).__name__}: {error}"
            self.context.log.error(
                f"{self.name}: saving {video_id!r} failed:\n{traceback.format_exc()}"
            )
        finally:
            self.claims.release(video_id)

    def attempt(self, video_id: str, compute: Callable[[], Any]) -> None:
        """Compute one claimed video, resolve its outcome, save it."""
        began = time.perf_counter()
        try:
            # A full disk fails each video at once, with the folder and the numbers named,
            # before a library meets it (HDF5 would crash the process: storage.disk_room).
            ensure_room(self.store.output_dir)
            self.outcomes[video_id] = compute()
        except UpstreamRejected as upstream:
            self.outcomes[video_id] = upstream.rejection
        except Exception as error:
            self._failed_or_rejected(video_id, error)
        self.compute_s[video_id] = time.perf_counter() - began
        self.progress.done(self.outputs[0], self.outcomes.get(video_id))
        self.finish(video_id)

    def _failed_or_rejected(self, video_id: str, error: Exception) -> None:
        """Record ``error`` of ``video_id``: a rejection when it says the input is bad (a
        media decode error, :class:`InputRejected`), else a failure (retried next run).
        Never a rejection while the disk is under its reserve (``disk_room``): a decoder's
        or an encoder's output write may then have failed for want of room, not because
        of the video, and a failure is only computed again."""
        full = no_room(self.store.output_dir)
        if full is None:
            if isinstance(error, InputRejected):
                self._reject(video_id, naming_source(error.reason, self._source(video_id)))
                return
            reason = decode_rejection(error, self._source(video_id))
            if reason is not None:  # media that does not decode is that video's outcome
                self._reject(video_id, reason)
                return
        met = f"{type(error).__name__}: {error}"
        self.failures[video_id] = met if full is None else f"NoRoom: {full} (met {met})"
        if full is None and is_transient(error):
            self.transient.add(video_id)
        self.context.log.error(f"{self.name}: failed on {video_id!r}:\n{traceback.format_exc()}")

    def _reject(self, video_id: str, reason: str) -> None:
        self.outcomes[video_id] = Rejected(reason=reason, origin=self.outputs[0])
        self.context.log.warning(f"{self.name}: rejected {video_id!r}: {reason}")

    def _source(self, video_id: str) -> str | None:
        """The video's registered source file, to name in a reason (None: unregistered,
        as for partitions added by hand)."""
        try:
            return str(self.store.catalog.entry(video_id).primary_source)
        except KeyError:
            return None

    # -- the step -------------------------------------------------------------------------
    def compute_each(
        self, todo: dict[str, VideoIO], compute_one: ComputeVideo, workers: int
    ) -> None:
        """Each video alone (``workers`` at a time), then those another process had."""

        def claim_then(video_id: str, io: VideoIO) -> None:
            if not self.claims.try_claim(video_id):
                self.later.append((video_id, io))
            elif self.done_meanwhile(video_id):
                self.keep(video_id)
            else:
                self.attempt(video_id, functools.partial(compute_one, video_id, io))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            # attempt() records errors; anything else must not pass
            _results_or_cancel(
                [pool.submit(claim_then, *item) for item in todo.items()], self.context.run_id
            )
        self.compute_later(compute_one, workers)

    def compute_batched(
        self, todo: dict[str, VideoIO], compute_one: ComputeVideo, compute_many: ComputeVideos
    ) -> None:
        """One batch (on a GPU, say) over the videos no other process computes; a video
        the batch did not return is computed alone, one at a time."""
        mine: dict[str, VideoIO] = {}
        for video_id, io in todo.items():
            if not self.claims.try_claim(video_id):
                self.later.append((video_id, io))
            elif self.done_meanwhile(video_id):
                self.keep(video_id)
            else:
                mine[video_id] = io
        began = time.perf_counter()
        batched: dict[str, Any] = {}
        try:
            batched = compute_many(mine) if mine else {}
        except Exception as error:
            self.context.log.warning(
                f"{self.name}: batch failed ({error!r}); retrying videos one by one"
            )
        share = (time.perf_counter() - began) / max(1, len(batched))
        for video_id, io in mine.items():
            if video_id in batched:
                self.outcomes[video_id] = batched[video_id]
                self.compute_s[video_id] = share
                self.progress.done(self.outputs[0], batched[video_id])
                self.finish(video_id)
            else:  # claim held: computed alone
                self.attempt(video_id, functools.partial(compute_one, video_id, io))
        self.compute_later(compute_one, 1)

    def compute_later(self, compute_one: ComputeVideo, workers: int) -> None:
        """Videos another process was computing: wait for it, then keep its result (or
        compute them here when it failed or died)."""

        def claimed_then(video_id: str, io: VideoIO) -> None:
            self.claims.wait(video_id)
            if self.done_meanwhile(video_id):
                self.keep(video_id)
            else:
                self.attempt(video_id, functools.partial(compute_one, video_id, io))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            _results_or_cancel(
                [pool.submit(claimed_then, *item) for item in self.later], self.context.run_id
            )

    def results(self) -> dict[str, dict[str, Any]]:
        """``{output_key: {video_id: outcome}}``, with every rejection saved and every
        video's event recorded; raises ``dg.Failure`` (after saving) when videos failed.
        The heap the computations freed goes back to the OS first
        (:func:`~dpl_assets.memory.release_free_heap`), so later steps do not carry it."""
        release_free_heap()  # the computation's temporaries, before later steps run
        self._drop_replaced_sources()
        per_output = {
            key: {
                video_id: outcome if isinstance(outcome, Kept | Rejected) else outcome[key]
                for video_id, outcome in self.outcomes.items()
            }
            for key in self.outputs
        }
        # Upstream rejections are saved here too (not left to the IO manager), so every
        # event below describes what is on disk.
        for video_id, outcome in self.outcomes.items():
            if isinstance(outcome, Rejected) and video_id not in self.saved_here:
                for key in self.outputs:
                    self.store.save(key, video_id, outcome)
                    self.store.mark_saved(key, video_id, outcome)
        for key in self.outputs:
            announce_videos(
                self.context, self.store, key, per_output[key],
                computed_s=self.compute_s, skip=self.done_elsewhere,
            )  # fmt: skip
        self._summarize()
        if self.failures:
            fail_after_saving(
                self.context, self.store, per_output, self.failures, retry=bool(self.transient)
            )
        return per_output

    def _drop_replaced_sources(self) -> None:
        """Upstream rejections (never claimed) of a source replaced meanwhile: not saved."""
        for video_id in list(self.outcomes):
            unsaved = video_id in self.sources_at_start and video_id not in self.saved_here
            if (
                unsaved
                and video_id not in self.done_elsewhere
                and self.store.source_fingerprints(video_id) != self.sources_at_start[video_id]
            ):
                del self.outcomes[video_id]
                self.failures[video_id] = "its source file changed while it was processed"

    def _summarize(self) -> None:
        """One summary line per step (every log line is an event row in the instance's
        storage), and the step's totals on its outputs."""
        elapsed = time.perf_counter() - self.started
        outcomes = self.outcomes.values()
        rejected = {v for v, o in self.outcomes.items() if isinstance(o, Rejected)}
        kept = sum(isinstance(o, Kept) for o in outcomes)
        computed = [v for v in self.todo if v not in self.done_elsewhere]
        # Model start-up apart, so per-frame rates can leave it out (benchmarks read it).
        models = self.tools.model_seconds
        self.context.log.info(
            f"{self.name}: {len(self.context.partition_keys)} videos in {elapsed:.2f} s: "
            f"{len(computed)} computed, {kept} already done "
            f"({len(self.done_elsewhere)} by another process meanwhile), "
            f"{len(rejected)} rejected, {len(self.failures)} failed; "
            + (f"{MODELS_MADE_LABEL} {models:.2f} s; " if models else "")
            + f"{COMPUTED_IDS_LABEL} {listing(computed)}"
        )
        counts = {
            "videos": len(self.context.partition_keys),
            "videos_written": len(self.saved_here - rejected),
            "videos_rejected": len(rejected),
            "videos_kept": kept,
            "videos_failed": len(self.failures),
        }
        for key in self.outputs:
            self.context.add_output_metadata(
                {NO_FRAMEWORK_ASSET_EVENTS: True, **counts, **self.progress.metadata(elapsed)},
                output_name=output_name(self.context, key),
            )


def _results_or_cancel(futures: list[Future[None]], run_id: str) -> None:
    """Wait for ``futures`` in order; on an exception here (an interrupt: Ctrl-C, noted at
    once: :mod:`dpl_assets.interrupts`), cancel those not started, so the step ends with
    the videos being computed. Waits in short slices: a signal the kernel gave another
    thread runs its handler here only when this thread runs Python code."""
    try:
        for future in futures:
            while True:
                try:
                    future.result(timeout=interrupts.SIGNAL_POLL_S)
                    break
                except TimeoutError:
                    continue
    except BaseException as error:
        if isinstance(error, interrupts.INTERRUPTS):
            interrupts.request(run_id)
        for future in futures:
            future.cancel()
        raise
