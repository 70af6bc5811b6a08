"""Nodes from outside the package, run the way a user runs them: by ``dpl run``
(partitions, storage, output check, report, packing of their outputs), by ``dagster asset
materialize`` on the same output dir, and by the new-video sensor.

``custom_node_example.py`` writes an array, ``custom_crops_example.py`` an image stack using
an optional input, ``custom_audio_example.py`` a JSON record with a model, a batch, a
required param and step totals (named by its plain name once "installed": a ``.dist-info``
folder with an entry point); ``custom_bad_nodes.py`` holds what must be refused.
References: the stored frames, landmarks, head pose and audio, read back and recomputed
here by other means.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import dagster as dg
import h5py
import numpy as np
import pytest
import soundfile

from dpl_assets import cli
from dpl_assets.catalog import Catalog
from dpl_assets.datatypes import DATATYPES
from dpl_assets.definitions import CUSTOM_NODES_ENV, build_definitions
from dpl_assets.graph import NODES, GraphError, plan_graph
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets.specs import NODE_ENTRY_POINTS
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.image_stack import ImageStack, decode_image
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_automation import execute, tick
from dpl_assets_tests.test_pipeline import instance_for
from dpl_assets_tests.test_vision_pipeline import moving_astronaut, write_clip

REF = "dpl_assets_tests.custom_node_example:MouthOpeningNode"
CROPS_REF = "dpl_assets_tests.custom_crops_example:MouthCropsNode"
AUDIO_REF = "dpl_assets_tests.custom_audio_example:ClipLevelNode"
REPO = Path(__file__).resolve().parents[1]
PACKED = ["images", "landmarks", "mouth_opening", "mouth_crops"]
GRAPH = [
    {"name": "VideoToImagesNode", "params": {"fps": 25}},
    {"name": "FaceAlignmentNode", "params": {}},
    # The packer may come before the custom nodes whose outputs it packs.
    {"name": "H5DatasetNode", "params": {"datatypes": PACKED}},
    {"name": REF, "params": {"scale": 2.0}},
    {"name": "HeadPoseNode", "params": {}},
    {"name": CROPS_REF, "params": {"size": 48, "scale": 1.6}},
]


def expected_opening(landmarks: np.ndarray, scale: float) -> np.ndarray:
    """Written out again (inner lips 62/66 over corners 48/54), not imported from the node."""
    gap = np.hypot(*(landmarks[:, 62] - landmarks[:, 66]).astype(np.float64).T)
    width = np.hypot(*(landmarks[:, 48] - landmarks[:, 54]).astype(np.float64).T)
    return (scale * gap / width).astype(np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, int, dict]:
    root = tmp_path_factory.mktemp("custom")
    write_clip(root / "videos" / "real face.mp4", moving_astronaut())
    media.make_video_only(root / "videos" / "test pattern.mp4", seconds=1.0)
    (root / "graph.json").write_text(json.dumps(GRAPH))
    (root / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = root / "out"
    code = cli.main(["run", "--graph", str(root / "graph.json"), "--inputs",
                     str(root / "inputs.json"), "--output_dir", str(out)])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    return out, code, {v["video_id"]: v for v in report["videos"]}


def test_dpl_run_computes_stores_checks_and_reports_the_custom_node(run):
    out, code, report = run
    assert code == 0
    face = report["real face"]
    assert face["status"] == "processed", face
    opening = np.load(face["outputs"]["mouth_opening"])
    assert Path(face["outputs"]["mouth_opening"]) == out / "mouth_opening" / "real face.npy"
    landmarks = np.load(face["outputs"]["landmarks"])
    assert opening.shape == (30,) and opening.dtype == np.float32
    np.testing.assert_allclose(opening, expected_opening(landmarks, 2.0), rtol=1e-6)
    assert np.isfinite(opening).all() and (opening >= 0).all()
    # The output check ran on it (per-frame rules from the registry) and passed.
    check = json.loads((out / "_checks" / "mouth_opening" / "real face.json").read_text())
    assert check["problems"] == [] and face["failed_checks"] == {}
    # A rejection upstream is carried through the custom node, with its reason.
    pattern = report["test pattern"]
    assert pattern["status"] == "rejected" and "no face" in pattern["reason"]
    assert not (out / "mouth_opening" / "test pattern.npy").exists()
    # The saved graph names the node, so the code location knows it (next test).
    assert REF in [node["name"] for node in Catalog(out).saved_graph() or []]


def test_its_output_is_packed_by_h5_dataset_node(run):
    _, _, report = run
    face = report["real face"]
    with h5py.File(face["outputs"]["h5_dataset"], "r") as file:
        packed = file["mouth_opening"][:]
        assert file["landmarks"].shape[0] == packed.shape[0] == 30
    np.testing.assert_array_equal(packed, np.load(face["outputs"]["mouth_opening"]))


def test_dagster_asset_materialize_runs_the_custom_node(run):
    out, _, _ = run
    npy = out / "mouth_opening" / "real face.npy"
    written = npy.stat().st_mtime_ns
    env = {
        **os.environ,
        "DPL_OUTPUT_DIR": str(out),
        "DAGSTER_HOME": str(out / INSTANCE_SUBDIR),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    config = {"ops": {"mouth_opening": {"config": {"recompute": True, "scale": 2.0}}}}
    dagster = Path(sys.executable).with_name("dagster")
    completed = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "dpl_assets", "--select", "mouth_opening",
         "--partition", "real face", "--config-json", json.dumps(config)],
        env=env, capture_output=True, text=True, timeout=300, cwd=out.parent,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "mouth_opening: 1 videos in" in output and "1 computed" in output
    assert npy.stat().st_mtime_ns != written
    landmarks = np.load(out / "landmarks" / "real face.npy")
    np.testing.assert_allclose(np.load(npy), expected_opening(landmarks, 2.0), rtol=1e-6)
    # Its output check ran in that run too and was recorded for the partition.
    instance = dg.DagsterInstance.from_config(str(out / INSTANCE_SUBDIR))
    check = dg.AssetCheckKey(dg.AssetKey("mouth_opening"), "output_valid")
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])[check]
    assert latest.status.value == "SUCCEEDED"


def test_a_code_location_knows_custom_nodes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CUSTOM_NODES_ENV, REF)
    graph = build_definitions(tmp_path).resolve_asset_graph()
    assert dg.AssetKey("mouth_opening") in graph.get_all_asset_keys()
    assert graph.get(dg.AssetKey("mouth_opening")).parent_keys == {dg.AssetKey("landmarks")}
    # A packer runs after the custom outputs it could pack.
    assert dg.AssetKey("mouth_opening") in graph.get(dg.AssetKey("h5_dataset")).parent_keys


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_package.nodes:MyNode", "cannot import 'no_such_package.nodes'"),
        (
            "dpl_assets_tests.custom_node_example:Missing",
            "has no attribute 'Missing'; the NodeSpecs it defines: MouthOpeningNode",
        ),
        ("dpl_assets_tests.custom_node_example:NOT_A_SPEC", "is str, not a NodeSpec"),
        ("dpl_assets_tests.custom_node_example:", "a custom node is named"),
    ],
)
def test_bad_custom_node_references_fail_before_any_work(name, message):
    with pytest.raises(GraphError, match="graph node #0") as error:
        plan_graph([{"name": name, "params": {}}])
    assert message in str(error.value)


def test_custom_node_params_are_validated_like_built_in_ones():
    with pytest.raises(GraphError, match="did you mean 'scale'"):
        plan_graph([{"name": REF, "params": {"scal": 2}}])
    with pytest.raises(GraphError, match="invalid params"):
        plan_graph([{"name": REF, "params": {"scale": -1}}])
    plan = plan_graph([{"name": REF, "params": {"scale": 3}}])
    assert plan.assets == ["mouth_opening"] and plan.custom_nodes == [REF]
    assert plan.asset_config == {"mouth_opening": {"scale": 3.0}}


# -- an image stack output, with an optional input ---------------------------------------------


def expected_crops(frames, landmarks, rolls, size: int, scale: float) -> np.ndarray:
    """Written out again, by an inverse map (``cv2.remap``) instead of the node's forward
    affine: crop pixel (u, v) samples the frame at the lips' centre plus (u - size/2,
    v - size/2) x (scale x mouth width / size) along the head's rolled axes."""
    crops = np.zeros((len(frames), size, size, 3), np.uint8)
    offsets = np.arange(size, dtype=np.float64) - size / 2
    du, dv = np.meshgrid(offsets, offsets)
    for index, (frame, points, roll) in enumerate(zip(frames, landmarks, rolls, strict=True)):
        if not np.isfinite(points).all():
            continue
        centre = points[48:68].astype(np.float64).mean(axis=0)
        step = scale * np.hypot(*(points[54] - points[48]).astype(np.float64)) / size
        cos, sin = np.cos(np.radians(roll)), np.sin(np.radians(roll))
        map_x = centre[0] + step * (cos * du + sin * dv)
        map_y = centre[1] + step * (-sin * du + cos * dv)
        crops[index] = cv2.remap(
            frame, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
    return crops


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_an_image_stack_output_is_stored_checked_reported_and_packed(run):
    out, _, report = run
    face = report["real face"]
    path = out / "mouth_crops" / "real face.h5"
    assert Path(face["outputs"]["mouth_crops"]) == path
    with ImageStack(out / "images" / "real face.h5") as images, ImageStack(path) as crops:
        frames, stamps = list(images), images.timestamps
        stored = np.stack(list(crops))
        np.testing.assert_array_equal(crops.timestamps, stamps)  # at the frames' times
        assert crops.attrs["levelled_by"] == "head_pose" and crops.attrs["format"] == "png"
    assert stored.shape == (len(frames), 48, 48, 3) == (30, 48, 48, 3)
    landmarks = np.load(out / "landmarks" / "real face.npy")
    rolls = np.load(out / "head_pose" / "real face.npy")[:, 2]
    levelled = expected_crops(frames, landmarks, rolls, 48, 1.6)
    unlevelled = expected_crops(frames, landmarks, np.zeros(30), 48, 1.6)
    assert mean_difference(stored, levelled) < 1.0  # bilinear rounding only
    # The optional head_pose was read: the crops are turned by its roll (about -3.5 deg).
    assert mean_difference(stored, unlevelled) > 3 * max(mean_difference(stored, levelled), 0.5)
    check = json.loads((out / "_checks" / "mouth_crops" / "real face.json").read_text())
    assert check["problems"] == [] and face["failed_checks"] == {}
    with h5py.File(face["outputs"]["h5_dataset"], "r") as file:
        assert file["mouth_crops"].shape[0] == 30
        assert decode_image(np.asarray(file["mouth_crops"][0])).shape == (48, 48, 3)
        np.testing.assert_array_equal(file["timestamps"][:], stamps)
    assert not (out / "mouth_crops" / "test pattern.h5").exists()  # rejected upstream


class WithoutPose(dict):
    """The node boundary of a video without ``head_pose`` (what ``VideoIO`` gives then)."""

    def __init__(self, values: dict, staging: Path):
        super().__init__(values)
        self.staging = staging

    def optional(self, key: str):
        return self.get(key)

    def stage(self, key: str) -> Path:
        return self.staging / f"{key}.h5"


def test_without_the_optional_input_the_crops_are_not_levelled(run, tmp_path):
    from dpl_assets_tests.custom_crops_example import MouthCropsConfig, mouth_crops

    out, _, _ = run
    images = ImageStackRef(out / "images" / "real face.h5", "images")
    landmarks = np.load(out / "landmarks" / "real face.npy")
    io = WithoutPose({"images": images, "landmarks": landmarks}, tmp_path)
    staged = mouth_crops(io, MouthCropsConfig(size=32))["mouth_crops"]
    with ImageStack(staged.path, "mouth_crops") as crops, images.open() as stack:
        assert crops.attrs["levelled_by"] == "none"
        expected = expected_crops(list(stack), landmarks, np.zeros(30), 32, 1.6)
        assert mean_difference(np.stack(list(crops)), expected) < 1.0


def test_the_code_location_wires_the_optional_input(tmp_path, monkeypatch):
    monkeypatch.setenv(CUSTOM_NODES_ENV, f"{REF}, {CROPS_REF}")
    graph = build_definitions(tmp_path).resolve_asset_graph()
    parents = graph.get(dg.AssetKey("mouth_crops")).parent_keys
    assert parents == {dg.AssetKey(key) for key in ("images", "landmarks", "head_pose")}
    assert dg.AssetKey("mouth_crops") in graph.get(dg.AssetKey("h5_dataset")).parent_keys


# -- installed nodes: the entry-point group ----------------------------------------------------


def installed_package(site: Path, nodes: dict[str, str], name: str = "dpl-test-nodes") -> Path:
    """What installing a package that registers ``nodes`` leaves in site-packages for the
    entry points (its code is importable from the repo): ``site`` on the path installs it."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    entries = "".join(f"{node} = {target}\n" for node, target in nodes.items())
    (info / "entry_points.txt").write_text(f"[{NODE_ENTRY_POINTS}]\n{entries}")
    return site


def expected_level(wav: Path, floor_dbfs: float) -> dict[str, float]:
    """Peak, RMS in dBFS and seconds of the stored wav, read by libsndfile."""
    samples, rate = soundfile.read(wav, dtype="float64")
    rms = np.sqrt(np.mean(samples**2))
    level = 20 * np.log10(max(rms, 10 ** (floor_dbfs / 20)))
    return {"peak": np.abs(samples).max(), "rms_dbfs": level, "seconds": len(samples) / rate}


def assert_level(record: dict, wav: Path, floor_dbfs: float) -> None:
    expected = expected_level(wav, floor_dbfs)
    assert set(record) == set(expected)
    for key, value in expected.items():
        assert record[key] == pytest.approx(value, rel=1e-5), key
    assert -40 < record["rms_dbfs"] < 0 and 0 < record["peak"] <= 1  # a sine tone, not silence


AUDIO_GRAPH = [
    {"name": "VideoToWavNode", "params": {}},
    {"name": "ClipLevelNode", "params": {"floor_dbfs": -90}},
]


def test_dpl_run_loads_an_installed_node_by_its_plain_name(tmp_path, monkeypatch):
    site = installed_package(tmp_path / "site", {"ClipLevelNode": AUDIO_REF})
    media.make_talking_clip(tmp_path / "videos" / "talk.mp4", seconds=1.0)
    (tmp_path / "graph.json").write_text(json.dumps(AUDIO_GRAPH))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"
    path = [str(site), str(REPO), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    env.pop("DAGSTER_HOME", None)
    dpl = Path(sys.executable).with_name("dpl")
    completed = subprocess.run(
        [str(dpl), "run", "--graph", "graph.json", "--inputs", "inputs.json",
         "--output_dir", str(out)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    video = json.loads((out / "report.json").read_text())["videos"][0]
    assert video["status"] == "processed", video
    assert Path(video["outputs"]["clip_level"]) == out / "clip_level" / "talk.json"
    assert_level(
        json.loads((out / "clip_level" / "talk.json").read_text()), out / "wav" / "talk.wav", -90
    )
    # The code location knows it from the saved graph, by the same plain name.
    monkeypatch.syspath_prepend(str(site))
    graph = build_definitions(out).resolve_asset_graph()
    assert graph.get(dg.AssetKey("clip_level")).parent_keys == {dg.AssetKey("wav")}


def test_installed_names_resolve_after_built_in_ones_and_in_messages(tmp_path, monkeypatch):
    site = installed_package(
        tmp_path / "site",
        {"ClipLevelNode": AUDIO_REF, "VolumeNode": AUDIO_REF, "TwiceNode": AUDIO_REF,
         "BrokenNode": "no_such_package.nodes:Node"},
    )  # fmt: skip
    installed_package(site, {"TwiceNode": REF}, name="other-nodes")
    monkeypatch.syspath_prepend(str(site))
    assert plan_graph([{"name": "VolumeNode"}]).node_of["volume"] is NODES["VolumeNode"]
    plan = plan_graph(AUDIO_GRAPH)
    assert plan.custom_nodes == ["ClipLevelNode"] and plan.assets == ["wav", "clip_level"]
    assert plan.asset_config["clip_level"] == {"floor_dbfs": -90.0}
    with pytest.raises(GraphError, match=r"did you mean 'ClipLevelNode'\?") as caught:
        plan_graph([{"name": "ClipLevelNod"}])
    assert "installed nodes: BrokenNode, ClipLevelNode, TwiceNode, VolumeNode" in str(caught.value)
    with pytest.raises(GraphError) as caught:
        plan_graph([{"name": "Xyzzy"}])
    message = str(caught.value)
    assert "unknown node" in message and "did you mean" not in message
    assert f"{NODE_ENTRY_POINTS!r} entry-point group" in message
    with pytest.raises(GraphError, match="registered by several installed packages"):
        plan_graph([{"name": "TwiceNode"}])
    with pytest.raises(GraphError, match=r"'no_such_package\.nodes:Node' does not load"):
        plan_graph([{"name": "BrokenNode"}])


# -- the new-video sensor ----------------------------------------------------------------------


def test_the_sensor_runs_a_custom_node_on_a_new_video(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(
        str(installed_package(tmp_path / "site", {"ClipLevelNode": AUDIO_REF}))
    )
    videos = tmp_path / "videos"
    media.make_talking_clip(videos / "a.mp4", seconds=1.0)
    (tmp_path / "graph.json").write_text(json.dumps(AUDIO_GRAPH))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"
    code = cli.main(["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                     str(tmp_path / "inputs.json"), "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    monkeypatch.setenv("DPL_OUTPUT_DIR", str(out))
    monkeypatch.setenv("DPL_SENSOR_SETTLE_S", "0")
    instance = instance_for(out)
    first = tick(instance, None)
    assert first.run_requests == []  # `dpl run` did everything
    media.make_talking_clip(videos / "b.mp4", seconds=1.5)
    [request] = tick(instance, first.cursor).run_requests
    assert dg.AssetKey("clip_level") in (request.asset_selection or [])
    assert request.run_config["ops"]["clip_level"] == {"config": {"floor_dbfs": -90.0}}
    execute(request, out, instance)
    assert_level(
        json.loads((out / "clip_level" / "b.json").read_text()), out / "wav" / "b.wav", -90
    )
    latest = instance.get_latest_materialization_event(dg.AssetKey("clip_level"))
    assert latest is not None and latest.asset_materialization is not None
    assert latest.asset_materialization.partition == "b"
    # The node's summarize gave the step's totals on its output.
    run_id = instance.get_runs(limit=1)[0].run_id
    outputs = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
    totals = [
        event.dagster_event.step_output_data.metadata
        for event in outputs
        if event.dagster_event and event.dagster_event.step_key == "clip_level"
    ]
    assert totals and totals[0]["videos_measured"].value == 1
    level = json.loads((out / "clip_level" / "b.json").read_text())["rms_dbfs"]
    assert totals[0]["loudest_rms_dbfs"].value == pytest.approx(level)


# -- what is refused -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ("MediaOutputNode", "declared datatype 'talk_video' is StorageFormat.MEDIA"),
        ("SourceVideoNode", "output 'video' is StorageFormat.MEDIA"),
        ("FixedNode", "custom nodes cannot declare fixed"),
        ("TypoParamNode", "required_params ['floor'] are not fields of NodeConfig"),
        ("NoComputeNode", "needs a compute function"),
    ],
)
def test_bad_custom_nodes_are_refused_saying_what_to_fix(node, message):
    with pytest.raises(GraphError, match="graph node #0") as caught:
        plan_graph([{"name": f"dpl_assets_tests.custom_bad_nodes:{node}"}])
    assert message in str(caught.value)
    if "MEDIA" in message:  # what to write instead
        assert "StorageFormat.NPY, JSON, WAV, IMAGE_STACK or FILE" in str(caught.value)
    assert "talk_video" not in DATATYPES  # nothing of a refused node is registered
