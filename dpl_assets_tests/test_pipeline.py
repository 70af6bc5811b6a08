"""The pipeline run the way a user runs it: ``dpl run`` through Dagster on a real instance.

Checks what lands on disk against independent references (soundfile, a direct transformers
forward pass) and the instance's own records (runs, materializations, observations).
"""

import json
import os
import re
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import soundfile
import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

from dpl_assets import cli
from dpl_assets.assets.step_log import COMPUTED_IDS_LABEL, MODELS_MADE_LABEL
from dpl_assets.nodes import wav2vec_native
from dpl_assets.resources import cached_wav2vec
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.tiny_wav2vec import build_tiny_wav2vec

GOOD = ["alpha", "beta/gamma", "it's a $(touch pwned) clip; ünï"]
BAD = {
    "zero bytes": (media.make_zero_byte, "zero-byte"),
    "header lost": (media.make_header_lost, "cannot open"),
    "truncated": (media.make_truncated_promising_more, "truncated"),
    "no audio": (media.make_video_only, "no audio stream"),
}


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def run_cli(tmp_path: Path, graph: list, inputs: dict, *extra: str) -> tuple[int, dict]:
    graph_file = write_json(tmp_path / "graph.json", graph)
    inputs_file = write_json(tmp_path / "inputs.json", inputs)
    out = tmp_path / "out"
    code = cli.main(
        ["run", "--graph", str(graph_file), "--inputs", str(inputs_file), "--output_dir",
         str(out), *extra]
    )  # fmt: skip
    report_file = out / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return code, {v["video_id"]: v for v in report.get("videos", [])}


def instance_for(out: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(out / INSTANCE_SUBDIR))


def artefact_mtimes(out: Path) -> dict[str, int]:
    return {
        str(p): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file()
        and INSTANCE_SUBDIR not in p.parts
        and p.name != "report.json"
        and not p.name.endswith(".lock")
        and not p.name.startswith("catalog.sqlite")  # the database, not an artefact
        and "_index" not in p.parts  # derived bookkeeping (the report's entries)
    }


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_wav2vec(tmp_path_factory.mktemp("w2v"), "group")


@pytest.fixture
def good_videos(tmp_path) -> Path:
    root = tmp_path / "videos"
    for index, name in enumerate(GOOD):
        media.make_talking_clip(root / f"{name}.mp4", seconds=1.5 + index * 0.5)
    return root


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    cached_wav2vec.cache_clear()
    yield
    cached_wav2vec.cache_clear()


def test_batched_run_loads_model_once_and_matches_direct_forward(
    tmp_path, good_videos, tiny_model, monkeypatch
):
    loads = []
    original = wav2vec_native.load_native  # a local folder's model loads in plain torch

    def counting(config, *args, **kwargs):
        loads.append(config.weights)
        time.sleep(0.3)  # a load of known least length: the step's summary line reports it
        return original(config, *args, **kwargs)

    monkeypatch.setattr(wav2vec_native, "load_native", counting)
    graph = [
        {"name": "VideoToWavNode", "params": {"num_jobs": 2}},
        {"name": "Wav2vecNode", "params": {"checkpoint": str(tiny_model), "device": "cpu"}},
    ]
    code, report = run_cli(tmp_path, graph, {"video": str(good_videos)})

    assert code == 0
    assert len(loads) == 1
    assert sorted(report) == sorted(["alpha", "beta_gamma", "it's a $(touch pwned) clip; ünï"])
    assert {v["status"] for v in report.values()} == {"processed"}
    runs = instance_for(tmp_path / "out").get_runs()
    assert len(runs) == 1  # every video in one run: one step per asset
    summaries = {
        entry.step_key: entry.user_message
        for entry in instance_for(tmp_path / "out").all_logs(runs[0].run_id)
        if entry.dagster_event is None and COMPUTED_IDS_LABEL in entry.user_message
    }
    made = re.search(rf"{MODELS_MADE_LABEL} ([\d.]+) s;", summaries["wav2vec"])
    assert made and float(made.group(1)) >= 0.3  # model start-up, apart from the videos'
    assert MODELS_MADE_LABEL not in summaries["wav"]  # a node without a model

    reference_model = Wav2Vec2ForPreTraining.from_pretrained(tiny_model).eval()
    normalizer = Wav2Vec2FeatureExtractor.from_pretrained(tiny_model)
    for entry in report.values():
        audio, rate = soundfile.read(entry["outputs"]["wav"], dtype="float32")
        assert rate == 16_000 and audio.ndim == 1
        inputs = normalizer(audio, sampling_rate=rate, return_tensors="pt").input_values
        with torch.no_grad():
            expected = reference_model(inputs).projected_quantized_states[0].numpy()
        features = np.load(entry["outputs"]["wav2vec"])
        np.testing.assert_allclose(features, expected, atol=1e-5)
        assert np.load(entry["outputs"]["volume"]).shape == (features.shape[0],)
    assert not list(tmp_path.rglob("pwned"))


