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
those framework events (:data:`NO_FRAMEWORK_ASSET_EVENTS`), and the loop records its own;
the outputs are still returned, so downstream steps run and the IO manager is called. The
step's totals go on the step's output (the run's log), never on a partition.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import numpy as np
from dagster._core.definitions.source_asset import SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ, StorageFormat, get_datatype
from dpl_assets.media.errors import decode_rejection
from dpl_assets.outcomes import InputRejected, Kept, Rejected, StagedFile
from dpl_assets.partitions import per_video_backfill, video_partitions
from dpl_assets.storage.atomic import remove_dead_temps
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.locks import Claim
from dpl_assets.storage.store import FEATURE_RATE_HZ, ArtifactStore, artifact_stats
from dpl_assets.storage.video_io import UpstreamRejected, VideoIO

VideoInputs = VideoIO
"""One video's inputs: input name -> loaded artefact, and the rest of the node boundary."""

ComputeOne = Callable[[str, VideoInputs], Any]
ComputeMany = Callable[[dict[str, VideoInputs]], dict[str, Any]]


TRANSIENT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""Steps that failed on a transient error (out of memory, a lost GPU) are run again; the
videos already saved are kept, so a retry redoes only the failed ones."""

COMPUTED_IDS_LABEL = "computed ids:"
"""Each step's summary log line ends with this label and a JSON list of the videos it
computed (at most :data:`MAX_LISTED_IDS`), so runs can be audited for duplicated work."""

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


def run_videos(
    context: dg.AssetExecutionContext,
    storage: ArtifactStorage,
    *,
    recompute: bool,
    inputs: Mapping[str, Mapping[str, Any]],
    compute_one: ComputeOne,
    compute_many: ComputeMany | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Run one asset over the step's videos; return ``{video_id: outcome}`` for the IO manager.

    Args:
        storage: the output dir (the loop reads and writes it; the node never does).
        inputs: input name -> ``{video_id: artefact}`` (lazy mappings from the IO manager).
        compute_one: (video_id, io) -> artefact, where ``io`` is the video's
            :class:`~dpl_assets.storage.video_io.VideoIO` (its declared inputs, and the
            rest of the node boundary); raises InputRejected for bad input.
        compute_many: optional batched version over many videos (one GPU batch); when it
            raises, the videos are retried one by one so one bad video cannot sink the rest.
        workers: threads for loading inputs and for ``compute_one`` (subprocess-bound work).
    """
    key = context.asset_key.path[-1]

    def one(video_id: str, loaded: VideoInputs) -> dict[str, Any]:
        return {key: compute_one(video_id, loaded)}

    def many(todo: dict[str, VideoInputs]) -> dict[str, Any]:
        assert compute_many is not None
        return {video_id: {key: value} for video_id, value in compute_many(todo).items()}

    per_output = run_videos_multi(
        context, storage, outputs=[key], recompute=recompute, inputs=inputs, compute_one=one,
        compute_many=many if compute_many is not None else None, workers=workers,
    )  # fmt: skip
    return per_output[key]


def run_videos_multi(
    context: dg.AssetExecutionContext,
    storage: ArtifactStorage,
    *,
    outputs: Sequence[str],
    recompute: bool,
    inputs: Mapping[str, Mapping[str, Any]],
    compute_one: Callable[[str, VideoInputs], dict[str, Any]],
    compute_many: Callable[[dict[str, VideoInputs]], dict[str, dict[str, Any]]] | None = None,
    workers: int = 1,
) -> dict[str, dict[str, Any]]:
    """:func:`run_videos` for a node with several outputs (a multi-asset).

    ``compute_one`` returns ``{output_key: artefact}``; a video is done when every output
    is; a rejection rejects every output. Returns ``{output_key: {video_id: outcome}}``.
    """
    store = storage.store()
    name = "+".join(outputs)
    started, step_started = time.perf_counter(), time.time()
    # Files a killed writer left (streamed stacks, temp files): sensor and backfill runs
    # clean up too, not only `dpl run`. Only dead writers' files go (see the store).
    store.remove_dead_staging(outputs)
    for key in outputs:
        remove_dead_temps(store.output_dir / key)
    outcomes: dict[str, Any] = {}  # video_id -> Kept | Rejected | {output_key: artefact}
    failures: dict[str, str] = {}

    sources_at_start: dict[str, list | None] = {}

    def gather(video_id: str) -> tuple[str, VideoInputs | Rejected | Kept | str]:
        if not recompute and all(store.is_done(key, video_id) for key in outputs):
            return video_id, Kept()
        sources_at_start[video_id] = store.source_fingerprints(video_id)
        try:
            loaded = {name: artefacts[video_id] for name, artefacts in inputs.items()}
        except Exception as error:  # missing or unreadable input: a failure, retried later
            reason = decode_rejection(error)
            if reason is not None:  # a user's file that does not decode: its outcome
                return video_id, Rejected(reason=reason, origin=outputs[0])
            return video_id, f"cannot load inputs: {type(error).__name__}: {error}"
        upstream = next((v for v in loaded.values() if isinstance(v, Rejected)), None)
        return video_id, upstream if upstream is not None else VideoIO(store, video_id, loaded)

    todo: dict[str, VideoInputs] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for video_id, gathered in pool.map(gather, context.partition_keys):
            if isinstance(gathered, str):
                failures[video_id] = gathered
            elif isinstance(gathered, Kept | Rejected):
                outcomes[video_id] = gathered
            else:
                todo[video_id] = gathered

    # Claims: a video's outputs are computed and saved by one process at a time. A video
    # another process is computing waits until last; then it is done (kept) or, when that
    # process failed or died, computed here.
    claims = _Claims(store, outputs)
    done_elsewhere: set[str] = set()
    saved_here: set[str] = set()
    transient: set[str] = set()
    progress = _Progress(context, name, len(todo))
    compute_s: dict[str, float] = {}  # video_id -> seconds computing it (its share of a batch)

    def done_meanwhile(video_id: str) -> bool:
        """Done by another process since this step looked (for ``recompute``: written
        since the step started)."""
        if not recompute:
            return all(store.is_done(key, video_id) for key in outputs)
        times = [store.done_at(key, video_id) for key in outputs]
        return all(t is not None and t >= step_started for t in times)

    def keep(video_id: str) -> None:
        outcomes[video_id] = Kept()
        done_elsewhere.add(video_id)
        progress.skip()
        claims.release(video_id)

    def finish(video_id: str) -> None:
        """Save the video's outcome while its claim is held, then release the claim."""
        try:
            outcome = outcomes.get(video_id)
            if outcome is None or isinstance(outcome, Kept):
                return
            # A source replaced while it was processed (the sensor has discarded its
            # outputs and asked for a new run): what was computed from it is not saved.
            if store.source_fingerprints(video_id) != sources_at_start.get(video_id):
                del outcomes[video_id]
                failures[video_id] = "its source file changed while it was processed"
                return
            for key in outputs:
                value = outcome if isinstance(outcome, Rejected) else outcome[key]
                store.save(key, video_id, value)
                store.mark_saved(key, video_id, value)
            saved_here.add(video_id)
        except Exception as error:
            outcomes.pop(video_id, None)
            failures[video_id] = f"cannot save: {type(error).__name__}: {error}"
            context.log.error(f"{name}: saving {video_id!r} failed:\n{traceback.format_exc()}")
        finally:
            claims.release(video_id)

    def attempt(video_id: str, compute: Callable[[], Any]) -> None:
        began = time.perf_counter()
        try:
            outcomes[video_id] = compute()
        except UpstreamRejected as upstream:
            outcomes[video_id] = upstream.rejection
        except InputRejected as rejection:
            named = naming_source(rejection.reason, _primary_source(store, video_id))
            outcomes[video_id] = Rejected(reason=named, origin=outputs[0])
            context.log.warning(f"{name}: rejected {video_id!r}: {named}")
        except Exception as error:
            reason = decode_rejection(error, _primary_source(store, video_id))
            if reason is not None:  # media that does not decode is that video's outcome
                outcomes[video_id] = Rejected(reason=reason, origin=outputs[0])
                context.log.warning(f"{name}: rejected {video_id!r}: {reason}")
            else:
                failures[video_id] = f"{type(error).__name__}: {error}"
                if is_transient(error):
                    transient.add(video_id)
                context.log.error(f"{name}: failed on {video_id!r}:\n{traceback.format_exc()}")
        compute_s[video_id] = time.perf_counter() - began
        progress.done(outputs[0], outcomes.get(video_id))
        finish(video_id)

    def claimed_then(video_id: str, loaded: VideoInputs) -> None:
        """Compute one video whose claim may be another process's: wait for it first."""
        claims.wait(video_id)
        if done_meanwhile(video_id):
            keep(video_id)
        else:
            attempt(video_id, functools.partial(compute_one, video_id, loaded))

    def claim_then(video_id: str, loaded: VideoInputs) -> None:
        """Compute one video unless another process has claimed it (then: later)."""
        if not claims.try_claim(video_id):
            later.append((video_id, loaded))
        elif done_meanwhile(video_id):
            keep(video_id)
        else:
            attempt(video_id, functools.partial(compute_one, video_id, loaded))

    later: list[tuple[str, VideoInputs]] = []
    try:
        batched: dict[str, Any] = {}
        if compute_many is not None and len(todo) > 1:
            # One batch (on a GPU, say) over the videos no other process computes.
            mine: dict[str, VideoInputs] = {}
            for video_id, loaded in todo.items():
                if not claims.try_claim(video_id):
                    later.append((video_id, loaded))
                elif done_meanwhile(video_id):
                    keep(video_id)
                else:
                    mine[video_id] = loaded
            began = time.perf_counter()
            try:
                batched = compute_many(mine) if mine else {}
            except Exception as error:
                context.log.warning(f"{name}: batch failed ({error!r}); retrying videos one by one")
            share = (time.perf_counter() - began) / max(1, len(batched))
            for video_id in mine:
                if video_id in batched:
                    outcomes[video_id] = batched[video_id]
                    compute_s[video_id] = share
                    progress.done(outputs[0], outcomes[video_id])
                    finish(video_id)
                else:  # claim held: computed alone below
                    attempt(video_id, functools.partial(compute_one, video_id, mine[video_id]))
        # Batched (model) work retries one video at a time; subprocess work uses the workers.
        compute_workers = 1 if compute_many is not None else max(1, workers)
        with ThreadPoolExecutor(max_workers=compute_workers) as pool:
            if compute_many is None or len(todo) <= 1:
                for future in [pool.submit(claim_then, *item) for item in todo.items()]:
                    future.result()  # attempt() records errors; anything else must not pass
            # Videos another process was computing: wait for it, then keep its result.
            for future in [pool.submit(claimed_then, *item) for item in later]:
                future.result()
    finally:
        claims.release_all()
    # Upstream rejections (never claimed, saved by the IO manager): same rule for a source
    # replaced meanwhile.
    for video_id in list(outcomes):
        unsaved = video_id in sources_at_start and video_id not in saved_here
        if (
            unsaved
            and video_id not in done_elsewhere
            and store.source_fingerprints(video_id) != sources_at_start[video_id]
        ):
            del outcomes[video_id]
            failures[video_id] = "its source file changed while it was processed"

    per_output = {
        key: {
            video_id: outcome if isinstance(outcome, Kept | Rejected) else outcome[key]
            for video_id, outcome in outcomes.items()
        }
        for key in outputs
    }
    # Upstream rejections are saved here too (not left to the IO manager), so every event
    # below describes what is on disk.
    for video_id, outcome in outcomes.items():
        if isinstance(outcome, Rejected) and video_id not in saved_here:
            for key in outputs:
                store.save(key, video_id, outcome)
                store.mark_saved(key, video_id, outcome)
    for key in outputs:
        _announce_videos(
            context, store, key, per_output[key], computed_s=compute_s, skip=done_elsewhere
        )
    # One summary per step: every log line is an event row in the instance's storage.
    elapsed = time.perf_counter() - started
    computed = [video_id for video_id in todo if video_id not in done_elsewhere]
    context.log.info(
        f"{name}: {len(context.partition_keys)} videos in {elapsed:.2f} s: "
        f"{len(computed)} computed, "
        f"{sum(isinstance(o, Kept) for o in outcomes.values())} already done "
        f"({len(done_elsewhere)} by another process meanwhile), "
        f"{sum(isinstance(o, Rejected) for o in outcomes.values())} rejected, "
        f"{len(failures)} failed; {COMPUTED_IDS_LABEL} {_listing(computed)}"
    )
    counts = {
        "videos": len(context.partition_keys),
        "videos_written": len(
            saved_here - {v for v, o in outcomes.items() if isinstance(o, Rejected)}
        ),
        "videos_rejected": sum(isinstance(o, Rejected) for o in outcomes.values()),
        "videos_kept": sum(isinstance(o, Kept) for o in outcomes.values()),
        "videos_failed": len(failures),
    }
    for key in outputs:
        context.add_output_metadata(
            {NO_FRAMEWORK_ASSET_EVENTS: True, **counts, **progress.metadata(elapsed)},
            output_name=_output_name(context, key),
        )
    if failures:
        _save_successes_then_fail(context, store, per_output, failures, retry=bool(transient))
    return per_output


def naming_source(reason: str, source: str | None) -> str:
    """``reason`` as a user reads it: prefixed with the video's source file unless it
    already names it (nodes that see only arrays, e.g. "no face", cannot)."""
    if source is None or source in reason:
        return reason
    return f"{source}: {reason}"


def _primary_source(store: ArtifactStore, video_id: str) -> str | None:
    """The video's registered source file, to name in a decode error (None: unregistered,
    as for partitions added by hand)."""
    try:
        return str(store.catalog.entry(video_id).primary_source)
    except KeyError:
        return None


def _listing(video_ids: list[str]) -> str:
    listed = json.dumps(video_ids[:MAX_LISTED_IDS], ensure_ascii=False)
    more = len(video_ids) - MAX_LISTED_IDS
    return listed + (f" and {more} more" if more > 0 else "")


class _Claims:
    """This step's claims, one per (output, video): all of a video's outputs or none."""

    def __init__(self, store: ArtifactStore, outputs: Sequence[str]):
        self.store, self.outputs = store, sorted(outputs)
        self.held: dict[str, list[Claim]] = {}
        self.lock = threading.Lock()

    def try_claim(self, video_id: str) -> bool:
        claims = [self.store.claim(key, video_id) for key in self.outputs]
        for index, claim in enumerate(claims):
            if not claim.try_acquire():
                for taken in claims[:index]:
                    taken.release()
                return False
        with self.lock:
            self.held[video_id] = claims
        return True

    def wait(self, video_id: str) -> None:
        while not self.try_claim(video_id):
            time.sleep(0.2)

    def release(self, video_id: str) -> None:
        with self.lock:
            claims = self.held.pop(video_id, [])
        for claim in claims:
            claim.release()

    def release_all(self) -> None:
        for video_id in list(self.held):
            self.release(video_id)


def _output_name(context: dg.AssetExecutionContext, key: str) -> str:
    return context.assets_def.get_output_name_for_asset_key(dg.AssetKey(key))


class _Progress:
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
        unit, amount = _work_of(key, outcome)
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
        metadata: dict[str, Any] = {"step_s": round(elapsed, 3), "videos_computed": self.count}
        for unit, value in self.work.items():
            metadata[unit] = round(value, 3) if unit == "audio_s" else int(value)
            metadata[f"{unit}_per_s"] = round(value / elapsed, 1) if elapsed > 0 else 0.0
        return metadata


def _work_of(key: str, outcome: Any) -> tuple[str, float]:
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


def _announce_videos(
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


def _save_successes_then_fail(
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
