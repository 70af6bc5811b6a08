"""Assets generated from node declarations: every per-video built-in node is one; a step
fails before any video when a model file param is unset; a node's models are made per
worker thread only when used, on a device resolved only when asked, and closed at the end."""

import gc
import threading
import weakref
from typing import ClassVar

import dagster as dg
import numpy as np
import pytest

from dpl_assets.assets import DATASET_LEVEL_ASSETS, NODE_SPECS
from dpl_assets.assets.config import NodeConfig
from dpl_assets.assets.generated import assets_of
from dpl_assets.datatypes import FRAME, ArrayContract, Datatype, StorageFormat, register_datatype
from dpl_assets.outcomes import Saved
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets.resources import TorchDevice
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactIOManager, ArtifactStorage

register_datatype(
    Datatype(
        "test_rows",
        StorageFormat.NPY,
        (".npy",),
        "rows for the generated-asset tests (N,) float32",
        ArrayContract(("N",), "float32"),
        per=FRAME,
    )
)


def test_every_per_video_built_in_node_is_generated_from_its_declaration():
    hand_written = [
        spec.name
        for spec in NODE_SPECS
        if spec.asset is not None and not set(spec.outputs) <= DATASET_LEVEL_ASSETS
    ]
    assert hand_written == []
    assert all(spec.compute is not None for spec in NODE_SPECS if spec.asset is None)


class ModelConfig(NodeConfig):
    model_path: str = ""
    device: str = "cpu"


class Model:
    """A stand-in model that records where it was made and whether it was closed."""

    made: ClassVar[list["Model"]] = []

    def __init__(self, device: str | None):
        self.device, self.thread, self.closed = device, threading.get_ident(), False
        Model.made.append(self)

    def close(self) -> None:
        self.closed = True


def run_node(tmp_path, spec: NodeSpec, config: dict, videos=("a", "b", "c")):
    [asset] = assets_of([spec])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, list(videos))
    tmp_path.mkdir(parents=True, exist_ok=True)
    storage = ArtifactStorage(output_dir=str(tmp_path))
    (tmp_path / "catalog.json").write_text("{}")
    return dg.materialize(
        [asset], instance=instance, raise_on_error=False,
        resources={"storage": storage, "artifacts": ArtifactIOManager(storage=storage),
                   "torch_device": TorchDevice(device="cpu")},
        run_config={"ops": {"test_rows": {"config": config}}},
        tags={"dagster/asset_partition_range_start": videos[0],
              "dagster/asset_partition_range_end": videos[-1]},
    )  # fmt: skip


def spec_with(compute, model=None, required=()) -> NodeSpec:
    return NodeSpec(
        name="TestRowsNode", outputs=("test_rows",), config=ModelConfig, compute=compute,
        model=model, required_params=required,
    )  # fmt: skip


def test_a_step_without_its_model_file_fails_before_any_video(tmp_path):
    calls = []

    def compute(io, config):
        calls.append(io.video_id)
        return {"test_rows": np.zeros(3, np.float32)}

    spec = spec_with(compute, required=("model_path",))
    result = run_node(tmp_path, spec, {"model_path": ""})
    assert not result.success and calls == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "TestRowsNode needs model_path" in message
    assert run_node(tmp_path / "ok", spec, {"model_path": "/models/x"}).success
    assert sorted(calls) == ["a", "b", "c"]


def test_models_are_made_when_used_on_the_asked_device_and_closed_at_the_end(tmp_path):
    Model.made.clear()

    def on_device(config, device):
        return Model(device())

    def compute(io, config):
        assert io.model is io.model  # one per thread, made once
        return {"test_rows": np.full(2, len(io.model.device), np.float32)}

    assert run_node(tmp_path, spec_with(compute, on_device), {"device": "cpu"}).success
    assert [m.device for m in Model.made] == ["cpu"] and all(m.closed for m in Model.made)
    np.testing.assert_array_equal(np.load(tmp_path / "test_rows" / "b.npy"), [3.0, 3.0])

    # A step whose videos are all done makes no model.
    assert run_node(tmp_path, spec_with(compute, on_device), {"device": "cpu"}).success
    assert len(Model.made) == 1


def test_a_model_that_never_asks_for_the_device_does_not_resolve_it(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(TorchDevice, "for_node", lambda self, node: asked.append(node) or "cpu")

    def cpu_only(config, device):
        return Model(None)

    def compute(io, config):
        assert io.model is not None  # made, without the device
        return {"test_rows": np.zeros(1, np.float32)}

    assert run_node(tmp_path, spec_with(compute, cpu_only), {"device": "cpu"}).success
    assert asked == []


@pytest.mark.parametrize("videos", [("a",), ("a", "b", "c")])
def test_compute_many_batches_the_step_and_a_left_out_video_is_computed_alone(tmp_path, videos):
    batches: list[list[str]] = []
    alone: list[str] = []

    def many(todo, config):
        batches.append(sorted(todo))
        return {v: {"test_rows": np.ones(1, np.float32)} for v in todo if v != "b"}

    def one(io, config):
        alone.append(io.video_id)
        return {"test_rows": np.zeros(1, np.float32)}

    spec = NodeSpec(
        name="TestRowsNode", outputs=("test_rows",), config=ModelConfig, compute=one,
        compute_many=many,
    )  # fmt: skip
    assert run_node(tmp_path, spec, {}, videos).success
    if len(videos) == 1:  # one video: no batch
        assert batches == [] and alone == ["a"]
    else:
        assert batches == [["a", "b", "c"]] and alone == ["b"]
        assert np.load(tmp_path / "test_rows" / "a.npy")[0] == 1.0
        assert np.load(tmp_path / "test_rows" / "b.npy")[0] == 0.0


def test_a_node_reading_an_input_it_does_not_declare_fails_saying_so(tmp_path):
    def compute(io, config):
        io["landmarks"]  # not among its inputs
        return {"test_rows": np.zeros(1, np.float32)}

    result = run_node(tmp_path, spec_with(compute), {}, ("a",))
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "TestRowsNode reads 'landmarks' but does not declare it" in message
    assert not (tmp_path / "test_rows" / "a.npy").exists()


def test_a_step_lets_go_of_its_arrays_once_they_are_saved(tmp_path):
    # Dagster's in-process runs keep each step's return value until the run ends: the step
    # must return markers, or a long clip's arrays stay in memory through every later step.
    computed: list[weakref.ref] = []

    def compute(io, config):
        rows = np.arange(5, dtype=np.float32) + len(computed)
        computed.append(weakref.ref(rows))
        return {"test_rows": rows}

    result = run_node(tmp_path, spec_with(compute), {})
    assert result.success
    gc.collect()
    assert len(computed) == 3 and all(ref() is None for ref in computed)
    returned = result.output_for_node("test_rows")
    assert set(returned) == {"a", "b", "c"}
    assert all(isinstance(value, Saved) for value in returned.values())
    saved = sorted(float(np.load(tmp_path / "test_rows" / f"{v}.npy")[0]) for v in "abc")
    assert saved == [0.0, 1.0, 2.0]
