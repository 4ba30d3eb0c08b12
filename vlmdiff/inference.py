"""Scoring images with a trained model: per-image noise, reconstruction, anomaly maps and image scores.

The random draws of an image (its posterior sample and the ``q_sample`` noise of the start latent) come
from a generator seeded by the run's seed and the image's key (its path relative to the dataset root or
the predicted folder), so an image's map and score do not depend on its batch, its companions, the order,
the number of processes or where an interrupted run resumed. Test runs (:mod:`vlmdiff.testing`) and
predictions (:mod:`vlmdiff.predict`) both score through :func:`score_images`.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from vlmdiff.scoring import anomaly_map, image_score_method, image_scores


def image_seed(seed: int, key: str) -> int:
    """A 63-bit generator seed of ``(seed, key)``: the first 8 bytes of ``sha256(f"{seed}\\0{key}")``."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_noise(keys: Sequence[str], seed: int, shape: tuple[int, int, int],
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(posterior_noise, q_sample_noise)``, each ``(len(keys), *shape)`` float32 standard normal.

    Each image's pair is drawn on the CPU from its own generator (seeded by :func:`image_seed`), the
    posterior noise first, then the ``q_sample`` noise; the result is then moved to ``device``.
    """
    shape = tuple(int(s) for s in shape)
    posterior, start = [torch.empty(0, *shape)] * 2
    draws = []
    for key in keys:
        g = torch.Generator().manual_seed(image_seed(seed, str(key)))
        draws.append((torch.randn(shape, generator=g), torch.randn(shape, generator=g)))
    if draws:
        posterior, start = (torch.stack(d) for d in zip(*draws))
    return posterior.to(device), start.to(device)


@torch.no_grad()
def score_images(model, extractor, images: torch.Tensor, keys: Sequence[str], *, seed: int = 0,
                 captions: Sequence[str] | None = None, hints: torch.Tensor | None = None, ddim_steps: int = 10,
                 guidance_scale: float = 9.0, start_timestep: int = 999, start_mode: str = "reference",
                 sigma: float = 5.0, image_score: str | None = None,
                 return_ae_reconstruction: bool = False, batch_invariant: bool = True,
                 precision: str = "fp32", channels_last: bool = False) -> dict:
    """Reconstruct ``images`` ``(B, 3, H, W)`` with per-image noise and compare features.

    With ``batch_invariant`` (the default) every image runs through the networks on its own (a batch of
    one; ``False``: the whole batch at once, faster on a GPU, the same noise, but an image's map may then
    differ in its last bits with its batch companions): convolution and matrix kernels are
    chosen, and blocked, by the batch's shape, so a larger batch would change an image's result in the
    last bits depending on how many companions it has. Batches still set how many images are loaded and
    stored together; on a CPU the per-image passes cost little (about 10 % on the tiny model).

    Args:
        keys: one stable name per image (seeds its noise, :func:`image_noise`).
        precision, channels_last: see :meth:`vlmdiff.model.VLMDiff.reconstruct` (``"fp32"``: the paper's numbers).
        image_score: ``"pooled"`` or ``"max"`` to also return image scores (``"pooled"`` falls back to
            ``"max"`` on maps smaller than :data:`~vlmdiff.scoring.POOLED_MIN_SIDE`); None: maps only.

    Returns:
        ``{"maps": (B, H, W) float64, "samples": (B, 3, H, W) CPU tensor, "reconstruction": tensor or None}``
        and ``"scores"`` ``(B,)`` when ``image_score`` is given.
    """
    b = images.shape[0]
    if len(keys) != b:
        raise ValueError(f"{len(keys)} keys for {b} images")
    if captions is not None and len(captions) != b:
        raise ValueError(f"{len(captions)} captions for {b} images")
    device = next(model.parameters()).device
    posterior_noise, noise = image_noise(keys, seed, model.latent_shape(*images.shape[-2:]), device)
    from vlmdiff.precision import extract_features

    maps, samples, recons = [], [], []
    step = 1 if batch_invariant else max(b, 1)
    for i in range(0, b, step):
        j = i + step
        out = model.reconstruct(images[i:j], None if hints is None else hints[i:j],
                                None if captions is None else list(captions[i:j]), ddim_steps=ddim_steps,
                                guidance_scale=guidance_scale, start_timestep=start_timestep,
                                start_mode=start_mode, noise=noise[i:j], posterior_noise=posterior_noise[i:j],
                                return_ae_reconstruction=return_ae_reconstruction, precision=precision,
                                channels_last=channels_last)
        x, y = images[i:j].to(out["samples"].device), out["samples"]
        maps.append(anomaly_map(extract_features(extractor, x, precision), extract_features(extractor, y, precision),
                                images.shape[-1], sigma=sigma))
        samples.append(y.cpu())
        if return_ae_reconstruction:
            recons.append(out["reconstruction"].cpu())
    maps = np.concatenate(maps) if maps else np.zeros((0, *images.shape[-2:]))
    res = {"maps": maps, "samples": torch.cat(samples) if samples else images[:0].cpu(),
           "reconstruction": torch.cat(recons) if recons else None}
    if image_score is not None:
        method = image_score_method(image_score, maps.shape)
        res["scores"] = np.concatenate([image_scores(m[None], method) for m in maps]) if b else np.zeros(0)
    return res


# The settings of a test run config that decide an image's reconstruction and map.
SCORING_SETTINGS = ("seed", "ddim_steps", "guidance_scale", "start_timestep", "start_mode", "sigma", "batch_invariant",
                    "precision", "channels_last")


def scoring_settings(cfg) -> dict:
    """:func:`score_images`' keyword arguments from a run config (:data:`SCORING_SETTINGS`): test runs and
    predictions score with the same settings by the same call."""
    return {name: getattr(cfg, name) for name in SCORING_SETTINGS}
