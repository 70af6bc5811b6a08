"""Resources shared by a process: the torch device and loaded models.

Models are cached per process, keyed by everything that changes them, so a run (or a CLI
invocation made of several runs) loads each model once, however many videos it covers.
"""

from __future__ import annotations

import functools

import dagster as dg
import torch

from dpl_assets.nodes.wav2vec import Wav2vecExtractor


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda:0`` when a GPU is visible, else ``cpu``; ``cuda:N`` is checked."""
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= visible:
            raise ValueError(f"device {requested!r} requested, but torch sees {visible} GPU(s)")
    elif requested != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda:N', not {requested!r}")
    return requested


class TorchDevice(dg.ConfigurableResource):
    """The device model nodes run on; a node's own ``device`` parameter overrides it.

    ``device``: ``auto`` (first GPU if any, else CPU), ``cpu`` or ``cuda:N``.
    """

    device: str = "auto"

    def for_node(self, node_device: str) -> str:
        return resolve_device(node_device if node_device != "auto" else self.device)


@functools.lru_cache(maxsize=4)
def cached_wav2vec(
    checkpoint: str,
    features: str,
    device: str,
) -> Wav2vecExtractor:
    """A loaded extractor, reused for the life of the process."""
    return Wav2vecExtractor(checkpoint=checkpoint, features=features, device=device)


class Wav2vecModels(dg.ConfigurableResource):
    """Hands out wav2vec extractors, loading each checkpoint once per process."""

    def extractor(self, checkpoint: str, features: str, device: str) -> Wav2vecExtractor:
        return cached_wav2vec(checkpoint, features, device)
