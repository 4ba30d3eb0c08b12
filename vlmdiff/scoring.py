"""Anomaly maps from feature differences and the image-level score (docs/design.md §6.2, §6.3).

``anomaly_map`` is the reference's ``cal_anomaly_map`` (mode ``'a'``) applied to every batch item — the
reference keeps only item 0, which is why it tests at batch size 1 — followed by its Gaussian σ = 5.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

MODES = ("a", "mul")
IMAGE_SCORES = ("pooled", "max")
POOLED_MIN_SIDE = 57  # the pooled score's eight 8-wide valid pools span 57 pixels


def image_score_method(method: str, map_shape) -> str:
    """The image score that ``method`` gives on maps of ``map_shape`` (``(..., H, W)``): ``"pooled"`` needs
    maps of at least :data:`POOLED_MIN_SIDE` on each side, smaller maps get ``"max"``."""
    return "max" if method == "pooled" and min(map_shape[-2:]) < POOLED_MIN_SIDE else method


def level_maps(features_in: Sequence[torch.Tensor], features_out: Sequence[torch.Tensor],
               out_size: int | tuple[int, int]) -> list[torch.Tensor]:
    """Per level ``1 − cos(F, G)`` over channels (eps 1e-8), bilinearly upsampled (align_corners=True).

    Returns:
        One ``(B, H, W)`` float32 tensor per level.
    """
    if len(features_in) != len(features_out):
        raise ValueError(f"{len(features_in)} input feature levels vs {len(features_out)} reconstruction levels")
    size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    maps = []
    for fs, ft in zip(features_in, features_out):
        m = 1 - F.cosine_similarity(fs.float(), ft.float(), dim=1, eps=1e-8)  # (B, h, w)
        m = F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
        maps.append(m)
    return maps


def anomaly_map(features_in: Sequence[torch.Tensor], features_out: Sequence[torch.Tensor],
                out_size: int | tuple[int, int], sigma: float = 5.0, mode: str = "a") -> np.ndarray:
    """Pixel anomaly maps of a batch.

    Args:
        features_in, features_out: lists of ``(B, C_l, h_l, w_l)`` feature maps of the inputs and of their
            reconstructions.
        out_size: output side (or ``(H, W)``).
        sigma: Gaussian smoothing (SciPy, float64, mode ``reflect``, truncate 4); 0 disables it.
        mode: ``"a"`` sums the levels (the reference's choice), ``"mul"`` multiplies them.

    Returns:
        ``(B, H, W)`` float64.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    levels = [m.detach().cpu().numpy() for m in level_maps(features_in, features_out, out_size)]
    out = np.zeros(levels[0].shape, dtype=np.float64) if mode == "a" else np.ones(levels[0].shape, np.float64)
    for m in levels:
        out = out + m if mode == "a" else out * m  # float32 maps accumulated in float64, as the reference
    if sigma > 0:
        out = np.stack([gaussian_filter(a, sigma=sigma) for a in out])
    return out


def pooling_matrix(n: int, *, passes: int = 8, kernel: int = 8) -> np.ndarray:
    """``(n − passes·(kernel − 1), n)`` float64 matrix of ``passes`` successive valid box averages along one axis.

    Eight 8-wide averages compose into one 57-tap kernel whose weights are integers / 8⁸, exact in float64.
    """
    taps = np.ones(1)
    for _ in range(passes):
        taps = np.convolve(taps, np.ones(kernel))
    taps /= float(kernel) ** passes
    out = n - taps.size + 1
    if out < 1:
        raise ValueError(f"the pooled image score needs maps of at least {taps.size}x{taps.size} "
                         f"({passes} {kernel}x{kernel} valid pools), got side {n}; use the 'max' image score")
    matrix = np.zeros((out, n))
    for i in range(out):
        matrix[i, i:i + taps.size] = taps
    return matrix


def image_scores(amaps: np.ndarray | torch.Tensor, method: str = "pooled", *, chunk: int = 256,
                 device=None) -> np.ndarray:
    """Image-level anomaly scores of ``(N, H, W)`` maps.

    ``"pooled"`` is the reference's score: eight successive ``avg_pool2d(kernel 8, stride 1, no padding)``
    (a 57×57 valid smoothing that attenuates defects near the border), then the maximum. The pools are
    separable and linear, so they are applied as two float64 matrix products (equal to the pooling loop
    within float rounding, about 8× faster on a CPU). ``"max"`` is the plain maximum of the map.

    Args:
        device: torch device to compute on (default: the tensor's, or the CPU).

    Returns:
        ``(N,)`` float64.
    """
    if method not in IMAGE_SCORES:
        raise ValueError(f"image score must be one of {IMAGE_SCORES}, got {method!r}")
    amaps = torch.as_tensor(np.asarray(amaps) if not isinstance(amaps, torch.Tensor) else amaps)
    if device is not None:
        amaps = amaps.to(device)
    if method == "max":
        return amaps.flatten(1).max(dim=1).values.double().cpu().numpy()
    h, w = amaps.shape[-2:]
    rows = torch.from_numpy(pooling_matrix(h)).to(amaps.device)  # (h − 56, h)
    cols = torch.from_numpy(pooling_matrix(w)).T.to(amaps.device)  # (w, w − 56)
    scores = []
    for start in range(0, amaps.shape[0], chunk):
        x = amaps[start:start + chunk].double()
        pooled = rows @ (x @ cols)  # (n, h − 56, w − 56)
        scores.append(pooled.flatten(1).max(dim=1).values)
    return torch.cat(scores).cpu().numpy() if scores else np.zeros(0)
