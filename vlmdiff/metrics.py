"""The seven metrics of the paper's tables, per class and averaged over classes (reference.md §6).

Two modes:

* ``"paper"`` (default) — the reference evaluator's definitions, so numbers compare with the paper: image
  score = 8× 8×8 average pooling then max, AUROC replaced by 1 − AUROC when below 0.5, AU-PRO on 200
  uniform thresholds ``arange(min, max, (max − min)/200)`` in the maps' dtype, points with FPR < 0.3,
  FPR divided by its largest kept value, no end-point interpolation.
* ``"exact"`` — the exact definitions: image score = plain max, no flip, AU-PRO over every distinct
  score with linear interpolation at FPR 0.3, divided by 0.3.

Both share: image label = any non-zero mask pixel, pixel label = ``mask > 0``, 8-connected GT regions,
PRO = mean overlap over all regions of all of a class's images, FPR over all normal pixels of the class.
Pixel AUROC, AP and F1-max are exact in both modes and share one sort; AU-PRO labels the regions once and
counts overlaps for every threshold with one ``bincount`` (no per-threshold connected components).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from skimage.measure import label as label_regions
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from vlmdiff.scoring import image_scores

log = logging.getLogger(__name__)

METRICS = ("AUROC_I", "AP_I", "F1max_I", "AUROC_P", "AP_P", "F1max_P", "AUPRO")
MODES = ("paper", "exact")
PRO_FPR_LIMIT = 0.3


# ----------------------------------------------------------------------------- curves
def binary_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Cumulative true/false positives at every distinct score, from the highest score down.

    Returns:
        ``(tps, fps, n_pos, n_neg)``; ``tps[k]``, ``fps[k]`` count the samples scoring ≥ the k-th largest
        distinct score.
    """
    scores, labels = np.ravel(scores), np.ravel(labels).astype(bool)
    order = np.argsort(scores)[::-1]  # ties are grouped below: no stable sort needed
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # last index of each tie group
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = (last + 1) - tps
    return tps, fps, int(labels.sum()), int(labels.size - labels.sum())


def curve_auroc(tps, fps, n_pos, n_neg) -> float:
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float(np.trapezoid(np.r_[0, tps] / n_pos, np.r_[0, fps] / n_neg))


def curve_ap(tps, fps, n_pos, n_neg) -> float:
    """Σ (R_k − R_{k−1}) P_k: scikit-learn's ``average_precision_score``."""
    if n_pos == 0:
        return float("nan")
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def curve_f1_max(tps, fps, n_pos, n_neg) -> float:
    """max over thresholds of 2PR/(P+R) = 2TP/(TP + FP + n_pos)."""
    if n_pos == 0:
        return float("nan")
    return float(np.max(2 * tps / (tps + fps + n_pos)))


