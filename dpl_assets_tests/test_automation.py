"""The new-video sensor, the backfill schedule and ``dpl backfill``, on a real instance.

Sensor and schedule are evaluated as the daemon would (``build_sensor_context`` /
``build_schedule_context``), and their run requests are executed in process with the
requested config, tags and asset selection, so a request that Dagster would refuse fails.
References: the files put in the input folder and what lands on disk.
"""

import json
import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from dpl_assets import cli
from dpl_assets.automation import backfill_schedule, new_videos_sensor
from dpl_assets.catalog import Catalog
from dpl_assets.definitions import build_definitions
from dpl_assets.partitions import (
    PARTITIONS_PER_CALL,
    VIDEOS_PARTITION_NAME,
    add_video_partitions,
    add_video_partitions_requests,
)
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_pipeline import instance_for

GRAPH = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Two clips registered with `dpl run` (graph saved), the env a code location has."""
    videos = tmp_path / "videos"
    media.make_talking_clip(videos / "a.mp4", seconds=1.0)
    media.make_talking_clip(videos / "b.mp4", seconds=1.0)
    media.make_talking_clip(videos / "skip" / "c.mp4", seconds=1.0)
    (tmp_path / "graph.json").write_text(json.dumps(GRAPH))
    spec = {"video": "videos", "filters": {"exclude": ["skip/*"]}}
    (tmp_path / "inputs.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    code = cli.main(["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                     str(tmp_path / "inputs.json"), "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    monkeypatch.setenv("DPL_OUTPUT_DIR", str(out))
    monkeypatch.setenv("DPL_SENSOR_SETTLE_S", "0")  # files made here are complete at once
    return {"videos": videos, "out": out, "instance": instance_for(out)}


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = new_videos_sensor(context)
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:  # what the daemon applies
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def execute(request: dg.RunRequest, out: Path, instance: dg.DagsterInstance) -> None:
    """Execute ``request`` as the daemon's run worker does: in an instance of its own, made
    from ``instance``'s ref and entered while the definitions load and the run executes.
    (Loading definitions reads the entered instance's defs-state storage, a context
    variable: outside any entered instance it read a storage whose instance had been
    collected, twice in CI, "Attempted to resolve undefined DagsterInstance weakref".)"""
    job = dg.define_asset_job("requested", selection=request.asset_selection)
    with dg.DagsterInstance.from_ref(instance.get_ref()) as run_instance:
        result = (
            build_definitions(out, jobs=[job])
            .resolve_job_def("requested")
            .execute_in_process(
                run_config=request.run_config, tags=request.tags, instance=run_instance
            )
        )
    assert result.success


def partitions(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME))


def test_sensor_new_unchanged_changed_removed_and_filtered_files(setup):
    videos, out, instance = setup["videos"], setup["out"], setup["instance"]
    first = tick(instance, None)
    assert first.run_requests == []  # everything was registered and run by dpl run
    assert partitions(instance) == ["a", "b"]  # skip/c.mp4 is excluded by the filters

    media.make_talking_clip(videos / "new one.mp4", seconds=1.0)
    media.make_talking_clip(videos / "skip" / "d.mp4", seconds=1.0)
    result = tick(instance, first.cursor)
    assert partitions(instance) == ["a", "b", "new one"]
    [request] = result.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "new one"
    assert request.tags["dagster/asset_partition_range_end"] == "new one"
    assert {key.path[-1] for key in request.asset_selection} == {"probe", "wav", "volume"}
    execute(request, out, instance)
    assert (out / "wav" / "new one.wav").exists() and (out / "volume" / "new one.npy").exists()

    unchanged = tick(instance, result.cursor)
    assert unchanged.run_requests == []

    old_wav = (out / "wav" / "a.wav").read_bytes()
    media.make_talking_clip(videos / "a.mp4", seconds=2.0, audio="speech")  # new content
    changed = tick(instance, unchanged.cursor)
    [request] = changed.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "a"
    assert not (out / "wav" / "a.wav").exists()  # stale output discarded at once
    execute(request, out, instance)
    assert (out / "wav" / "a.wav").read_bytes() != old_wav

    (videos / "b.mp4").unlink()
    removed = tick(instance, changed.cursor)
    assert removed.run_requests == [] and partitions(instance) == ["a", "new one"]
    assert json.loads(removed.cursor)["removed"] == 1


def test_new_videos_are_split_over_the_runs_the_queue_starts_at_once(setup):
    videos, instance = setup["videos"], setup["instance"]
    first = tick(instance, None)
    for name in ("n1", "n2", "n3"):
        media.make_talking_clip(videos / f"{name}.mp4", seconds=0.5)
    result = tick(instance, first.cursor)
    # The shipped dagster.yaml runs 2 runs at once: 3 new videos make ranges of 2 and 1.
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests
    ]
    assert ranges == [("n1", "n2"), ("n3", "n3")]


def test_first_tick_runs_videos_registered_but_never_run(tmp_path, monkeypatch):
    media.make_talking_clip(tmp_path / "videos" / "x.mp4", seconds=1.0)
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"
    assert cli.main(["register", "--inputs", str(tmp_path / "inputs.json"),
                     "--output_dir", str(out)]) == 0  # fmt: skip
    monkeypatch.setenv("DPL_OUTPUT_DIR", str(out))
    monkeypatch.setenv("DPL_SENSOR_SETTLE_S", "0")
    instance = instance_for(out)
    [request] = tick(instance, None).run_requests  # no graph saved: the default graph
    assert "crops" in {key.path[-1] for key in request.asset_selection}
    assert request.tags["dagster/asset_partition_range_start"] == "x"


def test_schedule_requests_missing_and_failed_but_not_rejected(setup, monkeypatch):
    out, instance = setup["out"], setup["instance"]
    context = dg.build_schedule_context(instance=instance)
    assert isinstance(backfill_schedule(context), dg.SkipReason)  # all done

    (out / "volume" / "b.npy").unlink()  # lost
    (out / "_status" / "volume").mkdir(parents=True, exist_ok=True)
    (out / "_status" / "wav").mkdir(parents=True, exist_ok=True)
    (out / "wav" / "a.wav").unlink()
    (out / "_status" / "wav" / "a.rejected.json").write_text(
        json.dumps({"status": "rejected", "reason": "test", "origin": "wav"})
    )
    [request] = backfill_schedule(context)
    assert request.tags["dagster/asset_partition_range_start"] == "b"
    assert request.tags["dagster/asset_partition_range_end"] == "b"
    execute(request, out, instance)
    assert (out / "volume" / "b.npy").exists()

    monkeypatch.setenv("DPL_RETRY_REJECTED", "1")
    [request] = backfill_schedule(context)
    assert request.tags["dagster/asset_partition_range_start"] == "a"
    execute(request, out, instance)
    assert (out / "wav" / "a.wav").exists()


def test_dpl_backfill_replays_the_last_run(setup):
    videos, out = setup["videos"], setup["out"]
    media.make_talking_clip(videos / "late.mp4", seconds=1.0)
    assert cli.main(["backfill", "--output_dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {v["video_id"]: v["status"] for v in report["videos"]} == {
        "a": "processed", "b": "processed", "late": "processed"
    }  # fmt: skip
    assert np.load(out / "volume" / "late.npy").ndim == 1


def test_files_still_being_written_wait_and_videos_left_out_are_caught_up(setup, monkeypatch):
    videos, instance = setup["videos"], setup["instance"]
    cursor = tick(instance, None).cursor
    monkeypatch.setenv("DPL_SENSOR_SETTLE_S", "30")
    media.make_talking_clip(videos / "copying.mp4", seconds=1.0)  # modified just now
    waiting = tick(instance, cursor)
    assert waiting.run_requests == [] and "copying" not in partitions(instance)
    old = time.time() - 60
    os.utime(videos / "copying.mp4", (old, old))  # the copy finished a minute ago
    [request] = tick(instance, waiting.cursor).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "copying"

    # A video in the catalog whose partition was never added (a tick that failed halfway).
    monkeypatch.setenv("DPL_SENSOR_SETTLE_S", "0")
    instance.delete_dynamic_partition(VIDEOS_PARTITION_NAME, "copying")
    caught_up = tick(instance, waiting.cursor)
    assert "copying" in partitions(instance) and len(caught_up.run_requests) == 1


def test_a_user_file_added_to_another_root_changes_its_video(setup, monkeypatch):
    out = setup["out"]
    (setup["videos"].parent / "inputs.json").write_text(
        json.dumps({"video": "videos", "wav": "wavs"})
    )
    wavs = setup["videos"].parent / "wavs"
    wavs.mkdir()
    cli_args = ["register", "--inputs", str(setup["videos"].parent / "inputs.json"),
                "--output_dir", str(out)]  # fmt: skip
    assert cli.main(cli_args) == 0  # the wav root is empty: nothing changes
    assert (out / "volume" / "a.npy").exists()
    import soundfile

    soundfile.write(wavs / "a.wav", np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    assert cli.main(cli_args) == 0
    assert not (out / "volume" / "a.npy").exists()  # derived from the old audio: discarded
    assert (out / "volume" / "b.npy").exists()
    (wavs / "a.wav").unlink()
    assert cli.main(cli_args) == 0
    entry = Catalog(out).snapshot()["videos"]["a"]
    assert "wav" not in entry["sources"]  # a user file that is gone is not a source


def test_a_source_replaced_while_processed_is_not_saved(tmp_path, monkeypatch):
    """What was computed from the old file is dropped; the next run uses the new one."""
    import dpl_assets.assets.audio as audio_assets

    media.make_talking_clip(tmp_path / "videos" / "v.mp4", seconds=1.0)
    original = audio_assets.extract_wav_with_damage

    def extract_then_replace(path):
        extracted = original(path)
        media.make_talking_clip(tmp_path / "videos" / "v.mp4", seconds=2.0)  # replaced now
        return extracted

    monkeypatch.setattr(audio_assets, "extract_wav_with_damage", extract_then_replace)
    (tmp_path / "graph.json").write_text(json.dumps([{"name": "VideoToWavNode", "params": {}}]))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"
    arguments = ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                 str(tmp_path / "inputs.json"), "--output_dir", str(out)]  # fmt: skip
    assert cli.main(arguments) == 1
    [video] = json.loads((out / "report.json").read_text())["videos"]
    assert video["status"] == "failed" and "changed while it was processed" in video["reason"]
    assert not (out / "wav" / "v.wav").exists()

    monkeypatch.setattr(audio_assets, "extract_wav_with_damage", original)
    assert cli.main(arguments) == 0
    import soundfile

    assert soundfile.info(out / "wav" / "v.wav").frames == 32000  # the new 2 s file


def test_a_run_of_an_asset_the_code_location_does_not_know_says_to_reload_it():
    from dpl_assets.automation import run_request
    from dpl_assets.graph import plan_graph

    plan = plan_graph([{"name": "VideoToWavNode", "params": {}}])
    with pytest.raises(dg.DagsterInvariantViolationError, match="reload the code location"):
        run_request(plan, ["wav", "not_loaded_here"], "a", "b", None, "sensor")
    assert run_request(plan, ["wav"], "a", "b", None, "sensor").asset_selection == [
        dg.AssetKey("wav")
    ]


def test_a_quarter_million_videos_become_partitions_in_pieces(tmp_path):
    """SQLite refuses a statement with more than 250,000 variables, and Dagster's SQLite
    storage adds all keys of one call in one statement: that call fails, ours (and the
    sensor's requests, one daemon call each) add them in pieces."""
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    keys = [f"video_{index:06d}" for index in range(260_000)]
    with pytest.raises(Exception, match="too many SQL variables"):
        instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, keys)
    add_video_partitions(instance, keys)
    assert instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME) == keys
    requests = add_video_partitions_requests(keys[:25_001])
    assert [len(r.partition_keys) for r in requests] == [PARTITIONS_PER_CALL] * 2 + [5_001]
    assert [key for r in requests for key in r.partition_keys] == keys[:25_001]
