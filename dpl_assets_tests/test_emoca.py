"""EMOCA/DECA encoders: official checkpoint layouts, safe loading, outputs, smoothing.

No official weights exist on this machine: the tests build the encoders with random
weights, save them in the official files' layouts (an EMOCA PyTorch Lightning 1.4
checkpoint and DECA's ``deca_model.tar``), load them back through ``load_emoca`` and compare
with a direct forward pass of the same modules.
"""

from __future__ import annotations

import os
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dpl_assets.face3d.emoca import COARSE_OUTPUTS, EmocaEncoder, smooth_parameters
from dpl_assets.face3d.resnet_torch import ResNet50Backbone
from dpl_assets.face3d.weights import (
    EmocaLoadError,
    EmocaWeightsNotFound,
    LightningPlaceholder,
    _expression_pose_from_config,
    load_emoca,
    safe_load_checkpoint,
)

SHAPES = {
    "shape": (100,),
    "tex": (50,),
    "exp": (50,),
    "pose": (6,),
    "cam": (3,),
    "light": (9, 3),
}
PL_CALLBACK_MODULE = "pytorch_lightning.callbacks.model_checkpoint"


# --------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------


def randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Non-trivial running statistics, so eval-mode BatchNorm is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
            module.num_batches_tracked.fill_(1000)


def split_code(code: torch.Tensor) -> dict[str, torch.Tensor]:
    """DECA's decompose_code, written out independently: 100/50/50/6/3/27, light 9x3."""
    return {
        "shape": code[:, :100],
        "tex": code[:, 100:150],
        "exp": code[:, 150:200],
        "pose": code[:, 200:206],
        "cam": code[:, 206:209],
        "light": code[:, 209:236].reshape(-1, 9, 3),
    }


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def emoca_model() -> EmocaEncoder:
    torch.manual_seed(0)
    model = EmocaEncoder()
    randomise_batchnorm(model, seed=2)
    return model.eval()