def pixel_metrics(amaps: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Exact pixel AUROC, AP and F1-max of one class from one shared sort."""
    curve = binary_curve(amaps, gt)
    return {"AUROC_P": curve_auroc(*curve), "AP_P": curve_ap(*curve), "F1max_P": curve_f1_max(*curve)}


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC (ROC curve + trapezoid), AP and F1-max, with scikit-learn as the reference."""
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return {"AUROC_I": float("nan"), "AP_I": float("nan"), "F1max_I": float("nan")}
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return {"AUROC_I": float(auc(fpr, tpr)), "AP_I": float(average_precision_score(labels, scores)),
            "F1max_I": float(np.max(f1[np.isfinite(f1)]))}


# ----------------------------------------------------------------------------- AU-PRO
def label_gt_regions(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected regions of every image, numbered across the class.

    Returns:
        ``(region_ids, sizes)``: ``(N, H, W)`` int64 with 0 = normal pixel and 1..R the regions; ``(R,)``
        region sizes.
    """
    ids = np.zeros(gt.shape, dtype=np.int64)
    offset = 0
    for i, mask in enumerate(gt):
        if mask.any():
            lab, n = label_regions(mask, connectivity=2, return_num=True)
            ids[i] = np.where(lab > 0, lab + offset, 0)
            offset += n
    sizes = np.bincount(ids.ravel(), minlength=offset + 1)[1:]
    return ids, sizes


def _counts_above(bins: np.ndarray, groups: np.ndarray, n_groups: int, n_bins: int) -> np.ndarray:
    """``out[g, k]`` = number of members of group g whose bin index is > k (k = 0..n_bins−1)."""
    hist = np.bincount(groups * (n_bins + 1) + bins, minlength=n_groups * (n_bins + 1))
    hist = hist.reshape(n_groups, n_bins + 1)
    return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]


def aupro_paper(amaps: np.ndarray, gt: np.ndarray, num_th: int = 200) -> float:
    """The reference's ``compute_pro``: 200 uniform thresholds, FPR < 0.3, FPR / max(FPR), trapezoid."""
    lo, hi = amaps.min(), amaps.max()
    if not hi > lo:
        log.warning("AU-PRO (paper mode) is undefined for a constant map (the reference raises): NaN")
        return float("nan")
    thresholds = np.arange(lo, hi, (hi - lo) / num_th)  # in the maps' dtype, as the reference
    ids, sizes = label_gt_regions(gt)
    if sizes.size == 0:
        return float("nan")
    # pixel p is predicted anomalous at threshold k iff amap > θ_k iff k < #{θ < amap}
    bins = np.searchsorted(thresholds, amaps.ravel(), side="left")
    groups = ids.ravel()  # 0 = normal pixels, 1..R = regions
    above = _counts_above(bins, groups, sizes.size + 1, thresholds.size)
    fpr = above[0] / max(int((groups == 0).sum()), 1)
    pro = (above[1:] / sizes[:, None]).mean(axis=0)
    keep = fpr < PRO_FPR_LIMIT
    if not keep.any() or fpr[keep].max() == 0:
        return float("nan")
    return float(auc(fpr[keep] / fpr[keep].max(), pro[keep]))


def aupro_exact(amaps: np.ndarray, gt: np.ndarray, max_fpr: float = PRO_FPR_LIMIT) -> float:
    """Exact AU-PRO: every distinct score a threshold, trapezoid to ``max_fpr`` (interpolated), / max_fpr."""
    ids, sizes = label_gt_regions(gt)
    if sizes.size == 0:
        return float("nan")
    groups = ids.ravel()
    n_neg = int((groups == 0).sum())
    weight = np.where(groups > 0, 1.0 / (sizes.size * np.r_[1, sizes][groups]), 0.0)
    order = np.argsort(amaps.ravel())[::-1]
    s = amaps.ravel()[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    pro = np.r_[0.0, np.cumsum(weight[order])[last]]
    fpr = np.r_[0.0, np.cumsum(groups[order] == 0)[last] / max(n_neg, 1)]
    k = int(np.searchsorted(fpr, max_fpr, side="right"))  # points with fpr <= max_fpr: [:k]
    x, y = fpr[:k], pro[:k]
    if k < fpr.size and x[-1] < max_fpr:
        t = (max_fpr - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        x, y = np.r_[x, max_fpr], np.r_[y, pro[k - 1] + t * (pro[k] - pro[k - 1])]
    return float(np.trapezoid(y, x) / max_fpr)


# ----------------------------------------------------------------------------- per class / all classes
def class_metrics(amaps: np.ndarray, masks: np.ndarray | None, mode: str = "paper",
                  labels: np.ndarray | None = None, scores: np.ndarray | None = None) -> dict[str, float]:
    """The seven metrics of one class.

    Args:
        amaps: ``(N, H, W)`` anomaly maps.
        masks: ``(N, H, W)`` ground truth (soft masks allowed: ``> 0`` is anomalous), or None when only
            image labels are known (pixel metrics are then NaN).
        labels: image labels; default: any non-zero mask pixel.
        scores: precomputed image scores (default: from ``amaps`` by the mode's method).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    gt = None if masks is None else np.asarray(masks) > 0
    if labels is None:
        if gt is None:
            raise ValueError("need masks or image labels")
        labels = gt.reshape(len(gt), -1).any(axis=1)
    if scores is None:
        scores = image_scores(amaps, "pooled" if mode == "paper" else "max")
    out = image_metrics(scores, labels)
    if gt is None:
        out.update({"AUROC_P": float("nan"), "AP_P": float("nan"), "F1max_P": float("nan"), "AUPRO": float("nan")})
    else:
        out.update(pixel_metrics(amaps, gt))
        out["AUPRO"] = aupro_paper(amaps, gt) if mode == "paper" else aupro_exact(amaps, gt)
    if mode == "paper":  # the reference reports 1 − AUROC below 0.5 (image and pixel)
        for key in ("AUROC_I", "AUROC_P"):
            if out[key] < 0.5:
                out[key] = 1.0 - out[key]
    return {k: out[k] for k in METRICS}


def mean_over_classes(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over classes (classes where a metric is undefined are left out, with a warning)."""
    mean = {}
    for key in METRICS:
        values = np.array([m[key] for m in per_class.values()], dtype=float)
        if np.isnan(values).any() and not np.isnan(values).all():
            log.warning("%s undefined for %d class(es); the mean is over the others", key, np.isnan(values).sum())
        mean[key] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
    return mean


def evaluate(amaps: np.ndarray, masks: np.ndarray | None, clsnames: Sequence[str], mode: str = "paper",
             labels: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Metrics per class and their mean.

    Args:
        amaps: ``(N, H, W)`` anomaly maps (float32 or float64).
        masks: ``(N, H, W)`` ground-truth masks, or None (image labels only).
        clsnames: N class names (images of a class may be interleaved).
        mode: ``"paper"`` or ``"exact"``.
        labels: optional ``(N,)`` image labels (needed when ``masks`` is None).

    Returns:
        ``{class: {metric: value}, "mean": {...}}`` with keys :data:`METRICS`, fractions in [0, 1].
    """
    amaps = np.asarray(amaps)
    clsnames = np.asarray(clsnames)
    if amaps.ndim != 3 or len(clsnames) != len(amaps):
        raise ValueError(f"amaps must be (N, H, W) with N class names; got {amaps.shape} and {len(clsnames)} names")
    if masks is not None and np.shape(masks) != amaps.shape:
        raise ValueError(f"masks {np.shape(masks)} do not match amaps {amaps.shape}")
    results = {}
    for cls in sorted(set(clsnames.tolist())):
        idx = np.flatnonzero(clsnames == cls)
        results[cls] = class_metrics(amaps[idx], None if masks is None else np.asarray(masks)[idx], mode,
                                     None if labels is None else np.asarray(labels)[idx])
    results["mean"] = mean_over_classes(results)
    return results
