"""The diagonal Gaussian posterior q(z|x) of the KL autoencoder (docs/design.md §3.5)."""

from __future__ import annotations

import torch


class DiagonalGaussianDistribution:
    """Gaussian with diagonal covariance from ``moments = [mean, logvar]`` stacked on the channel axis.

    ``logvar`` is clamped to [−30, 20] as in LDM.
    """

    def __init__(self, moments: torch.Tensor, deterministic: bool = False):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)
        if deterministic:
            self.var = self.std = torch.zeros_like(self.mean)

    def sample(self, noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std·ε``; ε is ``noise`` when given, else drawn (from ``generator`` if given)."""
        if noise is None:
            noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        return self.mean + self.std * noise.to(device=self.mean.device, dtype=self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: "DiagonalGaussianDistribution | None" = None) -> torch.Tensor:
        """KL divergence to N(0, I) (or to ``other``), summed over C, H, W: shape ``(B,)``."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        dims = [1, 2, 3]
        if other is None:
            return 0.5 * torch.sum(self.mean ** 2 + self.var - 1.0 - self.logvar, dim=dims)
        return 0.5 * torch.sum((self.mean - other.mean) ** 2 / other.var + self.var / other.var - 1.0
                               - self.logvar + other.logvar, dim=dims)

    def nll(self, sample: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``sample``, summed over C, H, W."""
        if self.deterministic:
            return torch.zeros(sample.shape[0], device=sample.device)
        log_two_pi = 1.8378770664093453
        return 0.5 * torch.sum(log_two_pi + self.logvar + (sample - self.mean) ** 2 / self.var, dim=[1, 2, 3])
