"""wav2vec 2.0 inference in plain torch, for checkpoints in a local folder: the computation
of transformers' ``Wav2Vec2Model`` and ``Wav2Vec2ForPreTraining`` in eval mode (the same
layers, in the same order, with the same torch calls), without importing transformers.

Why: importing ``transformers.models.wav2vec2.modeling_wav2vec2`` costs ~2 s of CPU per
process on this machine (it pulls in ``torch._dynamo``, ``torch.distributed.tensor``,
sympy and ``scipy.optimize`` for features inference never uses), paid again by every
``dpl run`` worker; the forward pass itself is the same arithmetic either way.

What it covers (:func:`native_config` says, else None and transformers loads the model as
before): ``model_type`` ``wav2vec2``; ``feat_extract_norm`` ``group`` or ``layer``; the
post-norm (base) and pre-norm (``do_stable_layer_norm``, large "lv60") encoders; GELU,
ReLU or SiLU activations; no adapter; float32 (the config's ``dtype``, which transformers
5 loads the weights in, float32 or unset); one ``model.safetensors`` or
``pytorch_model.bin`` (read with ``weights_only``) of float32 tensors, keyed as a
``Wav2Vec2Model`` or a ``Wav2Vec2ForPreTraining`` (``wav2vec2.`` prefix) saves them, the
positional convolution's weight norm as ``weight_g``/``weight_v`` or as a parametrization. The
input normalization is the feature extractor's (``preprocessor_config.json``:
``do_normalize``, default on; zero mean, unit variance over the clip, +1e-7). Settings
transformers would act on otherwise (an attention implementation other than SDPA,
``is_causal``, ``tie_last_hidden_states``, ``transformers_weights``, a quantization
config, sharded weights, a ``processor_config.json``, an extractor for another rate) and
configs it would refuse (inconsistent layer counts, heads not dividing the width) are
left to it.

Outputs, as transformers 5 gives them (checked against it in the tests, exactly):
``hidden_states[k]`` is the input of encoder layer ``k`` (0: the projected features with
the positional embedding, after the encoder's layer norm in the post-norm encoder) and
the last one is the last layer's output (in the pre-norm encoder, before its final layer
norm); ``quantized`` is the pre-training model's ``project_q`` of the codevectors chosen
by argmax (the eval-mode Gumbel quantizer). Attention is
``torch.nn.functional.scaled_dot_product_attention`` with no mask, transformers' default
(``sdpa``) implementation. Source: ``transformers/models/wav2vec2/modeling_wav2vec2.py``.
"""

from __future__ import annotations

import json
import pickle  # only for its error type: files are read with weights_only
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ

BASE_PREFIX = "wav2vec2."  # Wav2Vec2ForPreTraining's name for its Wav2Vec2Model
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": functional.gelu,  # transformers' GELUActivation: the exact (erf) GELU
    "relu": functional.relu,
    "silu": functional.silu,
    "swish": functional.silu,
}


@dataclass(frozen=True)
class NativeConfig:
    """The fields of a wav2vec2 ``config.json`` the forward pass needs."""

    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_bias: bool
    feat_extract_norm: str
    feat_extract_activation: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    hidden_act: str
    layer_norm_eps: float
    num_conv_pos_embeddings: int
    num_conv_pos_embedding_groups: int
    do_stable_layer_norm: bool
    num_codevector_groups: int
    num_codevectors_per_group: int
    codevector_dim: int
    proj_codevector_dim: int
    intermediate_size: int
    weights: Path


