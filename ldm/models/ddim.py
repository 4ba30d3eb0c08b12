"""DDIM sampling (Song et al., 2021) with classifier-free guidance, as the reference's ``DDIMSampler``.

Notation map (paper → code): α_t (DDIM's cumulative α, = ᾱ_t of DDPM) → ``alphas[i]`` for the i-th
DDIM timestep τ_i, α_{τ_{i−1}} → ``alphas_prev[i]`` (``alphas_cumprod[0]`` for i = 0, **not** 1),
σ_τ → ``sigmas[i]`` (0 for η = 0), ε_θ(x_τ) → ``eps``.

One step (DDIM eq. 12):
    x̂_0   = (x_τ − √(1−α_τ)·ε) / √α_τ                                  (no clipping)
    x_prev = √α_prev·x̂_0 + √(1−α_prev−σ²)·ε + σ·z
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """The "uniform" DDIM grid: ``arange(0, T, T // S) + 1`` (e.g. 1, 101, …, 901 for S = 10)."""
    if not 0 < num_steps <= num_train_timesteps:
        raise ValueError(f"ddim_steps must be in 1..{num_train_timesteps}, got {num_steps}")
    c = num_train_timesteps // num_steps
    # [:num_steps]: for step counts that do not divide T the reference's grid gets one step too many and
    # indexes past the schedule; for divisors (10, the paper's) this is the reference's grid exactly.
    return np.asarray(list(range(0, num_train_timesteps, c))[:num_steps]) + 1


@dataclass
class DDIMSchedule:
    """Per-DDIM-step coefficients, with the reference's dtypes (float32 α, float64 α_prev and σ)."""

    timesteps: np.ndarray            # (S,) int64, ascending
    alphas: torch.Tensor             # (S,) float32 = alphas_cumprod[timesteps]
    alphas_prev: np.ndarray          # (S,) float64
    sigmas: np.ndarray               # (S,) float64
    sqrt_one_minus_alphas: torch.Tensor  # (S,) float32, computed in float32


def make_ddim_schedule(alphas_cumprod: torch.Tensor, num_steps: int, eta: float = 0.0) -> DDIMSchedule:
    """DDIM coefficients for ``num_steps`` uniform steps over the model's ᾱ (a float32 buffer)."""
    steps = ddim_timesteps(num_steps, alphas_cumprod.shape[0])
    ac = alphas_cumprod.detach().cpu()
    alphas = ac[torch.from_numpy(steps)]
    alphas_prev = np.asarray([ac[0].item()] + ac[steps[:-1]].tolist())
    a = alphas.double().numpy()
    sigmas = eta * np.sqrt((1 - alphas_prev) / (1 - a) * (1 - a / alphas_prev))
    # NumPy's float32 sqrt, as the reference (torch's vectorised CPU sqrt can differ in the last bit).
    sqrt_one_minus = torch.from_numpy(np.sqrt((1.0 - alphas).numpy()))
    return DDIMSchedule(steps, alphas, alphas_prev, sigmas, sqrt_one_minus)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, schedule: DDIMSchedule, index: int,
              noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update at DDIM index ``index`` (float32 arithmetic as the reference).

    Returns:
        ``(x_prev, pred_x0)``, both shaped like ``x``.
    """
    def full(value) -> torch.Tensor:
        return torch.full((x.shape[0],) + (1,) * (x.ndim - 1), float(value), device=x.device)

    a_t, a_prev = full(schedule.alphas[index]), full(schedule.alphas_prev[index])
    sigma_t, sqrt_one_minus_at = full(schedule.sigmas[index]), full(schedule.sqrt_one_minus_alphas[index])
    pred_x0 = (x - sqrt_one_minus_at * eps) / a_t.sqrt()
    x_prev = a_prev.sqrt() * pred_x0 + (1.0 - a_prev - sigma_t ** 2).sqrt() * eps
    if schedule.sigmas[index] != 0:
        if noise is None:
            raise ValueError("eta > 0 needs a noise tensor for every step")
        x_prev = x_prev + sigma_t * noise
    return x_prev, pred_x0


def guided_eps(model: Callable, x: torch.Tensor, t: torch.Tensor, cond: dict, uncond: dict | None,
               guidance_scale: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Classifier-free guidance ``ε = ε_u + s·(ε_c − ε_u)`` with one model call on a ``2B`` batch.

    ``cond``/``uncond`` are ``{"c_crossattn": [tokens], "c_concat": [hint]}``. Without an unconditional
    branch (``uncond is None``) or with ``s = 1`` the conditional prediction is returned directly.

    Returns:
        ``(eps, eps_uncond, eps_cond)``; the last two are None when guidance was skipped.
    """
    if uncond is None or guidance_scale == 1.0:
        return model(x, t, cond), None, None
    c_in = {k: [torch.cat([u, c]) for u, c in zip(uncond[k], cond[k])] for k in cond}
    e_u, e_c = model(torch.cat([x, x]), torch.cat([t, t]), c_in).chunk(2)
    return e_u + guidance_scale * (e_c - e_u), e_u, e_c


def ddim_sample(model: Callable, x_start: torch.Tensor, cond: dict, schedule: DDIMSchedule, *,
                uncond: dict | None = None, guidance_scale: float = 1.0, last_index: int | None = None,
                generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """Run DDIM from ``x_start`` down through DDIM indices ``last_index, …, 0``.

    Args:
        model: ``model(x, t, cond) -> eps`` (``apply_model``).
        x_start: ``(B, C, h, w)`` latent the first step is applied to.
        last_index: first DDIM index visited (default: the last, i.e. all steps).
        callback: called as ``callback(index, timestep, x, eps_uncond, eps_cond, eps, pred_x0, x_prev)``.

    Returns:
        The latent after the step at ``timesteps[0]`` (still carrying ``√(1−ᾱ_0)·ε``).
    """
    x = x_start
    last_index = len(schedule.timesteps) - 1 if last_index is None else last_index
    for index in range(last_index, -1, -1):
        step = int(schedule.timesteps[index])
        t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
        eps, e_u, e_c = guided_eps(model, x, t, cond, uncond, guidance_scale)
        noise = None
        if schedule.sigmas[index] != 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_prev, pred_x0 = ddim_step(x, eps, schedule, index, noise)
        if callback is not None:
            callback(index, step, x, e_u, e_c, eps, pred_x0, x_prev)
        x = x_prev
    return x