def test_rerun_with_nothing_new_does_no_work_and_rewrites_nothing(tmp_path, good_videos):
    graph = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]
    inputs = {"video": str(good_videos)}
    assert run_cli(tmp_path, graph, inputs)[0] == 0
    out = tmp_path / "out"
    before = artefact_mtimes(out)
    runs_before = len(instance_for(out).get_runs())

    code, report = run_cli(tmp_path, graph, inputs)

    assert code == 0 and {v["status"] for v in report.values()} == {"processed"}
    assert artefact_mtimes(out) == before
    assert len(instance_for(out).get_runs()) == runs_before

    media.make_talking_clip(good_videos / "delta.mp4", seconds=1.0)
    code, report = run_cli(tmp_path, graph, inputs)
    after = artefact_mtimes(out)
    assert code == 0 and report["delta"]["status"] == "processed"
    # The new video is added to the catalog; no earlier artefact is touched.
    assert {k: after[k] for k in before} == before
    assert len(instance_for(out).get_runs()) == runs_before + 1


def test_bad_inputs_are_rejected_with_reasons_while_good_ones_succeed(tmp_path, good_videos):
    for name, (make, _) in BAD.items():
        make(good_videos / f"{name}.mp4")
    graph = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]

    code, report = run_cli(tmp_path, graph, {"video": str(good_videos)})

    assert code == 0  # rejections with reasons are not failures
    for name, (_, cause) in BAD.items():
        entry = report[name]
        assert entry["status"] == "rejected", entry
        assert cause in entry["reason"] and f"{name}.mp4" in entry["reason"]
        assert "wav" not in entry["outputs"]
    assert [v["status"] for k, v in report.items() if k not in BAD] == ["processed"] * len(GOOD)

    # Visible in Dagster: an observation on the rejected partition, with the reason.
    out = tmp_path / "out"
    observations = (
        instance_for(out)
        .fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("wav"), asset_partitions=["no audio"]),
            limit=5,
        )
        .records
    )
    assert observations
    metadata = observations[0].asset_observation.metadata
    assert "no audio stream" in metadata["reason"].value

    # Not re-attempted on the next run ...
    runs = len(instance_for(out).get_runs())
    assert run_cli(tmp_path, graph, {"video": str(good_videos)})[0] == 0
    assert len(instance_for(out).get_runs()) == runs
    # ... unless asked: then only the rejected videos are tried again.
    record = out / "_status" / "wav" / "no audio.rejected.json"
    first_attempt = json.loads(record.read_text())["time"]
    good_mtimes = {k: v for k, v in artefact_mtimes(out).items() if "/out/wav/" in k}
    assert len(good_mtimes) == len(GOOD)
    code, report = run_cli(tmp_path, graph, {"video": str(good_videos)}, "--retry-rejected")
    assert len(instance_for(out).get_runs()) > runs
    assert json.loads(record.read_text())["time"] > first_attempt
    assert report["no audio"]["status"] == "rejected"
    assert {k: v for k, v in artefact_mtimes(out).items() if "/out/wav/" in k} == good_mtimes


