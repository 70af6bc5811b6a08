"""The node specs agree with the Dagster assets they name, and what is derived from them
(the graph's node table, the offline_default job, the required inputs) is right."""

import dagster as dg
import pytest

from dpl_assets import defs
from dpl_assets.assets import DATASET_LEVEL_ASSETS, NODE_SPECS
from dpl_assets.assets.dependencies import required_inputs
from dpl_assets.assets.generated import spec_asset
from dpl_assets.datatypes import DATATYPES
from dpl_assets.graph import NODES, plan_graph

GRAPH = defs.resolve_asset_graph()


@pytest.mark.parametrize("spec", NODE_SPECS, ids=lambda spec: spec.name)
def test_each_spec_matches_its_asset(spec):
    asset = spec_asset(spec)
    keys = {key.path[-1] for key in asset.keys}
    assert set(spec.outputs) <= keys, "outputs are the asset's keys"
    assert all(key in DATATYPES for key in (*spec.inputs, *spec.optional_inputs))
    per_video = [key for key in spec.outputs if key not in DATASET_LEVEL_ASSETS]
    assert all(key in DATATYPES for key in per_video), "per-video outputs are datatypes"
    parents = {parent.path[-1] for parent in GRAPH.get(dg.AssetKey(spec.main)).parent_keys}
    assert set(spec.inputs) - set(spec.optional_inputs) <= parents, "inputs are parents"
    assert set(spec.optional_inputs) <= parents | {"raw_bboxes"}  # given boxes: read if there
    assert (asset.op.pool == "gpu") == spec.needs_gpu
    assert set(spec.param_names()) <= set(spec.config_class.model_fields)


def test_offline_default_leaves_out_what_needs_model_files_and_dataset_steps():
    selected = {
        key.path[-1]
        for key in defs.resolve_job_def("offline_default").asset_layer.executable_asset_keys
    }
    weights = {key for spec in NODE_SPECS if spec.needs_weights for key in spec.outputs}
    assert weights == {"wav2vec", "shape", "tex", "exp", "pose", "cam", "light", "verts",
                       "landmarks3d", "render_uv", "render_normal", "render_mask"}  # fmt: skip
    assert not selected & (weights | DATASET_LEVEL_ASSETS)
    assert not selected & {"a2en", "source_sequence", "vid2vid_audio", "vid2vid_dataset"}
    assert {"wav", "volume", "images", "landmarks", "crops", "h5_dataset", "preview"} <= selected


def test_required_inputs_follow_the_node_and_its_config():
    plan = plan_graph(
        [
            {"name": "TransformRawBboxesNode", "params": {}},
            {"name": "EmocaFromImagesNode", "params": {}},
            {"name": "H5DatasetNode", "params": {"datatypes": ["crops", "volume"]}},
            {"name": "PreviewNode", "params": {}},
            {"name": "DatasetPackNode", "params": {"source": "vid2vid_audio"}},
        ]
    )

    def needs(asset):
        return required_inputs(plan.node_of[asset], plan.full_config[asset])

    assert needs("bboxes") == ["raw_bboxes"]
    assert needs("shape") == needs("light") == ["images", "bboxes"]
    assert needs("h5_dataset") == ["crops", "volume"]
    assert needs("preview") == ["images"]
    assert needs("dataset_pack") == ["vid2vid_audio"]
    assert required_inputs(NODES["EmocaNode"], {}) == ["crops"]


def test_wav2vec_node_also_runs_volume_with_its_own_config():
    plan = plan_graph([{"name": "Wav2vecNode", "params": {"batch_size": 2, "recompute": True}}])
    assert plan.assets == ["wav2vec", "volume"]
    assert plan.asset_config["volume"] == {"recompute": True}
    assert plan.node_of["volume"].name == "VolumeNode"


def test_packers_run_after_what_the_graph_asks_them_to_pack(tmp_path):
    """A packer depends on the datatypes its ``datatypes`` param names, not only on its
    defaults: in `dpl run`'s definitions and in a code location on the saved graph."""
    from dpl_assets.catalog import Catalog
    from dpl_assets.definitions import build_definitions, plan_packed

    graph = [
        {"name": "VideoToImagesNode", "params": {}},
        {"name": "FaceAlignmentNode", "params": {}},
        {"name": "HeadPoseNode", "params": {}},
        {"name": "Vid2vidDatasetNode", "params": {"datatypes": ["images", "head_pose"]}},
    ]
    default_parents = GRAPH.get(dg.AssetKey("vid2vid_dataset")).parent_keys
    assert dg.AssetKey("head_pose") not in default_parents  # not among its defaults

    for defs_ in (
        build_definitions(tmp_path, packed=plan_packed(plan_graph(graph))),
        (Catalog(tmp_path).save_graph(graph), build_definitions(tmp_path))[1],
    ):
        parents = defs_.resolve_asset_graph().get(dg.AssetKey("vid2vid_dataset")).parent_keys
        assert {dg.AssetKey("head_pose"), dg.AssetKey("images")} <= parents


def test_every_misspelt_node_name_of_a_graph_is_reported_at_once():
    from dpl_assets.graph import GraphError

    with pytest.raises(GraphError) as raised:
        plan_graph([{"name": "VideoToWavNod"}, {"name": "VolumeNode"}, {"name": "FaceAlignNode"}])
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("graph node #0 (VideoToWavNod): unknown node")
    assert "did you mean 'VideoToWavNode'" in lines[0]
    assert lines[1].startswith("graph node #2 (FaceAlignNode): unknown node")
    assert len(lines) == 2
