"""Assemble the training-start VLMDiff weights from Stable Diffusion 1.5 and an autoencoder (docs/design.md §12.1).

For every key ``k`` of a freshly built model:

1. ``first_stage_model.<rest>`` ← the autoencoder checkpoint's ``<rest>`` (SD's own VAE when no
   autoencoder file is given);
2. ``control_<rest>`` ← SD's ``model.diffusion_<rest>`` (the SGN's encoder copy starts as the UNet encoder);
3. any other key ← the same key of SD;
4. keys SD cannot provide (SGN hint convs, zero convs, ``middle_block_out``, SFF convs, the schedule
   buffers, ``logvar``, CLIP's ``position_ids``) keep their fresh initialisation.

Optionally (:func:`apply_pretrained_sgn`, ``build_model.py --sgn``) a pretrained SGN replaces the whole SGN
and the UNet decoder keys it was trained with, as a ControlNet pretrained for Stable Diffusion would.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from vlmdiff.checkpoint import strip_prefix

log = logging.getLogger(__name__)

AE_PREFIX = "first_stage_model."
# Keys that legitimately keep their fresh initialisation.
NEW_KEY_PATTERNS = [re.compile(p) for p in (
    r"^control_model\.(input_hint_block|zero_convs|middle_block_out|down\d\d)\.",
    r"^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|"
    r"log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance|"
    r"posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|logvar)$",
    r"^cond_stage_model\.transformer\.text_model\.embeddings\.position_ids$",
)]


@dataclass
class AssemblyReport:
    """Where every key of the assembled model came from."""

    from_sd: list[str] = field(default_factory=list)
    from_ae: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.from_sd)} keys copied from Stable Diffusion, {len(self.from_ae)} from the "
                f"autoencoder, {len(self.new)} newly initialised")


def source_key(key: str) -> str:
    """The SD key a model key is copied from (``control_`` → ``model.diffusion_``)."""
    return "model.diffusion_" + key[len("control_"):] if key.startswith("control_") else key


def _take(target: torch.Tensor, value: torch.Tensor, key: str, source: str) -> torch.Tensor:
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"{source}: key {key!r} has shape {tuple(value.shape)}, the model expects "
                         f"{tuple(target.shape)} (is the config the right model size?)")
    return value.to(dtype=target.dtype)


def assemble_state_dict(model: nn.Module, sd_state: Mapping[str, torch.Tensor],
                        ae_state: Mapping[str, torch.Tensor] | None = None, *, sd_source: str = "SD checkpoint",
                        ae_source: str = "autoencoder checkpoint") -> tuple[dict, AssemblyReport]:
    """Build the assembled state dict by the reference's key-copy rule.

    Args:
        model: a freshly constructed VLMDiff (its initialisation fills the new keys).
        sd_state: Stable Diffusion 1.x state dict (``model.diffusion_model.*``, ``cond_stage_model.*``, …).
        ae_state: autoencoder state dict (``encoder.*``, ``decoder.*``, …; a ``first_stage_model.`` prefix is
            stripped). None takes SD's own ``first_stage_model.*``.

    Returns:
        ``(state_dict, report)``. Raises ValueError naming the file and keys when a required key is
        missing or mis-shaped.
    """
    if ae_state is None:
        ae_state, ae_source = strip_prefix(sd_state, AE_PREFIX), sd_source
    elif any(k.startswith(AE_PREFIX) for k in ae_state):
        ae_state = strip_prefix(ae_state, AE_PREFIX)
    own = model.state_dict()
    out, report, missing_sd, missing_ae = {}, AssemblyReport(), [], []
    for key, init in own.items():
        if key.startswith(AE_PREFIX):
            rest = key[len(AE_PREFIX):]
            if rest not in ae_state:
                missing_ae.append(rest)
                continue
            out[key] = _take(init, ae_state[rest], rest, ae_source)
            report.from_ae.append(key)
        elif source_key(key) in sd_state:
            out[key] = _take(init, sd_state[source_key(key)], source_key(key), sd_source)
            report.from_sd.append(key)
        elif any(p.search(key) for p in NEW_KEY_PATTERNS):
            out[key] = init
            report.new.append(key)
        else:
            missing_sd.append(source_key(key))
    if missing_ae:
        raise ValueError(f"{ae_source}: {len(missing_ae)} autoencoder key(s) missing, e.g. {missing_ae[:3]}")
    if missing_sd:
        raise ValueError(f"{sd_source}: {len(missing_sd)} Stable Diffusion key(s) missing, e.g. {missing_sd[:3]}")
    return out, report


SGN_START_PREFIXES = ("control_model.", "model.diffusion_model.output_blocks.", "model.diffusion_model.out.")


def apply_pretrained_sgn(state: dict, sgn_state: Mapping[str, torch.Tensor], *, source: str) -> int:
    """Replace, in an assembled ``state``, the SGN by a pretrained one (``control_model.*``: every key
    required) and the UNet decoder keys (``model.diffusion_model.output_blocks.*`` / ``out.*``) the file
    carries. Raises ValueError naming ``source`` for a missing, unexpected or mis-shaped key; returns the
    number of keys replaced."""
    foreign = sorted(k for k in sgn_state if not k.startswith(SGN_START_PREFIXES))
    if foreign:
        raise ValueError(f"{source}: {len(foreign)} key(s) are not part of an SGN start (control_model.*, the UNet "
                         f"decoder), e.g. {foreign[:3]}")
    missing = sorted(k for k in state if k.startswith("control_model.") and k not in sgn_state)
    if missing:
        raise ValueError(f"{source}: {len(missing)} SGN key(s) missing, e.g. {missing[:3]}")
    unknown = sorted(k for k in sgn_state if k not in state)
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} key(s) the model does not have, e.g. {unknown[:3]}")
    for key, value in sgn_state.items():
        state[key] = _take(state[key], value, key, source)
    return len(sgn_state)


def self_assembled_state_dict(model: nn.Module, ae_state: Mapping[str, torch.Tensor] | None = None):
    """Assemble from the model's own (randomly initialised) UNet and CLIP — for toy models without an SD
    checkpoint: the SGN encoder starts as a copy of the UNet encoder, exactly as with real SD weights."""
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("control_model.")}
    return assemble_state_dict(model, own, ae_state, sd_source="the model's own initialisation")
