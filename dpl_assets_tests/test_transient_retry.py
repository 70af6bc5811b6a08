"""Transient errors (out of memory, a lost GPU) fail the step and the retry policy runs it
again; a bug or a bad video does not get retried. Checked on the instance's own events."""

import collections

import dagster as dg
import numpy as np
import pytest
import torch

from dpl_assets.assets.batch import TRANSIENT_RETRY_POLICY, per_video_asset, run_videos_multi
from dpl_assets.assets.video_step import is_transient
from dpl_assets.outcomes import InputRejected
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets.storage.io_manager import ArtifactIOManager, ArtifactStorage

CALLS: collections.Counter = collections.Counter()
FAIL_WITH: dict[str, BaseException] = {}


# The shipped policy waits seconds between tries; the same policy without the wait here.
QUICK = dg.RetryPolicy(max_retries=TRANSIENT_RETRY_POLICY.max_retries, delay=0)


@per_video_asset(name="volume", retry_policy=QUICK)  # a registered (T,) float32 datatype
def flaky(context: dg.AssetExecutionContext, storage: ArtifactStorage) -> dict:
    def compute(video_id: str, _: object) -> dict[str, np.ndarray]:
        CALLS[video_id] += 1
        error = FAIL_WITH.pop(video_id, None)
        if error is not None:
            raise error
        return {"volume": np.zeros(4, np.float32)}

    return run_videos_multi(
        context, storage, outputs=["volume"], recompute=False, inputs={}, compute_one=compute
    )["volume"]


def run(tmp_path, monkeypatch, failure: BaseException) -> tuple[dg.ExecuteInProcessResult, dict]:
    CALLS.clear()
    FAIL_WITH.clear()
    FAIL_WITH["b"] = failure
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, ["a", "b", "c"])
    storage = ArtifactStorage(output_dir=str(tmp_path))
    (tmp_path / "catalog.json").write_text("{}")
    result = dg.materialize(
        [flaky], instance=instance, raise_on_error=False,
        resources={"storage": storage, "artifacts": ArtifactIOManager(storage=storage)},
        tags={"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"},
    )  # fmt: skip
    return result, dict(CALLS)


@pytest.mark.parametrize(
    "failure",
    [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     RuntimeError("CUDA error: unspecified launch failure"), MemoryError()],
)  # fmt: skip
def test_a_transient_error_is_retried_and_only_the_failed_video_recomputed(
    tmp_path, monkeypatch, failure
):
    result, calls = run(tmp_path, monkeypatch, failure)
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1
    assert calls == {"a": 1, "b": 2, "c": 1}  # a and c were saved before the retry
    assert all((tmp_path / "volume" / f"{v}.npy").exists() for v in "abc")


def test_a_bug_is_not_retried_and_the_others_are_saved(tmp_path, monkeypatch):
    result, calls = run(tmp_path, monkeypatch, ValueError("a bug"))
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert calls == {"a": 1, "b": 1, "c": 1}
    assert (tmp_path / "volume" / "a.npy").exists() and (tmp_path / "volume" / "c.npy").exists()
    assert (tmp_path / "_status" / "volume" / "b.failed.json").exists()


def test_a_bad_video_is_a_rejection_not_a_failure(tmp_path, monkeypatch):
    result, calls = run(tmp_path, monkeypatch, InputRejected("b.mp4: zero-byte file"))
    assert result.success and calls == {"a": 1, "b": 1, "c": 1}
    assert (tmp_path / "_status" / "volume" / "b.rejected.json").exists()


def test_every_shipped_per_video_asset_has_the_retry_policy():
    from dpl_assets.assets import ALL_ASSETS, DATASET_LEVEL_ASSETS

    for asset in ALL_ASSETS:
        if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def is not None:
            assert asset.op.retry_policy == TRANSIENT_RETRY_POLICY, asset.keys
    assert DATASET_LEVEL_ASSETS  # the unpartitioned ones are whole-dataset steps


def test_is_transient():
    assert is_transient(torch.cuda.OutOfMemoryError("x"))
    assert is_transient(RuntimeError("CUDA-capable device(s) is/are busy or unavailable"))
    assert not is_transient(RuntimeError("shape mismatch")) and not is_transient(KeyError("x"))