def test_unexpected_error_fails_one_video_and_keeps_the_others(tmp_path, good_videos, monkeypatch):
    from dpl_assets.assets import audio as audio_assets

    real_extract = audio_assets.extract_wav_with_damage

    def flaky(source: Path):
        if source.name == "alpha.mp4":
            raise MemoryError("simulated out-of-memory")
        return real_extract(source)

    monkeypatch.setattr(audio_assets, "extract_wav_with_damage", flaky)
    graph = [{"name": "VideoToWavNode", "params": {}}]
    code, report = run_cli(tmp_path, graph, {"video": str(good_videos)})

    assert code == 1
    assert report["alpha"]["status"] == "failed"
    assert "simulated out-of-memory" in report["alpha"]["reason"]
    assert report["beta_gamma"]["status"] == "processed"
    instance = instance_for(tmp_path / "out")
    materialized = instance.get_materialized_partitions(dg.AssetKey("wav"))
    assert "beta_gamma" in materialized and "alpha" not in materialized

    monkeypatch.setattr(audio_assets, "extract_wav_with_damage", real_extract)
    code, report = run_cli(tmp_path, graph, {"video": str(good_videos)})
    assert code == 0 and report["alpha"]["status"] == "processed"


def test_user_wav_root_feeds_wav2vec_without_video_to_wav(tmp_path, good_videos, tiny_model):
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    rate = 44_100
    for name in ["alpha", "beta/gamma"]:
        target = wavs / f"{name}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        stereo = np.random.default_rng(0).uniform(-0.3, 0.3, (rate * 2, 2)).astype(np.float32)
        soundfile.write(target, stereo, rate)
    graph = [{"name": "Wav2vecNode", "params": {"checkpoint": str(tiny_model)}}]

    code, report = run_cli(tmp_path, graph, {"video": str(good_videos), "wav": str(wavs)})

    assert report["alpha"]["status"] == "processed"
    frames = np.load(report["alpha"]["outputs"]["wav2vec"]).shape[0]
    assert frames == (2 * 16_000 - 400) // 320 + 1  # 2 s of the user's audio, resampled
    assert not (tmp_path / "out" / "wav").exists()  # nothing extracted from the videos
    # The third video has no user wav: a failure naming what is missing, not a crash.
    third = report["it's a $(touch pwned) clip; ünï"]
    assert third["status"] == "failed" and "wav" in third["reason"]
    assert code == 1


def test_aac_to_wav_node_reads_the_aac_root(tmp_path, good_videos):
    aacs = tmp_path / "aac"
    media.make_aac(aacs / "alpha.m4a", seconds=1.5)
    graph = [{"name": "AacToWavNode", "params": {}}]
    code, report = run_cli(tmp_path, graph, {"video": str(good_videos), "aac": str(aacs)})

    audio, rate = soundfile.read(report["alpha"]["outputs"]["wav"])
    expected = media.ffprobe_decoded_audio_samples(aacs / "alpha.m4a")
    assert rate == 16_000 and abs(audio.size - expected) <= 1
    assert report["beta_gamma"]["status"] == "rejected"
    assert "no 'aac' file" in report["beta_gamma"]["reason"]
    assert code == 0


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ([{"name": "VideoToWaveNode", "params": {}}], "valid nodes: ProbeNode, VideoToWavNode"),
        ([{"name": "Wav2vecNode", "params": {"checkpiont": "x"}}], "valid params: ['batch_size'"),
        ([{"name": "Wav2vecNode", "params": {"batch_size": 0}}], "batch_size"),
        ([{"name": "Wav2vecNode", "params": {}}], "add VideoToWavNode or AacToWavNode"),
        (
            [{"name": "VideoToWavNode", "params": {}}, {"name": "AacToWavNode", "params": {}}],
            "already produced by VideoToWavNode",
        ),
    ],
)
def test_invalid_graphs_fail_before_any_work(tmp_path, good_videos, capsys, graph, message):
    code, report = run_cli(tmp_path, graph, {"video": str(good_videos)})
    assert code == 2 and not report
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "catalog.sqlite").exists()


