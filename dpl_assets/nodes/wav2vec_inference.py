"""A loaded transformers wav2vec2 model made cheaper to run, with the same outputs.

:func:`prepare_for_inference` changes two layers of an inference-only model:

- The encoder's first convolution (one input channel, kernel 10, stride 5 over the raw
  16 kHz samples) runs as one matrix product of the signal's strided windows
  (:class:`SignalConv1d`): PyTorch's CPU convolution takes ~50 ms for 8 s of audio on
  this shape (a poor fit for its kernels: 1 input channel, 512 outputs), the product ~20
  ms, with bit-identical outputs here (the same 10 products summed).
- The positional convolution's weight norm is folded into its weight once (transformers
  recomputes it from ``weight_g`` and ``weight_v`` on every forward pass).

Measured on wav2vec2-base, 8 s clips, one thread: ~4 % less time a forward pass (1.00
against 1.05 s, medians of 16 alternated), outputs equal. The convolution is changed only
in float32 CPU models (in half precision the product would round before the bias is
added; on a GPU the convolution is fast already). The changed model is for inference in
this process only: its ``state_dict`` no longer loads into transformers' class (the first
weight is (C, K), the weight norm is gone); and the model must not be a ``copy.deepcopy``
of one still in use (the copy shares the parametrized class whose ``weight`` goes,
breaking the original).
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

Model = TypeVar("Model", bound=nn.Module)


class SignalConv1d(nn.Module):
    """A ``Conv1d`` with one input channel, no padding, dilation or groups, as a matrix
    product: input (B, 1, S) -> output (B, C, T), T = (S - kernel) // stride + 1, the
    same values as the convolution's."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if not is_signal_conv(conv):
            raise ValueError(f"not a one-channel unpadded float32 CPU convolution: {conv}")
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        self.weight = nn.Parameter(conv.weight.detach()[:, 0, :].contiguous(), False)  # (C, K)
        self.bias = (
            None if conv.bias is None else nn.Parameter(conv.bias.detach()[None, :, None], False)
        )  # (1, C, 1)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        windows = signal[:, 0].unfold(-1, self.kernel, self.stride)  # (B, T, K), a view
        out = torch.matmul(self.weight, windows.transpose(1, 2))  # (B, C, T)
        return out if self.bias is None else out + self.bias


def is_signal_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` is a float32 CPU ``Conv1d`` :class:`SignalConv1d` stands in for."""
    return (
        type(conv) is nn.Conv1d
        and conv.weight.dtype == torch.float32
        and conv.weight.device.type == "cpu"
        and conv.in_channels == 1
        and conv.groups == 1
        and conv.dilation == (1,)
        and conv.padding in ((0,), "valid")
        and conv.padding_mode == "zeros"
    )


def prepare_for_inference(model: Model) -> Model:
    """``model`` (a transformers ``Wav2Vec2Model`` or ``Wav2Vec2ForPreTraining`` in eval
    mode, on its device: not to be trained, saved or copied after) with the two layers
    above changed where they have the expected form (other layouts, dtypes and devices are
    left as they are); returns it."""
    base = getattr(model, "wav2vec2", model)
    layers: Any = getattr(getattr(base, "feature_extractor", None), "conv_layers", None)
    first = getattr(layers[0], "conv", None) if layers else None
    if first is not None and is_signal_conv(first):
        layers[0].conv = SignalConv1d(first)
    embedding = getattr(getattr(base, "encoder", None), "pos_conv_embed", None)
    position = getattr(embedding, "conv", None)
    if position is not None and torch.nn.utils.parametrize.is_parametrized(position, "weight"):
        torch.nn.utils.parametrize.remove_parametrizations(position, "weight")
    return model