def native_config(folder: Path) -> NativeConfig | None:
    """``folder``'s model as :class:`NativeConfig` when this module computes it as
    transformers would (see the module), else None: anything in ``config.json``, the
    folder's files or its feature extractor's settings that transformers would act on
    differently, or would refuse, is left to it."""
    raw = _read_json(folder / "config.json")
    weights = _weights_file(folder)
    if raw is None or weights is None or _declined(raw) or not _plain_extractor(folder):
        return None
    try:
        config = NativeConfig(
            conv_dim=tuple(int(v) for v in raw.get("conv_dim", (512,) * 7)),
            conv_kernel=tuple(int(v) for v in raw.get("conv_kernel", (10, 3, 3, 3, 3, 2, 2))),
            conv_stride=tuple(int(v) for v in raw.get("conv_stride", (5, 2, 2, 2, 2, 2, 2))),
            conv_bias=bool(raw.get("conv_bias", False)),
            feat_extract_norm=raw.get("feat_extract_norm", "group"),
            feat_extract_activation=raw.get("feat_extract_activation", "gelu"),
            hidden_size=int(raw.get("hidden_size", 768)),
            num_hidden_layers=int(raw.get("num_hidden_layers", 12)),
            num_attention_heads=int(raw.get("num_attention_heads", 12)),
            hidden_act=raw.get("hidden_act", "gelu"),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-5)),
            num_conv_pos_embeddings=int(raw.get("num_conv_pos_embeddings", 128)),
            num_conv_pos_embedding_groups=int(raw.get("num_conv_pos_embedding_groups", 16)),
            do_stable_layer_norm=bool(raw.get("do_stable_layer_norm", False)),
            num_codevector_groups=int(raw.get("num_codevector_groups", 2)),
            num_codevectors_per_group=int(raw.get("num_codevectors_per_group", 320)),
            codevector_dim=int(raw.get("codevector_dim", 256)),
            proj_codevector_dim=int(raw.get("proj_codevector_dim", 256)),
            intermediate_size=int(raw.get("intermediate_size", 3072)),
            weights=weights,
        )
    except (TypeError, ValueError):
        return None
    layers = len(config.conv_dim)
    consistent = (
        len(config.conv_kernel) == len(config.conv_stride) == layers > 0
        and int(raw.get("num_feat_extract_layers", layers)) == layers
        and config.num_attention_heads > 0
        and config.hidden_size % config.num_attention_heads == 0
        and config.num_codevector_groups > 0
        and config.codevector_dim % config.num_codevector_groups == 0
        and config.num_hidden_layers >= 1
    )  # what transformers' config validation refuses
    return config if consistent else None


def _declined(raw: dict[str, Any]) -> bool:
    """Settings transformers acts on that this module does not compute (or checks it
    does not make)."""
    attention = (raw.get("attn_implementation"), raw.get("_attn_implementation"))
    activations = (raw.get("feat_extract_activation", "gelu"), raw.get("hidden_act", "gelu"))
    return bool(
        raw.get("model_type") != "wav2vec2"
        # transformers 5 loads the weights in the config's dtype (a float16 config: float16)
        or (raw.get("dtype") or raw.get("torch_dtype")) not in (None, "float32")
        or not all(name in (None, "sdpa") for name in attention)  # eager, flex: other sums
        or raw.get("is_causal")  # causal attention, passed down from the config
        or raw.get("tie_last_hidden_states")  # the last hidden state after the final norm
        or raw.get("transformers_weights") is not None  # another weights file named
        or raw.get("quantization_config") is not None
        or raw.get("per_layer_config") is not None
        or raw.get("add_adapter")
        or raw.get("adapter_attn_dim") is not None
        or raw.get("feat_extract_norm", "group") not in ("group", "layer")
        or not all(isinstance(name, str) and name in ACTIVATIONS for name in activations)
    )


def _weights_file(folder: Path) -> Path | None:
    """The one weights file transformers would load from ``folder``: ``model.safetensors``,
    else ``pytorch_model.bin`` when no sharded safetensors come first; None otherwise."""
    if (folder / "model.safetensors").is_file():
        return folder / "model.safetensors"
    if (folder / "model.safetensors.index.json").exists():
        return None  # sharded: transformers' next choice, not read here
    bin_file = folder / "pytorch_model.bin"
    return bin_file if bin_file.is_file() else None


