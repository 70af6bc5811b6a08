"""The plain-torch wav2vec2 (``wav2vec_native``) against transformers' own models: the same
hidden states and quantized features bit for bit, the same input normalization, the cases
it leaves to transformers, and a process that featurizes without importing transformers."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
)

from dpl_assets.nodes import wav2vec_native
from dpl_assets.nodes.wav2vec import ModelLoadError, Wav2vecExtractor
from dpl_assets_tests.fresh_python import script_output
from dpl_assets_tests.test_wav2vec import speechlike
from dpl_assets_tests.tiny_wav2vec import build_tiny_wav2vec

RATE = 16_000

# Each a way checkpoints differ: the base layout (group norm, post-norm encoder, even
# positional kernel, no conv bias); the "lv60" one (layer norm, pre-norm encoder, conv
# bias, odd kernel, 4 groups, ReLU in the feed-forward).
VARIANTS = {
    "base": {},
    "lv60": {
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "conv_bias": True,
        "num_conv_pos_embeddings": 15,
        "num_conv_pos_embedding_groups": 4,
        "hidden_act": "relu",
    },
}


def tiny_config(**changes) -> Wav2Vec2Config:
    settings = {
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "conv_dim": (16,) * 7,
        "proj_codevector_dim": 24,
        "codevector_dim": 24,
        "num_codevectors_per_group": 8,
        "num_codevector_groups": 2,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
    }
    return Wav2Vec2Config(**{**settings, **changes})


def save_pretraining(folder: Path, config: Wav2Vec2Config, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    Wav2Vec2ForPreTraining(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=RATE).save_pretrained(folder)
    return folder


def normalized(folder: Path, audio: np.ndarray) -> torch.Tensor:
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    values = extractor(audio, sampling_rate=RATE, return_tensors="np").input_values
    return torch.from_numpy(np.asarray(values, np.float32))


def native_model(folder: Path, quantizer: bool) -> wav2vec_native.Wav2Vec2Native:
    config = wav2vec_native.native_config(folder)
    assert config is not None
    return wav2vec_native.load_native(config, quantizer)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_hidden_state_equals_transformers_bit_for_bit(variant, tmp_path):
    folder = save_pretraining(tmp_path / variant, tiny_config(**VARIANTS[variant]))
    inputs = normalized(folder, speechlike(2.0, seed=4))[:, :31_000]  # not a whole hop
    reference = Wav2Vec2Model.from_pretrained(folder).eval()  # from the pre-training file
    with torch.inference_mode():
        expected = reference(inputs, output_hidden_states=True).hidden_states
        ours = native_model(folder, quantizer=False).hidden_states(inputs)
        first_two = native_model(folder, quantizer=False).hidden_states(inputs, last=1)
    assert len(ours) == len(expected) == 4 and len(first_two) == 2
    for k, (mine, theirs) in enumerate(zip(ours, expected, strict=True)):
        assert mine.shape == theirs.shape == (1, 96, 32), k
        assert torch.equal(mine, theirs), f"hidden state {k}"
    assert all(torch.equal(a, b) for a, b in zip(first_two, ours, strict=False))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_quantized_features_equal_transformers_bit_for_bit(variant, tmp_path):
    folder = save_pretraining(tmp_path / variant, tiny_config(**VARIANTS[variant]), seed=1)
    inputs = normalized(folder, speechlike(1.5, seed=5))
    reference = Wav2Vec2ForPreTraining.from_pretrained(folder).eval()
    with torch.inference_mode():
        expected = reference(inputs).projected_quantized_states
        ours = native_model(folder, quantizer=True).quantized(inputs)
    assert ours.shape == expected.shape == (1, 74, 24)
    assert torch.equal(ours, expected)
    assert len(torch.unique(ours.reshape(-1, 24), dim=0)) > 4  # several codevectors chosen


def test_model_only_files_and_the_old_weight_norm_names_load_the_same(tmp_path):
    """A ``Wav2Vec2Model`` checkpoint (no ``wav2vec2.`` prefix), with the positional
    convolution's weight norm saved as ``weight_g``/``weight_v`` (older files), gives
    the pre-training file's hidden states."""
    pretraining = save_pretraining(tmp_path / "pre", tiny_config(), seed=2)
    state = load_file(str(pretraining / "model.safetensors"))
    renamed = {".parametrizations.weight.original0": ".weight_g"}
    renamed[".parametrizations.weight.original1"] = ".weight_v"
    model_only = {}
    for key, value in state.items():
        if key.startswith("wav2vec2."):
            key = key.removeprefix("wav2vec2.")
            for new, old in renamed.items():
                key = key.replace(new, old)
            model_only[key] = value.contiguous()
    assert "encoder.pos_conv_embed.conv.weight_g" in model_only
    folder = tmp_path / "model_only"
    folder.mkdir()
    save_file(model_only, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((pretraining / "config.json").read_text())
    inputs = normalized(pretraining, speechlike(1.0, seed=6))
    with torch.inference_mode():
        expected = native_model(pretraining, quantizer=False).hidden_states(inputs)
        ours = native_model(folder, quantizer=False).hidden_states(inputs)
    assert all(torch.equal(a, b) for a, b in zip(ours, expected, strict=True))
    with pytest.raises(wav2vec_native.UnsupportedWeights, match=r"quantizer\.codevectors"):
        native_model(folder, quantizer=True)  # no quantizer in a Wav2Vec2Model file


@pytest.mark.parametrize("setting", [True, False, None])
def test_input_normalization_is_the_feature_extractors(setting, tmp_path):
    audio = speechlike(1.0, seed=7) * 3 + 0.25
    if setting is None:  # no preprocessor_config.json: normalized, as transformers' default
        reference = Wav2Vec2FeatureExtractor(do_normalize=True)
    else:
        reference = Wav2Vec2FeatureExtractor(do_normalize=setting)
        reference.save_pretrained(tmp_path)
    expected = reference(audio, sampling_rate=RATE, return_tensors="np").input_values[0]
    ours = wav2vec_native.normalize_input(audio, wav2vec_native.normalizes_input(tmp_path))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, np.asarray(expected, np.float32))
    assert abs(float(ours.mean())) < 1e-4 if setting is not False else ours.mean() > 0.2


