"""ResNet-50 in the torchvision/timm checkpoint layout (``conv1, bn1, layer1..4, fc``), returning stage maps.

The network is torchvision's own ResNet-50 (Bottleneck v1.5: stride in the 3×3 convolution); only the
forward differs, returning the stage outputs instead of class scores (docs/design.md D22).
"""

from __future__ import annotations

import torch
from torchvision.models.resnet import Bottleneck, ResNet


class ResNet50(ResNet):
    """Returns the outputs of ``layer1..layer4`` (strides 4, 8, 16, 32); ``fc`` only with ``num_classes``
    (DINO's backbone file has none)."""

    def __init__(self, num_classes: int = 0):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes or 1000)
        if not num_classes:
            del self.fc

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs
