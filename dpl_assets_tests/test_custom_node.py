"""A node from outside the package (``custom_node_example.py``), run the way a user runs it:
by ``dpl run`` (partitions, storage, output check, report, packing of its output) and by
``dagster asset materialize`` on the same output dir."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pytest

from dpl_assets import cli
from dpl_assets.definitions import CUSTOM_NODES_ENV, build_definitions
from dpl_assets.graph import GraphError, plan_graph
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_vision_pipeline import moving_astronaut, write_clip

REF = "dpl_assets_tests.custom_node_example:MouthOpeningNode"
REPO = Path(__file__).resolve().parents[1]
GRAPH = [
    {"name": "VideoToImagesNode", "params": {"fps": 25}},
    {"name": "FaceAlignmentNode", "params": {}},
    {"name": REF, "params": {"scale": 2.0}},
    {"name": "H5DatasetNode", "params": {"datatypes": ["images", "landmarks", "mouth_opening"]}},
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
    assert REF in [node["name"] for node in json.loads((out / "catalog.json").read_text())["graph"]]


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
        ("dpl_assets_tests.custom_node_example:Missing", "is nothing, not a NodeSpec"),
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
