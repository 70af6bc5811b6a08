"""wav2vec 2.0 features from 16 kHz audio, chunked without seams and batched across videos.

Outputs (T, D) float32 at 50 Hz, T = the model's conv-encoder frame count for the audio:
- ``features="quantized"`` (the original's choice): the pre-training model's projected
  quantized states, D = ``proj_codevector_dim`` (256 for wav2vec2-base). They depend only on
  the convolutional encoder, so the transformer is skipped (same values, several times faster).
- ``features="hidden:K"``: hidden state K of the transformer (0 = its input, -1 = last).

Long audio is cut into windows of ``chunk_seconds`` that overlap by ``context_seconds`` on
each side; every output frame comes from the window where it has the most context, so
there are no seams. All windows have one length, so windows of many videos share a batch.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.memory import temporaries_in_heap
from dpl_assets.nodes.audio import conv_output_length
from dpl_assets.outcomes import InputRejected

if TYPE_CHECKING:  # torch (and transformers) load with the first model, not the package
    import torch

    from dpl_assets.nodes.wav2vec_native import Wav2Vec2Native

DEFAULT_CHECKPOINT = "facebook/wav2vec2-base"


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message says how to point at local weights."""


@dataclass(frozen=True)
class FeatureChoice:
    """Which wav2vec output to store: ``quantized`` or a transformer hidden ``layer``."""

    kind: str
    layer: int = -1

    @classmethod
    def parse(cls, text: str) -> FeatureChoice:
        """``"quantized"`` or ``"hidden:K"`` (K an int, negative counts from the last layer)."""
        if text == "quantized":
            return cls("quantized")
        if text.startswith("hidden:"):
            try:
                return cls("hidden", int(text.removeprefix("hidden:")))
            except ValueError:
                pass
        raise ValueError(f"features must be 'quantized' or 'hidden:K' (K an integer), not {text!r}")


def load_error_message(checkpoint: str, error: Exception) -> str:
    return (
        f"cannot load wav2vec checkpoint {checkpoint!r}: {type(error).__name__}: {error}. "
        "If this machine cannot reach the model hub, download the weights where it can "
        f"(e.g. `hf download {checkpoint} --local-dir DIR`), copy DIR here and set the "
        'node\'s "checkpoint" parameter to that folder; a folder must hold config.json, '
        "the weights and preprocessor_config.json. "
        f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}."
    )


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers' progress bars off inside the block (as they were after it)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


BACKENDS = ("auto", "transformers")


