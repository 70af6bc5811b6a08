"""The ResNet-50 feature backbone of the EMOCA/DECA encoders: torchvision's when it imports.

EMOCA's and DECA's ``ResnetEncoder`` put a ResNet-50 without its classifier (global
average pool -> (N, 2048) features) in front of a small regressor, and their checkpoints
name its parameters as torchvision does. :func:`resnet50_backbone` builds torchvision's
``resnet50`` (its ``fc`` replaced by an identity, so no ``fc.*`` parameters) when
torchvision imports, else the hand-written copy in :mod:`dpl_assets.face3d.resnet_torch`
with the same parameter names, shapes, initialisation and output. Either loads an official
state dict with ``strict=True``.
"""

from __future__ import annotations

import functools

from torch import nn

RESNET50_FEATURES = 2048
"""Width of the pooled feature vector (layer4's channels)."""


@functools.cache
def torchvision_available() -> bool:
    """True when ``torchvision.models.resnet50`` imports (checked once per process)."""
    try:
        from torchvision.models import resnet50  # noqa: F401
    except Exception:  # ImportError, or a RuntimeError/OSError from a build for another torch
        return False
    return True


def resnet50_backbone() -> nn.Module:
    """A randomly initialised ResNet-50 backbone: images (N, 3, H, W) -> features (N, 2048).

    torchvision's ``resnet50(weights=None)`` with ``fc = Identity`` when
    :func:`torchvision_available`, else :class:`~dpl_assets.face3d.resnet_torch.ResNet50Backbone`.
    Inputs are used as given (EMOCA and DECA feed RGB in [0, 1] without mean/std
    normalisation). Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
    ...), as in the official checkpoints.
    """
    if torchvision_available():
        from torchvision.models import resnet50

        model = resnet50(weights=None)
        model.fc = nn.Identity()
        return model
    from dpl_assets.face3d.resnet_torch import ResNet50Backbone

    return ResNet50Backbone()
