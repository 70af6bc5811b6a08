"""The hand-written ResNet-50 backbone: the fallback when torchvision does not import.

:func:`dpl_assets.face3d.resnet.resnet50_backbone` uses torchvision's model when it can;
this module is what runs otherwise (torchvision's wheel does not import beside this
machine's torch). EMOCA's and DECA's checkpoints store the backbone under torchvision's
parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ...), so
this module uses exactly those names and shapes: an official state dict loads by name with
``strict=True`` into either implementation.

Architecture (He et al. 2016, the "v1.5" variant used by torchvision and DECA: the stride
of a downsampling block sits on its 3x3 convolution):

- stem: 7x7 conv stride 2 (3 -> 64), BatchNorm, ReLU, 3x3 max-pool stride 2;
- four stages of bottleneck blocks, ``[3, 4, 6, 3]`` blocks with widths 64, 128, 256, 512
  (outputs 4x wider: 256, 512, 1024, 2048); stages 2-4 halve the resolution;
- global average pool -> (N, 2048).

23,508,032 trainable parameters (torchvision's resnet50 minus its 2,049,000-parameter fc).
"""

from __future__ import annotations

import torch
from torch import nn

RESNET50_BLOCKS = (3, 4, 6, 3)
"""Bottleneck blocks per stage of ResNet-50."""
STAGE_WIDTHS = (64, 128, 256, 512)
"""Inner width of the bottleneck blocks of each stage."""
BOTTLENECK_EXPANSION = 4
"""A bottleneck block's output is this many times its inner width."""


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus a shortcut.

    ``downsample`` (1x1 conv + BatchNorm) projects the shortcut when the block changes the
    width or the resolution; it is ``None`` otherwise, so no parameters exist under that
    name (as in torchvision's state dict).
    """

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, 4 * width, H / stride, W / stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet50Backbone(nn.Module):
    """ResNet-50 up to the global average pool: images (N, 3, H, W) -> features (N, 2048).

    Inputs are used as given (EMOCA and DECA feed RGB in [0, 1] without mean/std
    normalisation). The original DECA code pools with a fixed 7x7 window, which equals this
    global mean for its 224x224 inputs (layer4 is 7x7 there); the global mean also keeps
    other input sizes well defined.
    """

    def __init__(self, blocks: tuple[int, int, int, int] = RESNET50_BLOCKS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        stages = []
        for index, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            stage = [Bottleneck(channels, width, stride)]
            channels = width * BOTTLENECK_EXPANSION
            stage += [Bottleneck(channels, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_size = channels
        self._init_weights()

    def _init_weights(self) -> None:
        # He-normal convolutions, identity BatchNorm: the usual ResNet start, so a randomly
        # initialised backbone (tests, benchmarks) gives activations of sensible scale.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float -> (N, 2048) float; 224x224 gives a 7x7 map before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))