def test_the_extractor_gives_transformers_features_without_it(tmp_path):
    folder = build_tiny_wav2vec(tmp_path / "tiny")
    audio = speechlike(25.0, seed=8)  # long: windows batched and stitched
    for features in ("quantized", "hidden:-1", "hidden:1"):
        native = Wav2vecExtractor(str(folder), features=features)
        through = Wav2vecExtractor(str(folder), features=features, backend="transformers")
        assert native.native is not None and through.native is None
        np.testing.assert_array_equal(native.extract(audio), through.extract(audio))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"add_adapter": True}, "an adapter"),
        ({"feat_extract_activation": "gelu_new"}, "tanh GELU"),
        ({"model_type": "hubert"}, "another model"),
        ({"dtype": "float16"}, "transformers 5 would load the float32 weights as float16"),
        ({"dtype": None, "torch_dtype": "bfloat16"}, "the older name of the setting"),
        ({"is_causal": True}, "causal attention, from the config"),
        ({"attn_implementation": "eager"}, "eager attention rounds otherwise"),
        ({"_attn_implementation": {"": "flex_attention"}}, "the per-module form"),
        ({"tie_last_hidden_states": True}, "the last state after the final norm"),
        ({"transformers_weights": "other.safetensors"}, "another weights file"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized on load"),
        ({"per_layer_config": {}}, "per-layer settings"),
        ({"num_attention_heads": 5}, "32 not a multiple: transformers refuses"),
        ({"num_feat_extract_layers": 6}, "disagrees with conv_dim"),
        ({"conv_kernel": [10, 3, 3, 3, 3, 2]}, "a kernel missing"),
        ({"num_hidden_layers": 0}, "no transformer layer"),
        ({"hidden_act": ["gelu"]}, "not an activation name"),
    ],
)
def test_other_configs_are_left_to_transformers(change, why, tmp_path):
    folder = save_pretraining(tmp_path / "m", tiny_config())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    assert wav2vec_native.native_config(folder) is None, why
    assert wav2vec_native.native_config(tmp_path / "no-such-folder") is None


def test_half_precision_weights_load_through_transformers(tmp_path):
    folder = save_pretraining(tmp_path / "m", tiny_config(), seed=3)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v.half() for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(wav2vec_native.UnsupportedWeights, match="float16"):
        native_model(folder, quantizer=False)
    extractor = Wav2vecExtractor(str(folder), features="hidden:-1")
    assert extractor.native is None  # transformers took it
    assert extractor.extract(speechlike(1.0)).shape == (49, 32)


def test_a_corrupt_weights_file_is_rejected_naming_the_folder(tmp_path):
    folder = save_pretraining(tmp_path / "m", tiny_config())
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelLoadError, match=re.escape(str(folder))):
        Wav2vecExtractor(str(folder), features="hidden:-1")


