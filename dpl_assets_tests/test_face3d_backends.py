"""Optional libraries of the 3D package: torchvision's ResNet-50 is used when it imports.

torchvision does not import on this machine, so its use is checked through a stand-in
``torchvision`` module whose ``resnet50`` builds a torchvision-shaped model (with its
1000-way ``fc``); the fallback is checked as it runs here.
"""

import sys
import types

import pytest
import torch
from torch import nn

from dpl_assets.face3d import resnet
from dpl_assets.face3d.resnet_torch import ResNet50Backbone


class TorchvisionShapedResNet(ResNet50Backbone):
    """torchvision's resnet50 as far as the backbone builder can tell: an ``fc`` classifier
    applied after the pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.fc: nn.Module = nn.Linear(resnet.RESNET50_FEATURES, 1000)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(super().forward(images))


@pytest.fixture
def stand_in_torchvision(monkeypatch):
    calls = []

    def resnet50(weights=None):
        calls.append(weights)
        return TorchvisionShapedResNet()

    models = types.ModuleType("torchvision.models")
    models.resnet50 = resnet50
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    resnet.torchvision_available.cache_clear()
    yield calls
    resnet.torchvision_available.cache_clear()


def test_torchvision_resnet50_without_classifier_when_it_imports(stand_in_torchvision):
    backbone = resnet.resnet50_backbone()
    assert stand_in_torchvision == [None]  # random weights, nothing downloaded
    assert isinstance(backbone, TorchvisionShapedResNet)
    assert isinstance(backbone.fc, nn.Identity)
    assert not any(key.startswith("fc.") for key in backbone.state_dict())
    assert list(backbone.state_dict()) == list(ResNet50Backbone().state_dict())
    with torch.no_grad():
        assert backbone.eval()(torch.rand(1, 3, 64, 64)).shape == (1, resnet.RESNET50_FEATURES)


@pytest.mark.skipif(resnet.torchvision_available(), reason="torchvision imports here")
def test_hand_written_resnet50_when_torchvision_does_not_import():
    assert type(resnet.resnet50_backbone()) is ResNet50Backbone
