"""Noise schedule and forward process of the DDPM/LDM (docs/design.md §4).

Notation map (paper → code): β_t → ``betas[t]``, ᾱ_t = Π_{s≤t}(1 − β_s) → ``alphas_cumprod[t]``,
ᾱ_{t−1} → ``alphas_cumprod_prev[t]`` (1 at t = 0).
"""

from __future__ import annotations

import numpy as np
import torch

# Registration order of the persistent buffers (equals the reference's state-dict order).
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


def make_beta_schedule(schedule: str, n_timestep: int, *, linear_start: float = 1e-4,
                       linear_end: float = 2e-2) -> np.ndarray:
    """β_0..β_{T−1} as float64.

    ``"linear"`` is LDM's name for a schedule that is linear in **sqrt** space:
    ``β_t = (√start + (√end − √start)·t/(T−1))²``. ``"linear_beta"`` is the truly linear one.
    """
    if schedule == "linear":
        return (torch.linspace(linear_start ** 0.5, linear_end ** 0.5, n_timestep, dtype=torch.float64, device="cpu") ** 2).numpy()
    if schedule == "linear_beta":
        return torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64, device="cpu").numpy()
    raise ValueError(f"unknown beta schedule {schedule!r}; valid: ['linear', 'linear_beta']")


def schedule_buffers(betas: np.ndarray, *, v_posterior: float = 0.0) -> dict[str, torch.Tensor]:
    """Every buffer the LDM registers for a schedule, computed in float64 and stored as float32.

    Returns:
        ``{name: (T,) float32}`` in :data:`SCHEDULE_BUFFERS` order, plus the non-persistent
        ``lvlb_weights`` (the zero-weighted VLB term's weights).
    """
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = (1 - v_posterior) * betas * (1.0 - ac_prev) / (1.0 - ac) + v_posterior * betas
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    out = {k: torch.tensor(values[k], dtype=torch.float32) for k in SCHEDULE_BUFFERS}
    lvlb = out["betas"] ** 2 / (2 * out["posterior_variance"] * torch.tensor(alphas, dtype=torch.float32)
                                * (1 - out["alphas_cumprod"]))
    lvlb[0] = lvlb[1]
    out["lvlb_weights"] = lvlb
    return out


def extract(a: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``a[t]`` shaped ``(B, 1, …, 1)`` to broadcast against a tensor of ``ndim`` dimensions."""
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, sqrt_alphas_cumprod: torch.Tensor,
             sqrt_one_minus_alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Forward process: ``x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε`` (indexing the float32 buffers)."""
    return (extract(sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)