def test_invalid_inputs_fail_before_any_work(tmp_path, capsys):
    graph = [{"name": "VideoToWavNode", "params": {}}]
    code, _ = run_cli(tmp_path, graph, {"vdeo": str(tmp_path)})
    assert code == 2 and "valid keys:" in capsys.readouterr().err
    code, _ = run_cli(tmp_path, graph, {"video": str(tmp_path / "missing")})
    assert code == 2 and "not an existing folder" in capsys.readouterr().err


def test_dagster_cli_materializes_a_registered_partition(tmp_path, good_videos):
    """The Dagster way: register with `dpl register`, then `dagster asset materialize`."""
    import subprocess
    import sys

    out = tmp_path / "out"
    inputs = write_json(tmp_path / "inputs.json", {"video": str(good_videos)})
    assert cli.main(["register", "--inputs", str(inputs), "--output_dir", str(out)]) == 0
    env = {**os.environ, "DPL_OUTPUT_DIR": str(out), "DAGSTER_HOME": str(out / INSTANCE_SUBDIR)}
    dagster = Path(sys.executable).with_name("dagster")
    completed = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "dpl_assets", "--select", "wav",
         "--partition", "it's a $(touch pwned) clip; ünï"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    wav = out / "wav" / "it's a $(touch pwned) clip; ünï.wav"
    assert soundfile.info(wav).samplerate == 16_000
    assert not (out / "wav" / "alpha.wav").exists()
    assert not list(tmp_path.rglob("pwned"))
    # In process (no step subprocess loading the code location again), and quiet: INFO and
    # above on the terminal (the instance's python_log_level), no DEBUG event lines.
    output = completed.stdout + completed.stderr
    assert "STEP_WORKER_STARTING" not in output and " - DEBUG - " not in output
    assert "wav: 1 videos" in output

    # Done already: a second call computes nothing; `recompute` (asset config) redoes it.
    written = wav.stat().st_mtime_ns
    for config, computed in (("{}", "0 computed"), (RECOMPUTE_WAV, "1 computed")):
        again = subprocess.run(
            [str(dagster), "asset", "materialize", "-m", "dpl_assets", "--select", "wav",
             "--partition", "it's a $(touch pwned) clip; ünï", "--config-json", config],
            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        assert "wav: 1 videos in" in again.stderr and f"s: {computed}," in again.stderr
        assert (wav.stat().st_mtime_ns != written) == (config == RECOMPUTE_WAV)


RECOMPUTE_WAV = '{"ops": {"wav": {"config": {"recompute": true}}}}'
"""The README's example: asset config of the wav asset's op."""


def test_original_face_graph_runs_the_face_node_once():
    """FaceDetectionNode + FaceLandmarksNode (the original's pairing) share one computation."""
    from dpl_assets.graph import plan_graph

    plan = plan_graph(
        [
            {"name": "VideoToImagesNode", "params": {}},
            {"name": "FaceDetectionNode", "params": {"filter_threshold": 0.9}},
            {"name": "FaceLandmarksNode", "params": {}},
            {"name": "TransformRawBboxesNode", "params": {"extend_factor": 0.2}},
        ]
    )
    ops = plan.run_config(lambda asset: "face_alignment" if asset in FACE_ASSETS else asset)
    assert set(ops["ops"]) == {"images", "face_alignment", "bboxes"}
    assert ops["ops"]["face_alignment"]["config"]["filter_threshold"] == 0.9
    assert ops["ops"]["bboxes"]["config"] == {"method": "transform_raw", "extend_factor": 0.2}


FACE_ASSETS = {"raw_bboxes", "landmarks", "landmarks_mesh", "face_mask", "faces", "face_tracks"}
