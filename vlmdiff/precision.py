"""Faster test-time inference: reduced-precision autocast, channels-last memory, compiled networks.

``precision`` is one of :data:`PRECISIONS`: ``"fp32"`` runs everything in float32 (the paper's
numbers, bit for bit the default path); ``"bf16"`` and ``"fp16"`` autocast the networks (UNet + SGN,
autoencoder, feature extractor) to that type, while what needs float32 stays in float32: the posterior
sample, the DDIM update, the anomaly map and the metrics (the network outputs are cast back before them).
``bf16`` keeps float32's exponent range; ``fp16`` may overflow in large activations and is offered for
GPUs without bfloat16 units.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from torch import nn

from vlmdiff.choices import PRECISIONS as PRECISION_DTYPES

PRECISIONS = {name: dtype and getattr(torch, dtype) for name, dtype in PRECISION_DTYPES.items()}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is unknown; valid: {list(PRECISIONS)}")
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to the type of ``precision`` on ``device``'s type; nothing for ``"fp32"``."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@torch.no_grad()
def extract_features(extractor: Callable[[torch.Tensor], Sequence[torch.Tensor]], images: torch.Tensor,
                     precision: str = "fp32") -> list[torch.Tensor]:
    """The extractor's feature maps of ``images`` under ``precision``, returned in float32 for scoring."""
    with autocast(precision, images.device):
        features = extractor(images)
    return [f.float() for f in features]


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store the 4-D weights of ``model`` channels-last (NHWC), in place: faster convolutions on GPUs with
    tensor cores, the same values. Returns ``model``."""
    return model.to(memory_format=torch.channels_last)


def compiled_networks(model: nn.Module) -> list[nn.Module]:
    """What :func:`compile_networks` compiles: the UNet, the SGN and the autoencoder's decoder."""
    return [model.model.diffusion_model, model.control_model, model.first_stage_model.decoder]


def compile_networks(model: nn.Module, **compile_kwargs) -> nn.Module:
    """``torch.compile`` the UNet, the SGN and the decoder of a VLMDiff model, in place.

    ``nn.Module.compile`` keeps the modules (and so the state-dict keys) as they are. Compilation happens
    at the first call of each input shape: warm up before timing. ``compile_kwargs`` go to
    ``torch.compile`` (e.g. ``mode="max-autotune"``, ``backend="eager"``). Returns ``model``.
    """
    for module in compiled_networks(model):
        module.compile(**compile_kwargs)
    return model


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None