def _plain_extractor(folder: Path) -> bool:
    """Whether the feature extractor's settings are the ones :func:`normalizes_input`
    reads: no ``processor_config.json`` (transformers 5 reads its nested settings first),
    and a ``preprocessor_config.json``, if any, for 16 kHz mono audio."""
    if (folder / "processor_config.json").exists():
        return False
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return True
    settings = _read_json(path)
    return (
        settings is not None
        and settings.get("sampling_rate", AUDIO_SAMPLE_RATE_HZ) == AUDIO_SAMPLE_RATE_HZ
        and settings.get("feature_size", 1) == 1
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def normalizes_input(folder: Path) -> bool:
    """Whether the checkpoint's feature extractor normalizes the audio: its
    ``preprocessor_config.json``'s ``do_normalize``; True without that file (what wav2vec2
    models expect, and transformers' default)."""
    settings = _read_json(folder / "preprocessor_config.json") or {}
    return bool(settings.get("do_normalize", True))


def normalize_input(audio: np.ndarray, normalize: bool = True) -> np.ndarray:
    """float32 (N,) audio as the feature extractor gives it to the model: with
    ``normalize``, zero mean and unit variance over the clip (+1e-7 under the root, its
    expression); as is otherwise."""
    x = np.asarray(audio, dtype=np.float32)
    if not normalize:
        return x
    return np.asarray((x - x.mean()) / np.sqrt(x.var() + 1e-7), dtype=np.float32)


class _ConvLayer(nn.Module):
    """One feature-encoder layer: convolution, optional norm, activation."""

    def __init__(self, config: NativeConfig, index: int, norm: str | None) -> None:
        super().__init__()
        channels_in = config.conv_dim[index - 1] if index > 0 else 1
        channels = config.conv_dim[index]
        self.conv: nn.Module = nn.Conv1d(
            channels_in,
            channels,
            config.conv_kernel[index],
            stride=config.conv_stride[index],
            bias=config.conv_bias,
        )
        self.norm = norm
        if norm == "group":  # one group per channel: over time, per channel
            self.layer_norm: nn.Module = nn.GroupNorm(channels, channels, affine=True)
        elif norm == "layer":  # over channels, per frame (eps left at torch's default)
            self.layer_norm = nn.LayerNorm(channels, elementwise_affine=True)
        self.activation = ACTIVATIONS[config.feat_extract_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm == "group":
            x = self.layer_norm(x)
        elif self.norm == "layer":
            x = self.layer_norm(x.transpose(-2, -1)).transpose(-2, -1)
        return self.activation(x)


class _FeatureEncoder(nn.Module):
    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        layer = config.feat_extract_norm == "layer"
        self.conv_layers = nn.ModuleList(
            _ConvLayer(config, i, "layer" if layer else ("group" if i == 0 else None))
            for i in range(len(config.conv_dim))
        )

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples[:, None]
        for conv_layer in self.conv_layers:
            x = conv_layer(x)
        return x  # (B, C, T)


class _FeatureProjection(nn.Module):
    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)


class _PositionalConv(nn.Module):
    """The grouped convolution over time added to the projected features (its weight norm
    folded into ``conv.weight`` when the weights are loaded)."""

    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        kernel = config.num_conv_pos_embeddings
        self.conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            kernel_size=kernel,
            padding=kernel // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.remove = 1 if kernel % 2 == 0 else 0  # an even kernel's one extra frame
        self.activation = ACTIVATIONS[config.feat_extract_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.transpose(1, 2))
        if self.remove:
            x = x[:, :, : -self.remove]
        return self.activation(x).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        size = config.hidden_size
        self.head_dim = size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(size, size)
        self.v_proj = nn.Linear(size, size)
        self.q_proj = nn.Linear(size, size)
        self.out_proj = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames = x.shape[:2]
        shape = (batch, frames, -1, self.head_dim)
        query = self.q_proj(x).view(shape).transpose(1, 2)
        key = self.k_proj(x).view(shape).transpose(1, 2)
        value = self.v_proj(x).view(shape).transpose(1, 2)
        out = functional.scaled_dot_product_attention(
            query, key, value, attn_mask=None, dropout_p=0.0, scale=self.scaling, is_causal=False
        )
        out = out.reshape(batch, -1, frames, value.shape[-1]).transpose(1, 2).contiguous()
        return self.out_proj(out.reshape(batch, frames, -1).contiguous())


class _FeedForward(nn.Module):
    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.activation(self.intermediate_dense(x)))


class _EncoderLayer(nn.Module):
    """Post-norm (base) or pre-norm (``do_stable_layer_norm``) transformer layer."""

    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.pre_norm = config.do_stable_layer_norm
        self.attention = _Attention(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = _FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nn.Module):
    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.pre_norm = config.do_stable_layer_norm
        self.pos_conv_embed = _PositionalConv(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(_EncoderLayer(config) for _ in range(config.num_hidden_layers))


class _Quantizer(nn.Module):
    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.groups = config.num_codevector_groups
        self.per_group = config.num_codevectors_per_group
        self.codevectors = nn.Parameter(
            torch.empty(1, self.groups * self.per_group, config.codevector_dim // self.groups)
        )
        self.weight_proj = nn.Linear(config.conv_dim[-1], self.groups * self.per_group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) normed features -> (B, T, codevector_dim): each group's argmax
        codevector (what the one-hot product of transformers' eval mode selects)."""
        batch, frames = x.shape[:2]
        logits = self.weight_proj(x).view(batch * frames, self.groups, self.per_group)
        offsets = torch.arange(self.groups, device=logits.device) * self.per_group
        chosen = logits.argmax(dim=-1) + offsets  # (BT, G) rows of the codebook
        return self.codevectors[0, chosen.reshape(-1)].view(batch, frames, -1)


class Wav2Vec2Native(nn.Module):
    """A wav2vec2 model from :class:`NativeConfig` with transformers' parameter names
    (so a checkpoint's state dict loads as is): :meth:`hidden_states` and
    :meth:`quantized`. Inference only (no dropout, masking or layer drop)."""

    def __init__(self, config: NativeConfig, quantizer: bool) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = _FeatureEncoder(config)
        self.feature_projection = _FeatureProjection(config)
        self.encoder = _Encoder(config)
        if quantizer:
            self.quantizer = _Quantizer(config)
            self.project_q = nn.Linear(config.codevector_dim, config.proj_codevector_dim)

    def hidden_states(self, samples: torch.Tensor, last: int | None = None) -> list[torch.Tensor]:
        """(B, S) normalized 16 kHz samples -> the encoder's hidden states, each (B, T, D):
        index k the input of layer k, the last the last layer's output (see the module);
        with ``last``, only those up to index ``last`` (the later layers are not run)."""
        total = self.config.num_hidden_layers + 1
        if last is not None and not -total <= last < total:
            raise IndexError(f"hidden state {last} of {total}")
        stop = total - 1 if last is None else last % total
        features = self.feature_extractor(samples).transpose(1, 2)
        x = self.feature_projection.projection(self.feature_projection.layer_norm(features))
        encoder = self.encoder
        x = x + encoder.pos_conv_embed(x)
        if not encoder.pre_norm:
            x = encoder.layer_norm(x)
        states = [x]
        for layer in encoder.layers[:stop]:
            x = layer(x)
            states.append(x)
        return states

    def quantized(self, samples: torch.Tensor) -> torch.Tensor:
        """(B, S) normalized samples -> (B, T, proj_codevector_dim) projected quantized
        states (``Wav2Vec2ForPreTraining``'s ``projected_quantized_states``)."""
        features = self.feature_extractor(samples).transpose(1, 2)
        codevectors = self.quantizer(self.feature_projection.layer_norm(features))
        return self.project_q(codevectors.to(self.project_q.weight.dtype))


class UnsupportedWeights(ValueError):
    """The weights file is not what :class:`Wav2Vec2Native` loads (names, dtypes)."""


def load_native(config: NativeConfig, quantizer: bool) -> Wav2Vec2Native:
    """The model of ``config`` with its weights (eval mode, no gradients). Raises
    :class:`UnsupportedWeights` when a parameter is missing, has another shape or is not
    float32 (transformers loads such files), OSError/ValueError for an unreadable file."""
    state = _read_state(config.weights)
    if any(key.startswith(BASE_PREFIX) for key in state):
        state = {
            key.removeprefix(BASE_PREFIX): value
            for key, value in state.items()
            if key.startswith(BASE_PREFIX) or key.startswith(("quantizer.", "project_q."))
        }
    if not _fold_weight_norm(state, "encoder.pos_conv_embed.conv"):
        # transformers leaves a weight-normed conv's parts uninitialized then (NaN outputs)
        raise UnsupportedWeights(f"{config.weights.name}: no weight norm for the positional conv")
    with torch.device("meta"):  # shapes only: no random init to overwrite (~0.3 s of CPU)
        model = Wav2Vec2Native(config, quantizer)
    wanted = model.state_dict()
    for key, target in wanted.items():
        value = state.get(key)
        if value is None or value.shape != target.shape or value.dtype != torch.float32:
            found = "missing" if value is None else f"{tuple(value.shape)} {value.dtype}"
            raise UnsupportedWeights(f"{config.weights.name}: {key} is {found}")
    model.load_state_dict({key: state[key] for key in wanted}, assign=True)  # the file's tensors
    return model.eval().requires_grad_(False)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file; ValueError naming it when it does not read."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise ValueError(f"{path.name}: {error}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never plain pickle
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path.name}: {error}") from None
    if not isinstance(state, dict):
        raise UnsupportedWeights(f"{path.name} holds no state dict")
    return state


def _fold_weight_norm(state: dict[str, torch.Tensor], prefix: str) -> bool:
    """Replace a weight-normed conv's magnitude and direction by its weight, computed as
    torch's weight norm (dim 2, as transformers applies it) computes it; False when the
    state has neither naming of the pair."""
    for magnitude, direction in (
        ("weight_g", "weight_v"),
        ("parametrizations.weight.original0", "parametrizations.weight.original1"),
    ):
        g, v = state.pop(f"{prefix}.{magnitude}", None), state.pop(f"{prefix}.{direction}", None)
        if g is not None and v is not None:
            state[f"{prefix}.weight"] = torch._weight_norm(v, g, 2)
            return True
    return False