def test_a_process_featurizes_a_local_checkpoint_without_importing_transformers(tmp_path):
    folder = build_tiny_wav2vec(tmp_path / "tiny")
    script = (
        "import sys, numpy as np\n"
        "from dpl_assets.nodes.wav2vec import Wav2vecExtractor\n"
        "extractor = Wav2vecExtractor(sys.argv[1], features='hidden:-1')\n"
        "out = extractor.extract(np.sin(np.arange(32000) / 9).astype(np.float32))\n"
        "print(out.shape, any(m.split('.')[0] == 'transformers' for m in sys.modules))\n"
    )
    assert script_output(script, str(folder)).strip() == "(99, 32) False"


class _Payload:
    """Unpickling this would call print: what a hostile .bin could do with any callable."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_pytorch_bin_weights_load_and_a_hostile_one_is_refused(tmp_path, capfd):
    folder = save_pretraining(tmp_path / "m", tiny_config(), seed=4)
    inputs = normalized(folder, speechlike(1.0, seed=9))
    with torch.inference_mode():
        expected = native_model(folder, quantizer=True).quantized(inputs)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with torch.inference_mode():
        assert torch.equal(native_model(folder, quantizer=True).quantized(inputs), expected)
    torch.save({"weights": _Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin"):
        Wav2vecExtractor(str(folder))
    assert "unpickled code ran" not in capfd.readouterr().out


def test_a_declined_config_is_computed_by_transformers_in_the_extractor(tmp_path):
    """is_causal (which transformers' attention takes from the config) changes the hidden
    states: the extractor leaves such a model to transformers, so both backends agree."""
    folder = save_pretraining(tmp_path / "m", tiny_config(), seed=5)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "is_causal": True}))
    audio = speechlike(2.0, seed=10)
    auto = Wav2vecExtractor(str(folder), features="hidden:-1")
    through = Wav2vecExtractor(str(folder), features="hidden:-1", backend="transformers")
    assert auto.native is None
    np.testing.assert_array_equal(auto.extract(audio), through.extract(audio))
    # What the native model would have given (the config without is_causal): other values
    (folder / "config.json").write_text(json.dumps(config))
    with torch.inference_mode():
        inputs = normalized(folder, audio)
        bidirectional = native_model(folder, quantizer=False).hidden_states(inputs)[-1][0]
    assert not np.allclose(bidirectional.numpy(), through.extract(audio), atol=1e-3)


def test_folders_whose_files_transformers_reads_otherwise_are_left_to_it(tmp_path):
    folder = save_pretraining(tmp_path / "m", tiny_config(), seed=6)
    assert wav2vec_native.native_config(folder) is not None
    # transformers 5 reads a processor_config.json's nested extractor settings first
    (folder / "processor_config.json").write_text(
        json.dumps({"feature_extractor": {"do_normalize": False}})
    )
    assert wav2vec_native.native_config(folder) is None
    (folder / "processor_config.json").unlink()
    # an extractor for another rate: transformers refuses 16 kHz audio
    extractor_file = folder / "preprocessor_config.json"
    settings = json.loads(extractor_file.read_text())
    extractor_file.write_text(json.dumps({**settings, "sampling_rate": 8000}))
    assert wav2vec_native.native_config(folder) is None
    extractor_file.write_text(json.dumps(settings))
    # sharded safetensors come before a .bin in transformers' order
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    assert wav2vec_native.native_config(folder) is not None  # the .bin alone
    (folder / "model.safetensors.index.json").write_text("{}")
    assert wav2vec_native.native_config(folder) is None


def test_a_positional_conv_without_weight_norm_is_left_to_transformers(tmp_path):
    """transformers leaves the weight norm's parts uninitialized for such a file (NaN
    outputs); the native model would compute something else: it declines."""
    folder = save_pretraining(tmp_path / "m", tiny_config(), seed=7)
    state = load_file(str(folder / "model.safetensors"))
    prefix = "wav2vec2.encoder.pos_conv_embed.conv."
    g = state.pop(prefix + "parametrizations.weight.original0")
    v = state.pop(prefix + "parametrizations.weight.original1")
    state[prefix + "weight"] = torch._weight_norm(v, g, 2).contiguous()
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(wav2vec_native.UnsupportedWeights, match="weight norm"):
        native_model(folder, quantizer=False)
    assert Wav2vecExtractor(str(folder), features="hidden:-1").native is None