@pytest.fixture(scope="module")
def fake_lightning() -> Iterator[type]:
    """A class pickled by reference as PL's ``ModelCheckpoint`` (Lightning is not installed).

    pickle stores a class as ``module.qualname`` after checking that importing that name
    gives the same object, so the module path is registered for the time of the fixture.
    """
    cls = type("ModelCheckpoint", (), {"__module__": PL_CALLBACK_MODULE})
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", PL_CALLBACK_MODULE]
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[PL_CALLBACK_MODULE].ModelCheckpoint = cls  # type: ignore[attr-defined]
    yield cls
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def lightning_checkpoint(model: EmocaEncoder, callback_class: type) -> dict:
    """The layout of a PL 1.4 checkpoint of EMOCA's ``DecaModule`` (``self.deca = ExpDECA``).

    Real files also hold the detail encoder/decoder, FLAME buffers and more under
    ``deca.``; small stand-ins under those names show that they are ignored.
    """
    state_dict = OrderedDict((f"deca.{key}", value) for key, value in model.state_dict().items())
    state_dict["deca.E_detail.layers.2.weight"] = torch.zeros(128, 4)
    state_dict["deca.D_detail.conv1.weight"] = torch.zeros(4, 4)
    state_dict["deca.flame.shapedirs"] = torch.zeros(5, 3, 4)
    return {
        "epoch": 3,
        "global_step": 41_000,
        "pytorch-lightning_version": "1.4.9",
        "state_dict": state_dict,
        # PL 1.4 keys callback states by the callback class itself.
        "callbacks": {
            callback_class: {
                "monitor": "val_loss/dataloader_idx_0",
                "best_model_score": torch.tensor(9.44489288),
                "best_model_path": "/x/detail/checkpoints/deca-epoch=03.ckpt",
                "current_score": torch.tensor(9.5),
                "dirpath": "/x/detail/checkpoints",
                "kth_value": np.float64(9.6),
            }
        },
        "optimizer_states": [
            {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
        ],
        "lr_schedulers": [],
    }


@pytest.fixture(scope="module")
def emoca_folder(tmp_path_factory, emoca_model, fake_lightning) -> Path:
    """An EMOCA model folder as unzipped from EMOCA_v2_lr_mse_20.zip (checkpoints only)."""
    folder = tmp_path_factory.mktemp("models") / "EMOCA_v2_lr_mse_20"
    checkpoints = folder / "detail" / "checkpoints"
    best = checkpoints / "deca-epoch=03-val_loss" / "dataloader_idx_0=9.44489288.ckpt"
    best.parent.mkdir(parents=True)
    torch.save(lightning_checkpoint(emoca_model, fake_lightning), best)
    # A worse checkpoint and last.ckpt: EMOCA's "best" rule must skip both. They are not
    # checkpoints at all, so loading either would fail.
    worse = checkpoints / "deca-epoch=01-val_loss" / "dataloader_idx_0=12.50000000.ckpt"
    worse.parent.mkdir(parents=True)
    worse.write_bytes(b"not a checkpoint")
    (checkpoints / "last.ckpt").write_bytes(b"not a checkpoint")
    return folder


@pytest.fixture(scope="module")
def deca_state(emoca_model) -> dict[str, torch.Tensor]:
    """``E_flame``'s state dict under DECA's own names (``encoder.*``, ``layers.*``)."""
    return {
        key.removeprefix("E_flame."): value
        for key, value in emoca_model.state_dict().items()
        if key.startswith("E_flame.")
    }


# --------------------------------------------------------------------------------------
# ResNet-50 layout
# --------------------------------------------------------------------------------------


def torchvision_resnet50_layout() -> dict[str, tuple[int, ...]]:
    """torchvision's resnet50 state dict without ``fc``, written from the architecture."""
    layout: dict[str, tuple[int, ...]] = {}

    def batchnorm(name: str, channels: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.{suffix}"] = (channels,)
        layout[f"{name}.num_batches_tracked"] = ()

    layout["conv1.weight"] = (64, 3, 7, 7)
    batchnorm("bn1", 64)
    inplanes = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            layout[f"{prefix}.conv1.weight"] = (width, inplanes, 1, 1)
            batchnorm(f"{prefix}.bn1", width)
            layout[f"{prefix}.conv2.weight"] = (width, width, 3, 3)
            batchnorm(f"{prefix}.bn2", width)
            layout[f"{prefix}.conv3.weight"] = (4 * width, width, 1, 1)
            batchnorm(f"{prefix}.bn3", 4 * width)
            if block == 0:
                layout[f"{prefix}.downsample.0.weight"] = (4 * width, inplanes, 1, 1)
                batchnorm(f"{prefix}.downsample.1", 4 * width)
            inplanes = 4 * width
    return layout


def test_resnet50_matches_torchvision_layout():
    backbone = ResNet50Backbone()
    state = backbone.state_dict()
    expected = torchvision_resnet50_layout()
    assert list(state) == list(expected)
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    # torchvision resnet50: 25,557,032 parameters, of which fc holds 2048 * 1000 + 1000.
    assert sum(p.numel() for p in backbone.parameters()) == 25_557_032 - 2_049_000
    assert tuple(state["layer3.0.downsample.0.weight"].shape) == (1024, 512, 1, 1)
    assert tuple(state["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    # "v1.5": a downsampling block strides in its 3x3 convolution, as torchvision and DECA.
    assert backbone.layer2[0].conv1.stride == (1, 1)
    assert backbone.layer2[0].conv2.stride == (2, 2)
    assert backbone.layer2[0].downsample[0].stride == (2, 2)


def test_resnet50_features_are_the_global_mean_of_layer4(images):
    backbone = ResNet50Backbone().eval()
    seen = {}
    backbone.layer4.register_forward_hook(lambda _m, _i, out: seen.update(map=out))
    with torch.no_grad():
        features = backbone(images[:1])
    assert seen["map"].shape == (1, 2048, 7, 7)
    # DECA pools with AvgPool2d(7, stride=1): the same numbers at 224x224.
    pooled = nn.AvgPool2d(7, stride=1)(seen["map"]).flatten(1)
    torch.testing.assert_close(features, pooled)


def test_encoder_module_names_follow_the_official_encoders():
    model = EmocaEncoder()
    state = model.state_dict()
    assert tuple(state["E_flame.layers.0.weight"].shape) == (1024, 2048)
    assert tuple(state["E_flame.layers.2.weight"].shape) == (COARSE_OUTPUTS, 1024)
    assert tuple(state["E_expression.layers.2.weight"].shape) == (50, 1024)
    assert "E_flame.encoder.layer1.0.downsample.0.weight" in state
    assert "E_expression.encoder.layer4.2.bn3.running_var" in state
    assert not EmocaEncoder(expression_outputs=None).has_expression_encoder


# --------------------------------------------------------------------------------------
# Loading official layouts
# --------------------------------------------------------------------------------------


def test_emoca_lightning_checkpoint_loads_and_matches_direct_forward(
    emoca_folder, emoca_model, images
):
    checkpoint = next((emoca_folder / "detail" / "checkpoints").rglob("*9.44489288.ckpt"))
    loaded = load_emoca(checkpoint, device="cpu")
    assert loaded.has_expression_encoder and not loaded.training
    for key, value in emoca_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    params = loaded.encode(images, batch_size=2)
    assert {name: value.shape[1:] for name, value in params.items()} == SHAPES
    assert all(value.shape[0] == 3 and value.dtype == np.float32 for value in params.values())

    with torch.no_grad():
        coarse = split_code(emoca_model.E_flame(images))
        expression = emoca_model.E_expression(images)
    expected = {**coarse, "exp": expression}  # EMOCA: exp from the expression encoder
    for name, value in expected.items():
        np.testing.assert_allclose(params[name], value.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(params["exp"], coarse["exp"].numpy(), atol=1e-3)


def test_emoca_model_folder_picks_the_best_checkpoint(emoca_folder, images):
    loaded = load_emoca(emoca_folder)
    assert loaded.has_expression_encoder
    params = loaded.encode(images[:1])
    assert params["light"].shape == (1, 9, 3)


def test_deca_model_tar_loads_coarse_encoder_only(tmp_path, deca_state, emoca_model, images):
    path = tmp_path / "deca_model.tar"
    checkpoint = {
        "E_flame": deca_state,
        # Stand-ins for the detail networks and training state the real file carries.
        "E_detail": {"layers.2.weight": torch.zeros(128, 4)},
        "D_detail": {"layers.0.weight": torch.zeros(4, 4)},
        "opt": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "global_step": 5,
    }
    # The pre-zip serialisation of older torch releases, as a 2020 file may use.
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    loaded = load_emoca(path)
    assert not loaded.has_expression_encoder
    params = loaded.encode(images[:2])
    with torch.no_grad():
        expected = split_code(emoca_model.E_flame(images[:2]))
    for name, value in expected.items():
        np.testing.assert_allclose(params[name], value.numpy(), rtol=1e-5, atol=1e-5)


def test_wrong_layout_names_missing_unexpected_and_mismatched_keys(tmp_path, deca_state):
    broken = dict(deca_state)
    del broken["layers.2.weight"], broken["encoder.layer4.2.bn3.weight"]
    broken["encoder.fc.weight"] = torch.zeros(1000, 2048)
    broken["layers.2.bias"] = torch.zeros(200)
    path = tmp_path / "deca_model.tar"
    torch.save({"E_flame": broken}, path)
    with pytest.raises(EmocaLoadError) as caught:
        load_emoca(path)
    message = str(caught.value)
    assert "missing keys: E_flame.encoder.layer4.2.bn3.weight, E_flame.layers.2.weight (2)" in (
        message
    )
    assert "unexpected keys: E_flame.encoder.fc.weight (1)" in message
    assert "E_flame.layers.2.bias: file (200,) vs model (236,)" in message


def test_missing_keys_are_listed_first_few_with_a_count(tmp_path):
    path = tmp_path / "partial.ckpt"
    torch.save(
        {"state_dict": {"deca.E_flame.encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}}, path
    )
    with pytest.raises(EmocaLoadError) as caught:
        load_emoca(path)
    message = str(caught.value)
    # 322 E_flame entries, 53 BatchNorm batch counters (optional), conv1 given: 268 missing.
    assert "missing keys: deca.E_flame.encoder.bn1.weight, deca.E_flame.encoder.bn1.bias" in message
    assert "... (268 in total)" in message
    assert "deca.E_flame.encoder.conv1.weight" not in message


def test_unknown_top_level_layout_is_named(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}, path)
    with pytest.raises(EmocaLoadError, match=r"top-level keys are 'conv1.weight', 'fc.bias'"):
        load_emoca(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "EMOCA_v2_lr_mse_20" / "nothing.ckpt"
    with pytest.raises(EmocaWeightsNotFound) as caught:
        load_emoca(path)
    assert str(caught.value).startswith(f"EMOCA/DECA weights '{path}' does not exist")
    assert caught.value.filename == str(path)
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, EmocaLoadError)
    empty = tmp_path / "empty_model_folder"
    empty.mkdir()
    with pytest.raises(EmocaWeightsNotFound, match="holds no EMOCA"):
        load_emoca(empty)


# --------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------


class RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_code_executing_checkpoint_is_refused(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {}, "callbacks": {"x": RunsCode(marker)}}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(EmocaLoadError, match=r"system"):
        load_emoca(path)
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False])
def test_lightning_metadata_becomes_inert_placeholders(tmp_path, fake_lightning, zip_format):
    path = tmp_path / "meta.ckpt"
    weights = torch.arange(4.0)
    saved = {
        "state_dict": {"deca.E_flame.layers.0.bias": weights},
        "callbacks": {fake_lightning: {"best_model_score": torch.tensor(1.5), "k": np.float64(2)}},
    }
    torch.save(saved, path, _use_new_zipfile_serialization=zip_format)
    loaded = safe_load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["deca.E_flame.layers.0.bias"], weights)
    ((key, state),) = loaded["callbacks"].items()
    assert issubclass(key, LightningPlaceholder)
    assert key.qualified_name == f"{PL_CALLBACK_MODULE}.ModelCheckpoint"
    assert state["k"] == 2.0 and float(state["best_model_score"]) == 1.5


# --------------------------------------------------------------------------------------
# Expression-encoder variants and inputs
# --------------------------------------------------------------------------------------


def test_expression_jaw_pose_variant_takes_jaw_from_expression_encoder(images):
    torch.manual_seed(3)
    model = EmocaEncoder(expression_outputs=53, expression_pose="jaw").eval()
    with torch.no_grad():
        params = model(images[:1])
        coarse = split_code(model.E_flame(images[:1]))
        expression = model.E_expression(images[:1])
    torch.testing.assert_close(params["exp"], expression[:, :50])
    torch.testing.assert_close(params["pose"][:, :3], coarse["pose"][:, :3])
    torch.testing.assert_close(params["pose"][:, 3:], expression[:, 50:])
    with pytest.raises(ValueError, match="needs an expression encoder with 56 outputs"):
        EmocaEncoder(expression_outputs=53, expression_pose="both")


def test_expression_pose_read_from_the_model_folders_cfg_yaml(tmp_path):
    checkpoint = tmp_path / "m" / "detail" / "checkpoints" / "deca-epoch=1-v" / "d=1.0.ckpt"
    checkpoint.parent.mkdir(parents=True)
    assert _expression_pose_from_config(checkpoint) is None
    (tmp_path / "m" / "cfg.yaml").write_text(
        "detail:\n  model:\n    exp_deca_global_pose: false\n    exp_deca_jaw_pose: true\n"
    )
    assert _expression_pose_from_config(checkpoint) == "jaw"


def test_encode_checks_inputs_and_handles_empty_batches(emoca_model):
    with pytest.raises(ValueError, match=r"\(N, 3, 224, 224\)"):
        emoca_model.encode(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        emoca_model.encode(torch.rand(1, 3, 224, 224) * 255)
    empty = emoca_model.encode(np.zeros((0, 3, 224, 224), np.float32))
    assert {name: value.shape for name, value in empty.items()} == {
        name: (0, *shape) for name, shape in SHAPES.items()
    }


# --------------------------------------------------------------------------------------
# Smoothing
# --------------------------------------------------------------------------------------


def test_smoothing_keeps_shapes_and_reduces_noise_on_a_sine():
    rng = np.random.default_rng(0)
    frames = 200
    t = np.arange(frames)[:, None]
    clean = np.sin(2 * np.pi * t / 50 + np.linspace(0, np.pi, 50)[None]).astype(np.float32)
    params = {
        name: rng.normal(size=(frames, *shape)).astype(np.float32) for name, shape in SHAPES.items()
    }
    params["exp"] = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
    smoothed = smooth_parameters(params)
    assert {name: (v.shape, v.dtype) for name, v in smoothed.items()} == {
        name: (v.shape, v.dtype) for name, v in params.items()
    }
    raw_error = np.sqrt(np.mean((params["exp"] - clean) ** 2))
    smooth_error = np.sqrt(np.mean((smoothed["exp"] - clean) ** 2))
    # White noise through a 9-tap order-4 filter keeps ~0.65 of its RMS.
    assert smooth_error < 0.75 * raw_error
    # The sine itself passes (period 50 frames >> the 9-frame window).
    np.testing.assert_allclose(smooth_parameters({"exp": clean})["exp"], clean, atol=1e-3)


def test_smoothing_short_clips_and_bad_arguments():
    three = {"pose": np.arange(18, dtype=np.float32).reshape(3, 6) ** 2}
    kept = smooth_parameters(three)  # 3 frames: no more than order + 1, unchanged
    np.testing.assert_array_equal(kept["pose"], three["pose"])
    assert kept["pose"] is not three["pose"]
    six = {"cam": np.random.default_rng(1).normal(size=(6, 3))}
    np.testing.assert_array_equal(smooth_parameters(six)["cam"], six["cam"])  # 5 = order + 1
    eight = {"cam": np.random.default_rng(2).normal(size=(8, 3))}
    smoothed = smooth_parameters(eight)["cam"]  # the window shrinks to 7 frames
    assert smoothed.shape == (8, 3) and not np.allclose(smoothed, eight["cam"])
    with pytest.raises(ValueError, match="odd"):
        smooth_parameters(six, window=8)
    with pytest.raises(ValueError, match="order"):
        smooth_parameters(six, window=5, order=5)
    with pytest.raises(ValueError, match="NaN"):
        smooth_parameters({"exp": np.full((10, 50), np.nan)})


def test_parallel_expression_head_variant_is_named_as_unsupported(tmp_path):
    path = tmp_path / "parallel.ckpt"
    state = {"deca.E_expression.resnet.encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}
    torch.save({"state_dict": state}, path)
    with pytest.raises(EmocaLoadError, match="deca_parallel"):
        load_emoca(path)
