"""wav2vec features against a direct transformers forward pass on the same audio."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining, Wav2Vec2Model

from dpl_assets.nodes.audio import volume_envelope
from dpl_assets.nodes.wav2vec import ModelLoadError, Wav2vecExtractor
from dpl_assets.outcomes import InputRejected
from dpl_assets_tests.tiny_wav2vec import PROJECTED_DIM, build_tiny_wav2vec

RATE = 16_000


@pytest.fixture(scope="module")
def group_norm_model(tmp_path_factory) -> Path:
    return build_tiny_wav2vec(tmp_path_factory.mktemp("w2v_group"), "group")


@pytest.fixture(scope="module")
def layer_norm_model(tmp_path_factory) -> Path:
    return build_tiny_wav2vec(tmp_path_factory.mktemp("w2v_layer"), "layer")


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated noise and tones: varied enough to exercise every codevector."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    signal = 0.3 * np.sin(2 * np.pi * 180 * t) + 0.2 * rng.standard_normal(t.size)
    return (envelope * signal).astype(np.float32)


def reference_inputs(model_dir: Path, audio: np.ndarray) -> torch.Tensor:
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    return torch.from_numpy(extractor(audio, sampling_rate=RATE, return_tensors="np").input_values)


def reference_quantized(model_dir: Path, audio: np.ndarray) -> np.ndarray:
    model = Wav2Vec2ForPreTraining.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(reference_inputs(model_dir, audio)).projected_quantized_states[0].numpy()


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_quantized_features_equal_direct_pretraining_forward(norm, tmp_path):
    model_dir = build_tiny_wav2vec(tmp_path / norm, norm)
    audio = speechlike(3.0)
    ours = Wav2vecExtractor(str(model_dir)).extract(audio)
    expected = reference_quantized(model_dir, audio)
    assert ours.shape == expected.shape == (149, PROJECTED_DIM)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("layer", [0, 1, 2, -1, -2, -3])
def test_hidden_layer_features_equal_direct_model_forward(group_norm_model, layer):
    audio = speechlike(2.0, seed=1)
    ours = Wav2vecExtractor(str(group_norm_model), features=f"hidden:{layer}").extract(audio)
    model = Wav2Vec2Model.from_pretrained(group_norm_model).eval()
    with torch.no_grad():
        outputs = model(reference_inputs(group_norm_model, audio), output_hidden_states=True)
    np.testing.assert_allclose(ours, outputs.hidden_states[layer][0].numpy(), atol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "transformers"])
def test_a_hidden_state_the_model_has_not_is_refused_by_name(group_norm_model, backend):
    with pytest.raises(ValueError, match=r"'hidden:3'.* has 3 hidden states \(K from -3 to 2\)"):
        Wav2vecExtractor(str(group_norm_model), features="hidden:3", backend=backend)


def test_long_clip_is_chunked_and_stitched_without_seams(layer_norm_model, monkeypatch):
    audio = speechlike(25.0, seed=2)
    extractor = Wav2vecExtractor(str(layer_norm_model))
    batch_lengths: list[int] = []
    original = extractor._forward

    def spy(batch):
        batch_lengths.append(batch.shape[1])
        return original(batch)

    monkeypatch.setattr(extractor, "_forward", spy)
    ours = extractor.extract(audio, chunk_seconds=4.0, context_seconds=0.5, batch_size=3)
    # 25 s in 4 s windows: several forward passes, none longer than one window.
    assert len(batch_lengths) >= 2
    assert max(batch_lengths) < 4.1 * RATE
    expected = reference_quantized(layer_norm_model, audio)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_windows_of_several_videos_share_batches(layer_norm_model):
    extractor = Wav2vecExtractor(str(layer_norm_model))
    clips = {"a": speechlike(9.0, 3), "b": speechlike(7.3, 4), "c": speechlike(1.2, 5)}
    together = extractor.extract_many(clips, chunk_seconds=3.0, context_seconds=0.5, batch_size=4)
    for name, audio in clips.items():
        np.testing.assert_allclose(
            together[name], reference_quantized(layer_norm_model, audio), atol=1e-5
        )


@pytest.mark.parametrize("seconds", [0.03, 1.0, 2.99, 8.0])
def test_volume_has_one_value_per_wav2vec_frame(group_norm_model, seconds):
    audio = speechlike(seconds, seed=6)
    features = reference_quantized(group_norm_model, audio)
    volume = volume_envelope(audio)
    assert volume.shape == (features.shape[0],)
    hop = 320
    first = np.abs(audio[:hop]).mean()
    assert volume[0] == pytest.approx(first, rel=1e-6)


def test_audio_shorter_than_one_frame_is_rejected(group_norm_model):
    with pytest.raises(InputRejected, match=r"shorter than one wav2vec frame"):
        Wav2vecExtractor(str(group_norm_model)).extract_many({"tiny": np.zeros(399, np.float32)})


def test_unloadable_checkpoint_says_how_to_use_local_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-weights"
    with pytest.raises(ModelLoadError) as raised:
        Wav2vecExtractor(str(missing))
    message = str(raised.value)
    assert str(missing) in message
    assert "--local-dir" in message and '"checkpoint"' in message


def test_offline_hub_id_fails_with_the_same_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"facebook/wav2vec2-base.*HF_HUB_OFFLINE=1"):
        Wav2vecExtractor("facebook/wav2vec2-base")


def test_loading_draws_no_progress_bar_and_leaves_the_setting(group_norm_model, capfd):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    Wav2vecExtractor(str(group_norm_model), features="hidden:-1", backend="transformers")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # as it was before
    Wav2Vec2Model.from_pretrained(group_norm_model)  # the reference: transformers draws one
    assert "Loading weights" in capfd.readouterr().err


@pytest.mark.parametrize("bias", [False, True])
def test_signal_conv_gives_the_convolutions_values(bias):
    from dpl_assets.nodes.wav2vec_inference import SignalConv1d

    torch.manual_seed(3)
    conv = torch.nn.Conv1d(1, 32, kernel_size=10, stride=5, bias=bias)
    signal = torch.randn(3, 1, 1003)  # (1003 - 10) // 5 + 1 = 199 outputs, 3 samples left over
    with torch.inference_mode():
        expected, ours = conv(signal), SignalConv1d(conv)(signal)
    assert ours.shape == expected.shape == (3, 32, 199)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_signal_conv_refuses_convolutions_it_cannot_stand_in_for():
    from dpl_assets.nodes.wav2vec_inference import SignalConv1d, is_signal_conv

    assert is_signal_conv(torch.nn.Conv1d(1, 8, 10, 5))
    for conv in (
        torch.nn.Conv1d(2, 8, 10, 5),  # two input channels
        torch.nn.Conv1d(1, 8, 10, 5, padding=2),
        torch.nn.Conv1d(1, 8, 10, 5, dilation=2),
        torch.nn.Conv1d(1, 8, 10, 5, padding=2, padding_mode="reflect"),
        torch.nn.Conv1d(1, 8, 10, 5).to(torch.bfloat16),  # rounds before its bias
    ):
        assert not is_signal_conv(conv)
        with pytest.raises(ValueError, match="not a one-channel unpadded float32 CPU"):
            SignalConv1d(conv)


def test_the_loaded_model_runs_the_cheaper_layers(group_norm_model):
    from torch.nn.utils import parametrize

    from dpl_assets.nodes.wav2vec_inference import SignalConv1d

    # Wav2Vec2ForPreTraining
    extractor = Wav2vecExtractor(str(group_norm_model), backend="transformers")
    encoder = extractor.model.wav2vec2
    assert isinstance(encoder.feature_extractor.conv_layers[0].conv, SignalConv1d)
    assert not parametrize.is_parametrized(encoder.encoder.pos_conv_embed.conv, "weight")
    hidden = Wav2vecExtractor(str(group_norm_model), features="hidden:-1", backend="transformers")
    assert isinstance(hidden.model.feature_extractor.conv_layers[0].conv, SignalConv1d)  # Model
    native = Wav2vecExtractor(str(group_norm_model), features="hidden:-1")  # the plain-torch one
    assert native.native is not None and native.model is native.native
    assert isinstance(native.model.feature_extractor.conv_layers[0].conv, SignalConv1d)
    # Their values against transformers' own layers: the tests above.
