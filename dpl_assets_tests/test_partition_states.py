"""What Dagster records per video: a rejected video is never a materialized partition, and
each partition carries that video's own record, not the totals of the step it ran in.

A real ``dpl run`` (wav + volume) over two good clips, a video without audio and an empty
file, all in one partition-range run; then the instance is read the way the UI reads it
(partition status cache, materialization and observation records).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import soundfile
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from dpl_assets import cli
from dpl_assets.assets.step_log import STATUS_KEPT, STATUS_REJECTED, STATUS_WRITTEN
from dpl_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, video_partitions
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests import media_factory as media

GOOD = {"short one": 1.0, "long one": 2.0}
REJECTED = {"silent film": "no audio stream", "empty upload": "zero-byte"}
GRAPH = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]


def _run(base: Path, *extra: str) -> dict:
    out = base / "out"
    code = cli.main(
        ["run", "--graph", str(base / "graph.json"), "--inputs", str(base / "inputs.json"),
         "--output_dir", str(out), *extra]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    return {v["video_id"]: v for v in report["videos"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("partition_states")
    videos = base / "videos"
    for name, seconds in GOOD.items():
        media.make_talking_clip(videos / f"{name}.mp4", seconds=seconds)
    media.make_video_only(videos / "silent film.mp4")
    media.make_zero_byte(videos / "empty upload.mp4")
    (base / "graph.json").write_text(json.dumps(GRAPH))
    (base / "inputs.json").write_text(json.dumps({"video": str(videos)}))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)  # the instance goes to {out}/.dagster
        report = _run(base)
        out = base / "out"
        instance = dg.DagsterInstance.from_config(str(out / INSTANCE_SUBDIR))
        yield {"base": base, "out": out, "report": report, "instance": instance}


def _latest(instance: dg.DagsterInstance, key: str, partition: str, kind: str):
    fetch = instance.fetch_materializations if kind == "m" else instance.fetch_observations
    records = fetch(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return record.asset_materialization if kind == "m" else record.asset_observation


def test_report_as_expected(run):
    report = run["report"]
    assert {name: report[name]["status"] for name in [*GOOD, *REJECTED]} == {
        **{name: "processed" for name in GOOD},
        **{name: "rejected" for name in REJECTED},
    }
    # One run covered all four videos: the mixed step is what is tested.
    assert len(run["instance"].get_runs()) == 1


def _status(instance: dg.DagsterInstance, key: str) -> dict[str, set[str]]:
    """The partition status the UI's Partitions tab shows: Dagster's status cache."""
    cache = get_and_update_asset_status_cache_value(
        instance, dg.AssetKey(key), video_partitions, dynamic_partitions_loader=instance
    )
    assert cache is not None
    with partition_loading_context(dynamic_partitions_store=instance):
        return {
            "materialized": set(
                cache.deserialize_materialized_partition_subsets(
                    video_partitions
                ).get_partition_keys()
            ),
            "failed": set(
                cache.deserialize_failed_partition_subsets(video_partitions).get_partition_keys()
            ),
            "in_progress": set(
                cache.deserialize_in_progress_partition_subsets(
                    video_partitions
                ).get_partition_keys()
            ),
        }


@pytest.mark.parametrize("key", ["wav", "volume"])
def test_rejected_videos_are_not_materialized_partitions(run, key):
    instance = run["instance"]
    assert instance.get_materialized_partitions(dg.AssetKey(key)) == set(GOOD)
    status = _status(instance, key)
    assert status == {"materialized": set(GOOD), "failed": set(), "in_progress": set()}
    registered = set(instance.get_dynamic_partitions("videos"))
    assert registered - status["materialized"] == set(REJECTED)  # the UI's "Missing"


@pytest.mark.parametrize("key", ["wav", "volume"])
def test_rejected_partition_carries_its_reason(run, key):
    instance = run["instance"]
    for name, cause in REJECTED.items():
        assert _latest(instance, key, name, "m") is None
        observation = _latest(instance, key, name, "o")
        assert observation is not None, name
        metadata = observation.metadata
        assert metadata["status"].value == STATUS_REJECTED
        assert cause in metadata["reason"].value and f"{name}.mp4" in metadata["reason"].value
        assert metadata["rejected_by"].value == "wav"  # volume carries wav's rejection on
        record = Path(metadata["record"].value)
        assert json.loads(record.read_text())["reason"] == metadata["reason"].value
        assert cause in (observation.description or "")


def test_materialized_partition_carries_its_own_record(run):
    instance, out = run["instance"], run["out"]
    for name in GOOD:
        wav = _latest(instance, "wav", name, "m")
        assert wav is not None
        metadata = {k: v.value for k, v in wav.metadata.items()}
        path = out / "wav" / f"{name}.wav"
        info = soundfile.info(str(path))  # the independent reference
        assert metadata["status"] == STATUS_WRITTEN
        assert metadata["path"] == str(path)
        assert metadata["samples"] == info.frames and metadata["sample_rate_hz"] == 16_000
        assert metadata["audio_s"] == pytest.approx(info.frames / 16_000, abs=1e-3)
        assert metadata["size_bytes"] == path.stat().st_size
        assert metadata["compute_s"] > 0
        # Nothing about the step's other videos.
        assert not {"videos", "written", "rejected", "kept", "frames"} & set(metadata)

        volume = {k: v.value for k, v in _latest(instance, "volume", name, "m").metadata.items()}
        steps = len(np.load(out / "volume" / f"{name}.npy"))
        assert volume["feature_steps_50hz"] == steps and volume["audio_s"] == steps / 50
        assert volume["path"] == str(out / "volume" / f"{name}.npy")
    # Two clips of different lengths: their records differ (not one batch-wide record).
    lengths = [_latest(instance, "wav", name, "m").metadata["samples"].value for name in GOOD]
    assert lengths[0] != lengths[1]


def test_step_totals_stay_on_the_step_output(run):
    instance = run["instance"]
    [run_record] = instance.get_run_records()
    outputs = [
        event.dagster_event.step_output_data
        for event in instance.all_logs(run_record.dagster_run.run_id)
        if event.dagster_event is not None and event.dagster_event.is_successful_output
    ]
    wav = next(o for o in outputs if o.step_output_handle.step_key == "wav")
    metadata = {k: v.value for k, v in wav.metadata.items()}
    assert (metadata["videos"], metadata["videos_written"], metadata["videos_rejected"]) == (
        4,
        2,
        2,
    )
    assert metadata["audio_s"] == pytest.approx(sum(GOOD.values()), abs=0.1)
    assert "frames" not in metadata and "frames_per_s" not in metadata


def test_a_rerun_skips_rejected_videos_and_keeps_them_unmaterialized(run):
    instance = run["instance"]
    runs = len(instance.get_runs())
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        report = _run(run["base"])
    assert len(instance.get_runs()) == runs  # nothing pending: no run at all
    assert {name: report[name]["status"] for name in REJECTED} == dict.fromkeys(
        REJECTED, "rejected"
    )
    assert instance.get_materialized_partitions(dg.AssetKey("wav")) == set(GOOD)


def test_a_step_over_done_and_rejected_videos_records_kept_and_rejected(run):
    """A run launched over every video (as from the UI): done videos are kept and recorded
    as such, rejected ones stay rejected (observed again, never materialized)."""
    from dpl_assets.definitions import build_definitions

    instance, out = run["instance"], run["out"]
    defs = build_definitions(out, jobs=[dg.define_asset_job("all_wav", selection=["wav"])])
    ordered = instance.get_dynamic_partitions("videos")
    result = defs.resolve_job_def("all_wav").execute_in_process(
        instance=instance,
        tags={RANGE_START_TAG: ordered[0], RANGE_END_TAG: ordered[-1]},
    )
    assert result.success
    assert instance.get_materialized_partitions(dg.AssetKey("wav")) == set(GOOD)
    for name in GOOD:
        assert _latest(instance, "wav", name, "m").metadata["status"].value == STATUS_KEPT
    for name in REJECTED:
        observation = _latest(instance, "wav", name, "o")
        assert observation.metadata["status"].value == STATUS_REJECTED
        assert observation.metadata["reason"].value