class Wav2vecExtractor:
    """A loaded wav2vec 2.0 model and its input normalization, ready to featurize audio.

    Args:
        checkpoint: model hub id or local folder (``from_pretrained`` semantics; honours
            ``HF_HUB_OFFLINE`` and the local cache).
        features: ``"quantized"`` or ``"hidden:K"``.
        device: torch device to run on.
        backend: ``"auto"``: a local folder holding a standard wav2vec2 checkpoint runs in
            plain torch (:mod:`dpl_assets.nodes.wav2vec_native`: the same outputs, without
            importing transformers, ~2 s of CPU per process), anything else through
            transformers; ``"transformers"``: always through transformers.

    Raises :class:`ModelLoadError` when the checkpoint cannot be loaded.
    """

    def __init__(
        self,
        checkpoint: str = DEFAULT_CHECKPOINT,
        features: str = "quantized",
        device: str | torch.device = "cpu",
        backend: str = "auto",
    ):
        import torch

        from dpl_assets.nodes.wav2vec_inference import prepare_for_inference

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.choice = FeatureChoice.parse(features)
        self.device = torch.device(device)
        self._normalize_input: Callable[[np.ndarray], np.ndarray]
        self.native = self._load_native(Path(checkpoint)) if backend == "auto" else None
        model = self.native or self._load_transformers(checkpoint)
        # transformers' model or the native one (their layers share names)
        self.model: Any = prepare_for_inference(model.to(self.device))
        config = cast(Any, model).config  # transformers' Wav2Vec2Config or a NativeConfig
        states = int(config.num_hidden_layers) + 1  # the transformer's input, then each layer's
        if self.choice.kind == "hidden" and not -states <= self.choice.layer < states:
            raise ValueError(
                f"features {features!r}: {checkpoint} has {states} hidden states "
                f"(K from {-states} to {states - 1})"
            )
        self.kernels: tuple[int, ...] = tuple(config.conv_kernel)
        self.strides: tuple[int, ...] = tuple(config.conv_stride)
        self.hop = int(np.prod(self.strides))
        self.receptive_field = self._receptive_field()

    def _load_native(self, folder: Path) -> Wav2Vec2Native | None:
        """The plain-torch model of a supported local checkpoint, else None."""
        from dpl_assets.nodes import wav2vec_native

        config = wav2vec_native.native_config(folder) if folder.is_dir() else None
        if config is None:
            return None
        try:
            model = wav2vec_native.load_native(config, quantizer=self.choice.kind == "quantized")
        except wav2vec_native.UnsupportedWeights:
            return None  # transformers loads (or rejects) what this does not
        except (OSError, ValueError, RuntimeError) as error:  # unreadable, corrupt
            raise ModelLoadError(load_error_message(str(folder), error)) from error
        normalize = wav2vec_native.normalizes_input(folder)
        self._normalize_input = functools.partial(
            wav2vec_native.normalize_input, normalize=normalize
        )
        return model

    def _load_transformers(self, checkpoint: str) -> torch.nn.Module:
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining, Wav2Vec2Model

        model_class = Wav2Vec2ForPreTraining if self.choice.kind == "quantized" else Wav2Vec2Model
        try:
            with _no_progress_bar():  # a bar per process on dpl's terminal; steps log progress
                model = model_class.from_pretrained(checkpoint)
        except (OSError, ValueError) as error:
            raise ModelLoadError(load_error_message(checkpoint, error)) from error
        try:
            normalizer = Wav2Vec2FeatureExtractor.from_pretrained(checkpoint)
        except OSError:
            # Checkpoints without preprocessor_config.json: wav2vec2 models expect
            # zero-mean, unit-variance input (what facebook/wav2vec2-base's config says).
            normalizer = Wav2Vec2FeatureExtractor(do_normalize=True)

        def normalize(audio: np.ndarray) -> np.ndarray:
            values = normalizer(audio, sampling_rate=AUDIO_SAMPLE_RATE_HZ, return_tensors="np")
            return np.asarray(values["input_values"][0], dtype=np.float32)

        self._normalize_input = normalize
        return model.eval()

    def _receptive_field(self) -> int:
        field = 1
        for kernel, stride in zip(reversed(self.kernels), reversed(self.strides), strict=True):
            field = (field - 1) * stride + kernel
        return field

    def frame_count(self, num_samples: int) -> int:
        """T for ``num_samples`` of 16 kHz audio."""
        return conv_output_length(num_samples, self.kernels, self.strides)

    def _window_samples(self, frames: int) -> int:
        return self.receptive_field + self.hop * (frames - 1)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, S) normalized audio -> (B, T, D) features."""
        import torch

        with torch.inference_mode():
            inputs = torch.from_numpy(batch).to(self.device)
            if self.native is not None:
                if self.choice.kind == "quantized":
                    out = self.native.quantized(inputs)
                else:
                    # the states up to the one asked for (later layers not run): the last
                    out = self.native.hidden_states(inputs, self.choice.layer)[-1]
            elif self.choice.kind == "quantized":
                wav2vec2 = self.model.wav2vec2
                conv = wav2vec2.feature_extractor(inputs).transpose(1, 2)
                _, normed = wav2vec2.feature_projection(conv)
                quantized, _ = self.model.quantizer(normed)
                out = self.model.project_q(quantized.to(self.model.project_q.weight.dtype))
            else:
                hidden = self.model(inputs, output_hidden_states=True).hidden_states
                out = hidden[self.choice.layer]
            return out.float().cpu().numpy()

    def extract_many(
        self,
        audios: Mapping[str, np.ndarray],
        chunk_seconds: float = 10.0,
        context_seconds: float = 1.0,
        batch_size: int = 8,
    ) -> dict[str, np.ndarray]:
        """Featurize several clips; windows of all clips are batched together.

        Args:
            audios: id -> float32 (N,) mono 16 kHz.
            chunk_seconds: window length for long audio (the original used at most 10 s).
            context_seconds: context on each side of a window whose outputs are discarded.
            batch_size: windows per forward pass.

        Returns id -> float32 (T, D). Raises :class:`InputRejected` (naming the id) for
        audio shorter than one frame.
        """
        with temporaries_in_heap():  # the passes' temporaries reuse heap, not fresh maps
            return self._extract_many(audios, chunk_seconds, context_seconds, batch_size)

    def _extract_many(
        self,
        audios: Mapping[str, np.ndarray],
        chunk_seconds: float,
        context_seconds: float,
        batch_size: int,
    ) -> dict[str, np.ndarray]:
        plan = _WindowPlan.from_seconds(chunk_seconds, context_seconds, self.hop)
        results: dict[str, np.ndarray] = {}
        windows: list[tuple[str, int, np.ndarray]] = []  # (id, first frame, samples)
        totals: dict[str, int] = {}
        for video_id, audio in audios.items():
            total = self.frame_count(audio.size)
            if total == 0:
                raise InputRejected(
                    f"{video_id}: {audio.size} samples is shorter than one wav2vec frame "
                    f"({self.receptive_field} samples)"
                )
            # Over the whole clip, before chunking: per-window statistics would differ.
            normalized = self._normalize_input(audio)
            if total <= plan.window_frames:
                # Whole clip, trailing samples included: group norm sees all of them.
                results[video_id] = self._forward(normalized[None])[0]
                continue
            totals[video_id] = total
            length = self._window_samples(plan.window_frames)
            for first in plan.window_starts(total):
                offset = first * self.hop
                windows.append((video_id, first, normalized[offset : offset + length]))
        outputs: list[np.ndarray] = []
        for begin in range(0, len(windows), batch_size):
            chunk = windows[begin : begin + batch_size]
            outputs.extend(self._forward(np.stack([samples for _, _, samples in chunk])))
        for video_id, total in totals.items():
            pieces = [
                (first, out)
                for (vid, first, _), out in zip(windows, outputs, strict=True)
                if vid == video_id
            ]
            results[video_id] = plan.stitch(pieces, total)
        return {video_id: results[video_id] for video_id in audios}

    def extract(self, audio: np.ndarray, **windowing: float) -> np.ndarray:
        """Featurize one clip: float32 (N,) -> float32 (T, D); ``windowing`` as extract_many."""
        return self.extract_many({"clip": audio}, **windowing)["clip"]  # type: ignore[arg-type]


@dataclass(frozen=True)
class _WindowPlan:
    """How long audio is cut into equal windows (in frames) and stitched back."""

    window_frames: int
    context_frames: int

    @classmethod
    def from_seconds(cls, chunk_seconds: float, context_seconds: float, hop: int) -> _WindowPlan:
        frames_per_second = AUDIO_SAMPLE_RATE_HZ / hop
        plan = cls(
            max(1, round(chunk_seconds * frames_per_second)),
            round(context_seconds * frames_per_second),
        )
        if plan.window_frames <= 2 * plan.context_frames:
            raise ValueError("chunk_seconds must exceed twice context_seconds")
        return plan

    def window_starts(self, total_frames: int) -> list[int]:
        """First frame of each window; the last window ends exactly at the last frame."""
        step = self.window_frames - 2 * self.context_frames
        starts = list(range(0, total_frames - self.window_frames, step))
        return [*starts, total_frames - self.window_frames]

    def stitch(self, pieces: list[tuple[int, np.ndarray]], total: int) -> np.ndarray:
        """Join window outputs: each frame is taken from the window that sees most context."""
        out = np.empty((total, pieces[0][1].shape[-1]), dtype=np.float32)
        written = 0
        for index, (first, features) in enumerate(pieces):
            last = index == len(pieces) - 1
            end = total if last else first + self.window_frames - self.context_frames
            out[written:end] = features[written - first : end - first]
            written = end
        return out
