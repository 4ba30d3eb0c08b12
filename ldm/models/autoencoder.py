"""The KL-regularised autoencoder (``AutoencoderKL``, the SD-1.x "kl-f8" VAE), docs/design.md §3.5."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ldm.modules.distributions import DiagonalGaussianDistribution
from ldm.modules.vae import Decoder, Encoder

DDCONFIG_KEYS = {"double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
                 "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv"}


class AutoencoderKL(nn.Module):
    """Image ↔ latent: ``encode(x)`` gives the posterior q(z|x), ``decode(z)`` the image.

    Keyword arguments are the reference YAML's ``first_stage_config.params``. ``lossconfig`` (``Identity``
    in the assembled model) and ``monitor`` are accepted and ignored: the finetuning loss lives in
    ``vlmdiff.ae_finetune``, and no loss weights are part of this module's state dict.
    """

    def __init__(self, *, embed_dim: int, ddconfig: Mapping, lossconfig: Mapping | None = None,
                 monitor: str | None = None, image_key: str = "jpg", colorize_nlabels: int | None = None):
        super().__init__()
        unknown = sorted(set(ddconfig) - DDCONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown ddconfig key(s) {unknown}; valid: {sorted(DDCONFIG_KEYS)}")
        if not ddconfig.get("double_z", True):
            raise ValueError("AutoencoderKL needs double_z: true (mean and log-variance)")
        self.image_key = image_key
        self.embed_dim = embed_dim
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        z = ddconfig["z_channels"]
        self.quant_conv = nn.Conv2d(2 * z, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)

    def moments(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised image → ``(B, 2·embed_dim, H/8, W/8)`` posterior mean and log-variance."""
        return self.quant_conv(self.encoder(x))

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        """``(B, 3, H, W)`` normalised image → posterior over ``(B, embed_dim, H/8, W/8)``."""
        return DiagonalGaussianDistribution(self.moments(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, embed_dim, h, w)`` (unscaled) latent → ``(B, 3, 8h, 8w)`` image."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None):
        """Returns ``(reconstruction, posterior)``."""
        posterior = self.encode(x)
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior
