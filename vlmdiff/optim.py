"""The training optimiser: AdamW (fused on GPUs) or bitsandbytes' 8-bit AdamW (docs/design.md §10).

The reference trains with ``torch.optim.AdamW`` (lr 1e-5, weight decay 0.01). ``"adamw"`` is that
optimiser, with PyTorch's fused kernel when every parameter is on a CUDA device (one kernel launch for
the whole update instead of several per tensor; the same update up to float rounding). ``"adamw8bit"``
keeps both moment estimates in 8 bits (block-wise quantised): 2 bytes of state per parameter instead of
8, about 2.0 GB instead of 7.9 GB for the ~983 M trainable parameters of the full model. It needs the
optional ``bitsandbytes`` package and CUDA parameters.
"""

from __future__ import annotations

import inspect
import math
from typing import Iterable

import torch
from torch import nn

from vlmdiff.choices import OPTIMIZERS

FUSED_DEVICE_TYPES = ("cuda",)  # where "adamw" switches to the fused kernel


def supports_fused_adamw() -> bool:
    """Whether this PyTorch's ``AdamW`` accepts ``fused=True``."""
    return "fused" in inspect.signature(torch.optim.AdamW).parameters


def use_fused_adamw(params: Iterable[nn.Parameter], *, device_types: Iterable[str] | None = None,
                    supported: bool | None = None) -> bool:
    """True when every parameter lies on one of ``device_types`` (default :data:`FUSED_DEVICE_TYPES`)
    and this PyTorch has the fused kernel (``supported``, default: asked)."""
    devices = {p.device.type for p in params}
    allowed = set(FUSED_DEVICE_TYPES if device_types is None else device_types)
    supported = supports_fused_adamw() if supported is None else supported
    return bool(devices) and supported and devices <= allowed


def build_optimizer(params: Iterable[nn.Parameter], name: str = "adamw", *, lr: float,
                    weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over ``params``.

    Raises:
        ValueError: an unknown name, or ``adamw8bit`` with parameters off CUDA.
        ImportError: ``adamw8bit`` without ``bitsandbytes`` installed.
    """
    params = list(params)
    if name == "adamw":
        fused = use_fused_adamw(params)
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **({"fused": True} if fused else {}))
    if name == "adamw8bit":
        devices = sorted({p.device.type for p in params})
        if devices != ["cuda"]:
            raise ValueError(f"optimizer=adamw8bit runs on CUDA parameters only (bitsandbytes), these are on "
                             f"{', '.join(devices) or 'no device'}; use optimizer=adamw")
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError("optimizer=adamw8bit needs the optional package bitsandbytes "
                              "(pip install bitsandbytes)") from err
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r} is unknown; valid: {list(OPTIMIZERS)}")


def warmup_cosine_to_tenth(optimizer: torch.optim.Optimizer, steps: int, warmup: int = 0):
    """A scheduler (one ``step()`` per update) whose factor rises linearly over ``warmup`` updates, then
    follows a cosine from 1 down to a tenth at update ``steps``: the pretraining scripts' schedule."""
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warmup) / max(steps - warmup, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
