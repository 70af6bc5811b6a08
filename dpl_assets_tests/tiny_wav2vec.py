"""Tiny wav2vec 2.0 checkpoints built and saved locally (no model hub is reachable here).

They keep wav2vec2-base's convolutional layout (kernels 10,3,3,3,3,2,2; strides 5,2,...),
so frame counts and hops are those of the real model; only the widths are tiny.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForPreTraining

PROJECTED_DIM = 24


def build_tiny_wav2vec(folder: Path, feat_extract_norm: str = "group", seed: int = 0) -> Path:
    """Save a random tiny pre-training model + feature extractor config into ``folder``.

    ``feat_extract_norm="layer"`` makes the conv encoder purely local in time (as in the
    large "lv60" models), so chunked quantized features must equal a whole-clip pass exactly.
    """
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        proj_codevector_dim=PROJECTED_DIM,
        codevector_dim=PROJECTED_DIM,
        num_codevectors_per_group=8,
        num_codevector_groups=2,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=feat_extract_norm,
        do_stable_layer_norm=feat_extract_norm == "layer",
    )
    folder.mkdir(parents=True, exist_ok=True)
    Wav2Vec2ForPreTraining(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16_000).save_pretrained(folder)
    return folder
