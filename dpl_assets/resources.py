"""Resources shared by a process: the torch device and loaded models.

Models are cached per process, keyed by everything that changes them, so a run (or a CLI
invocation made of several runs) loads each model once, however many videos it covers.
With several GPUs, ``device="auto"`` leases one GPU per process (``dpl_assets.devices``).
"""

from __future__ import annotations

import functools
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from dpl_assets.devices import acquire_device, default_lease_dir, visible_devices
from dpl_assets.nodes.wav2vec import Wav2vecExtractor


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda:0`` when a GPU is visible, else ``cpu``; ``cuda:N`` is checked."""
    if requested == "cpu":
        return requested
    import torch  # only when a GPU may be asked for: the package imports without torch

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

    ``device``: ``auto``, ``cpu`` or ``cuda:N``. ``auto`` is the CPU without a GPU, ``cuda:0``
    with one, and with several a GPU leased to this process for its lifetime (one lock file
    per GPU in ``lease_dir``), so concurrent runs and step processes each get their own.
    ``cpu`` and ``cuda:N`` bypass the lease. ``DPL_SIMULATED_GPUS=N`` simulates N GPUs
    (leases are real, the device is ``cpu``): a testing and dry-run aid.
    """

    device: str = "auto"
    lease_dir: str | None = Field(
        default=None,
        description="Folder of the GPU lock files (default: $DPL_DEVICE_LEASE_DIR, else "
        "{Dagster instance dir or DAGSTER_HOME}/device_leases). Local to the machine.",
    )
    lease_timeout: float | None = Field(
        default=None,
        description="Seconds to wait for a free GPU when all are leased (default: "
        "$DPL_DEVICE_LEASE_TIMEOUT, else 600).",
    )
    _instance_dir: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        instance = context.instance
        if instance is not None and instance.is_persistent:
            self._instance_dir = instance.root_directory

    def lease_folder(self) -> str:
        """Where this resource's leases live (see ``lease_dir``)."""
        if self.lease_dir:
            return self.lease_dir
        return str(default_lease_dir(self._instance_dir))

    def for_node(self, node_device: str) -> str:
        requested = node_device if node_device != "auto" else self.device
        if requested != "auto":
            return resolve_device(requested)
        count, simulated = visible_devices()
        if count < 2:  # nothing to share out: the CPU, the one GPU, or cpu when simulated
            return "cpu" if simulated else resolve_device("auto")
        leased = acquire_device(self.lease_folder(), timeout=self.lease_timeout)
        dg.get_dagster_logger().info(f"device auto -> {leased.describe()}")
        return leased.torch_device


@functools.lru_cache(maxsize=4)
def cached_wav2vec(
    checkpoint: str,
    features: str,
    device: str,
) -> Wav2vecExtractor:
    """A loaded extractor, reused for the life of the process."""
    return Wav2vecExtractor(checkpoint=checkpoint, features=features, device=device)


@functools.lru_cache(maxsize=2)
def cached_emoca(weights_path: str, device: str) -> Any:
    """Loaded EMOCA/DECA encoders (:func:`dpl_assets.face3d.weights.load_emoca`), per process."""
    from dpl_assets.face3d.weights import load_emoca

    return load_emoca(weights_path, device)


@functools.lru_cache(maxsize=2)
def cached_flame(model_path: str, embedding_path: str, n_shape: int, n_exp: int) -> Any:
    """A FLAME layer (:class:`dpl_assets.face3d.flame_layer.FlameLayer`) on the CPU, per process;
    the caller moves it to its device."""
    from dpl_assets.face3d.flame import FlameModel
    from dpl_assets.face3d.flame_layer import FlameLayer

    model = FlameModel.load(model_path, embedding_path, num_vertices=None)
    return FlameLayer(model, n_shape=n_shape, n_exp=n_exp)


@functools.lru_cache(maxsize=2)
def cached_template(path: str) -> Any:
    """The head template mesh (:func:`dpl_assets.face3d.obj.load_obj_template`)."""
    from dpl_assets.face3d.obj import load_obj_template

    return load_obj_template(path)
