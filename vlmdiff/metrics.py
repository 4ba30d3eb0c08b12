"""The seven metrics of the paper's tables, per class and averaged over classes (docs/design.md §7).

Two modes:

* ``"paper"`` (default) — the reference evaluator's definitions, so numbers compare with the paper: image
  score = 8× 8×8 average pooling then max, AUROC replaced by 1 − AUROC when below 0.5, AU-PRO on 200
  uniform thresholds ``np.arange(min, max, (max − min)/200)``, points with FPR < 0.3,
  FPR divided by its largest kept value, no end-point interpolation.
* ``"exact"`` — the exact definitions: image score = plain max, no flip, AU-PRO over every distinct
  score with linear interpolation at FPR 0.3, divided by 0.3.

Both share: image label = any non-zero mask pixel, pixel label = ``mask > 0``, 8-connected GT regions,
PRO = mean overlap over all regions of all of a class's images, FPR over all normal pixels of the class.

How the pixel metrics are computed without sorting every pixel of a class, in bounded memory
(:class:`MetricAccumulator`, two passes over the maps):

1. First pass: image scores and labels; the anomalous pixels' scores with their 8-connected region
   (labelled once per image); the class's min and max. Anomalous pixels are a small share of a class.
2. The distinct anomalous scores ``u_1 < … < u_m`` cut the score axis into cells: ``(−∞, u_1)``,
   ``{u_1}``, ``(u_1, u_2)``, …, ``{u_m}``, ``(u_m, ∞)``. Only the number of normal pixels in each cell
   matters: inside an open cell the true-positive count and the PRO are constant, so its distinct scores
   are collinear points of the ROC and PRO curves and add nothing to AP or F1-max. Second pass: the
   pixels are sorted a chunk at a time (no mask needed) and ``searchsorted`` gives, for every ``u_j``, how
   many are ``< u_j`` and ``≤ u_j``; these counts add over chunks, and the anomalous pixels' own counts,
   known from the first pass, are subtracted. The paper's 200 AU-PRO thresholds are counted the same way.
3. The cell counts, read from the highest score down, are exactly the cumulative TP/FP counts of the
   full ranking at every distinct score: AUROC, AP, F1-max and the exact AU-PRO follow, equal to the
   sort-everything computation (and to scikit-learn) up to float summation order.

The heavy second pass runs on a torch device when one is given (``device="cuda"``), NumPy otherwise.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from vlmdiff.choices import METRICS_MODES
from vlmdiff.scoring import image_scores

log = logging.getLogger(__name__)

METRICS = ("AUROC_I", "AP_I", "F1max_I", "AUROC_P", "AP_P", "F1max_P", "AUPRO")
MODES = METRICS_MODES
PRO_FPR_LIMIT = 0.3
PRO_THRESHOLDS = 200
CHUNK_PIXELS = 1 << 25  # pixels buffered, then sorted at a time (128 MiB of float32)
# 8-connected within each image of an (N, H, W) stack, never across images
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


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
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def curve_f1_max(tps, fps, n_pos, n_neg) -> float:
    """max over thresholds of 2PR/(P+R) = 2TP/(TP + FP + n_pos)."""
    if n_pos == 0:
        return float("nan")
    return float(np.max(2 * tps / (tps + fps + n_pos)))


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Image AUROC (ROC curve + trapezoid), AP and F1-max, with scikit-learn as the reference."""
    labels = np.asarray(labels).astype(int)
    if labels.size == 0 or labels.min() == labels.max():
        return {"AUROC_I": float("nan"), "AP_I": float("nan"), "F1max_I": float("nan")}
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return {"AUROC_I": float(auc(fpr, tpr)), "AP_I": float(average_precision_score(labels, scores)),
            "F1max_I": float(np.max(f1[np.isfinite(f1)]))}


def pro_exact_area(fpr: np.ndarray, pro: np.ndarray, max_fpr: float = PRO_FPR_LIMIT) -> float:
    """Trapezoid area under an increasing (FPR, PRO) curve starting at (0, 0), up to ``max_fpr``
    (linearly interpolated there), divided by ``max_fpr``."""
    k = int(np.searchsorted(fpr, max_fpr, side="right"))  # points with fpr <= max_fpr: [:k]
    x, y = fpr[:k], pro[:k]
    if k < fpr.size and x[-1] < max_fpr:
        t = (max_fpr - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        x, y = np.r_[x, max_fpr], np.r_[y, pro[k - 1] + t * (pro[k] - pro[k - 1])]
    return float(np.trapezoid(y, x) / max_fpr)


def pro_paper_area(fpr: np.ndarray, pro: np.ndarray) -> float:
    """The reference's ``compute_pro`` tail: keep FPR < 0.3, divide FPR by its largest kept value, ``auc``."""
    keep = fpr < PRO_FPR_LIMIT
    if not keep.any() or fpr[keep].max() == 0:
        return float("nan")
    return float(auc(fpr[keep] / fpr[keep].max(), pro[keep]))


def label_regions(gt: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected regions of every image of an ``(N, H, W)`` boolean stack, numbered 1..R across it."""
    ids, n = ndimage.label(gt, structure=_REGION_STRUCTURE)
    return ids, int(n)


# ----------------------------------------------------------------------------- sorting backends
class _NumpyOps:
    """Sorting and counting in NumPy (its float sort is vectorised)."""

    def asarray(self, x):
        return np.asarray(x)

    def sort(self, x):
        return np.sort(x)

    def count(self, sorted_values, queries, right: bool) -> np.ndarray:
        return np.searchsorted(sorted_values, queries, side="right" if right else "left").astype(np.int64)


class _TorchOps:
    """The same on a torch device (a GPU sorts a chunk of normal pixels in milliseconds)."""

    def __init__(self, device):
        self.device = torch.device(device)

    def asarray(self, x):
        return torch.as_tensor(np.ascontiguousarray(x)).to(self.device)

    def sort(self, x):
        return torch.sort(x).values

    def count(self, sorted_values, queries, right: bool) -> np.ndarray:
        q = torch.as_tensor(queries).to(self.device)
        dtype = torch.promote_types(sorted_values.dtype, q.dtype)  # compare as NumPy does
        return torch.searchsorted(sorted_values.to(dtype), q.to(dtype), right=right).cpu().numpy().astype(np.int64)


def _ops(device) -> _NumpyOps | _TorchOps:
    return _NumpyOps() if device is None else _TorchOps(device)


# ----------------------------------------------------------------------------- one class
class ClassAccumulator:
    """Streaming metric state of one class: :meth:`add` every chunk, then :meth:`add_pixels` with every
    chunk's maps again, then :meth:`compute` (see the module docstring)."""

    def __init__(self, name: str, *, mode: str = "paper", pixel: bool = True, device=None,
                 chunk_pixels: int = CHUNK_PIXELS, num_thresholds: int = PRO_THRESHOLDS):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.name, self.mode, self.pixel = name, mode, pixel
        self.device, self.chunk_pixels, self.num_thresholds = device, chunk_pixels, num_thresholds
        self.scores, self.labels = [], []
        self.pos_values, self.pos_regions, self.region_sizes = [], [], []
        self.n_regions, self.n_pixels, self.lo, self.hi, self.dtype = 0, 0, None, None, None
        self._buffer, self._buffered, self._seen = [], 0, 0
        self._closed = False

    # ---- first pass
    def add(self, amaps: np.ndarray, gt: np.ndarray | None, labels: np.ndarray | None = None,
            scores: np.ndarray | None = None) -> None:
        """One chunk of the class: ``(n, H, W)`` maps, boolean ground truth (or None), optional image labels
        (default: any anomalous pixel) and image scores (default: the mode's score)."""
        if self._closed:
            raise RuntimeError(f"class {self.name!r}: the second pass has started")
        amaps = np.asarray(amaps)
        anomalous = None if gt is None else gt.reshape(len(gt), -1).any(axis=1)
        if labels is None:
            if gt is None:
                raise ValueError("need masks or image labels")
            labels = anomalous
        if scores is None:
            scores = image_scores(amaps, "pooled" if self.mode == "paper" else "max", device=self.device)
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores).all():
            raise ValueError(f"class {self.name!r}: {np.count_nonzero(~np.isfinite(scores))} image score(s) are "
                             f"NaN or infinite: the anomaly maps hold non-finite values")
        self.scores.append(scores)
        self.labels.append(np.asarray(labels).astype(bool))
        if not self.pixel or gt is None:
            self.pixel = False
            return
        if self.dtype is None:
            self.dtype = amaps.dtype
        elif amaps.dtype != self.dtype:
            raise ValueError(f"class {self.name!r}: maps of dtype {amaps.dtype} after maps of dtype {self.dtype}")
        lo, hi = amaps.min(), amaps.max()
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)
        self.n_pixels += amaps.size
        if anomalous.any():
            gt, amaps = gt[anomalous], amaps[anomalous]
            ids, n = label_regions(gt)
            self.pos_values.append(amaps[gt])
            self.pos_regions.append(ids[gt] - 1 + self.n_regions)
            self.region_sizes.append(np.bincount(ids.ravel(), minlength=n + 1)[1:])
            self.n_regions += n

    def _close_first_pass(self) -> None:
        """Fix the cell edges (the distinct anomalous scores) and the paper's threshold grid."""
        self._closed = True
        if not self.pixel:
            return
        values = np.concatenate(self.pos_values) if self.pos_values else np.zeros(0, self.dtype)
        regions = np.concatenate(self.pos_regions) if self.pos_regions else np.zeros(0, np.int64)
        sizes = np.concatenate(self.region_sizes) if self.region_sizes else np.zeros(0, np.int64)
        self.pos_values, self.pos_regions, self.region_sizes = values, regions, sizes
        self.n_pos, self.n_neg = values.size, self.n_pixels - values.size
        self.edges, inverse = np.unique(values, return_inverse=True)  # u_1 < … < u_m
        self.edge_pos = np.bincount(inverse, minlength=self.edges.size)
        weights = 1.0 / (float(sizes.size) * sizes[regions]) if regions.size else np.zeros(0)
        self.edge_pro = np.bincount(inverse, weights=weights, minlength=self.edges.size)  # PRO mass of u_j
        self.all_lt = np.zeros(self.edges.size, np.int64)  # pixels < u_j (anomalous ones included)
        self.all_le = np.zeros(self.edges.size, np.int64)  # pixels ≤ u_j
        self.thresholds = None
        if self.mode == "paper" and self.hi is not None and self.hi > self.lo:
            # NumPy's arange of the class's min and max, as the reference (possibly 201 values from rounding)
            self.thresholds = np.arange(self.lo, self.hi, (self.hi - self.lo) / self.num_thresholds)
            self.all_le_th = np.zeros(self.thresholds.size, np.int64)

    # ---- second pass
    def add_pixels(self, amaps: np.ndarray) -> None:
        """The chunk's maps again: every pixel is counted into the cells (buffered, sorted in chunks)."""
        if not self._closed:
            self._close_first_pass()
        if not self.pixel:
            return
        amaps = np.asarray(amaps)
        if amaps.dtype != self.dtype:
            raise ValueError(f"class {self.name!r}: maps of dtype {amaps.dtype} in the second pass, {self.dtype} "
                             f"in the first")
        self._buffer.append(amaps.ravel())
        self._buffered += amaps.size
        if self._buffered >= self.chunk_pixels:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        ops = _ops(self.device)
        values = self._buffer[0] if len(self._buffer) == 1 else np.concatenate(self._buffer)
        self._buffer, self._buffered = [], 0
        values = ops.sort(ops.asarray(values))
        self._seen += int(values.shape[0])
        if self.edges.size:
            self.all_lt += ops.count(values, self.edges, right=False)
            self.all_le += ops.count(values, self.edges, right=True)
        if self.thresholds is not None:
            self.all_le_th += ops.count(values, self.thresholds, right=True)

    # ---- results
    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normal-pixel counts, anomalous-pixel counts and PRO mass of the non-empty cells, highest first."""
        m = self.edges.size
        neg = np.zeros(2 * m + 1, np.int64)
        pos = np.zeros(2 * m + 1, np.int64)
        pro = np.zeros(2 * m + 1, np.float64)
        if m:
            pos_le = np.cumsum(self.edge_pos)
            neg_le, neg_lt = self.all_le - pos_le, self.all_lt - (pos_le - self.edge_pos)
            neg[0] = neg_lt[0]
            neg[1::2] = neg_le - neg_lt  # ties with u_j
            neg[2:-1:2] = neg_lt[1:] - neg_le[:-1]  # strictly between u_j and u_{j+1}
            neg[-1] = self.n_neg - neg_le[-1]
            pos[1::2], pro[1::2] = self.edge_pos, self.edge_pro
        else:
            neg[0] = self.n_neg
        keep = (neg + pos)[::-1] > 0
        return neg[::-1][keep], pos[::-1][keep], pro[::-1][keep]

    def pixel_metrics(self) -> dict[str, float]:
        neg, pos, pro = self.cells()
        tps, fps = np.cumsum(pos), np.cumsum(neg)
        curve = (tps, fps, self.n_pos, self.n_neg)
        out = {"AUROC_P": curve_auroc(*curve), "AP_P": curve_ap(*curve), "F1max_P": curve_f1_max(*curve)}
        if self.n_regions == 0 or self.n_neg == 0:
            out["AUPRO"] = float("nan")
        elif self.mode == "exact":
            out["AUPRO"] = pro_exact_area(np.r_[0.0, fps / self.n_neg], np.r_[0.0, np.cumsum(pro)])
        else:
            out["AUPRO"] = self._aupro_paper()
        return out

    def _aupro_paper(self) -> float:
        if self.thresholds is None:
            log.warning("AU-PRO (paper mode) is undefined for a constant map (the reference raises): NaN")
            return float("nan")
        t = self.thresholds.size
        # an anomalous pixel is predicted anomalous at threshold k iff its value > θ_k iff k < #{θ < value}
        bins = np.searchsorted(self.thresholds, self.pos_values, side="left")
        hist = np.bincount(self.pos_regions.astype(np.int64) * (t + 1) + bins, minlength=self.n_regions * (t + 1))
        above = np.cumsum(hist.reshape(self.n_regions, t + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (R, T)
        pro = (above / self.region_sizes[:, None]).mean(axis=0)
        neg_above = self.n_neg - (self.all_le_th - self._pos_le(self.thresholds))  # normal pixels > θ_k
        return pro_paper_area(neg_above / self.n_neg, pro)

    def _pos_le(self, queries: np.ndarray) -> np.ndarray:
        """Anomalous pixels ≤ each query value."""
        cum = np.r_[0, np.cumsum(self.edge_pos)]
        return cum[np.searchsorted(self.edges, queries, side="right")]

    def compute(self) -> dict[str, float]:
        """The seven metrics of the class (NaN where undefined)."""
        if not self._closed:
            self._close_first_pass()
        labels, scores = np.concatenate(self.labels), np.concatenate(self.scores)
        out = image_metrics(scores, labels)
        if self.pixel:
            self._flush()
            if self._seen != self.n_pixels:
                raise RuntimeError(f"class {self.name!r}: the second pass saw {self._seen} pixels, the first "
                                   f"{self.n_pixels}: every chunk must be given to both passes")
            out.update(self.pixel_metrics())
        else:
            out.update({"AUROC_P": float("nan"), "AP_P": float("nan"), "F1max_P": float("nan"),
                        "AUPRO": float("nan")})
        if self.mode == "paper":  # the reference reports 1 − AUROC below 0.5 (image and pixel)
            for key in ("AUROC_I", "AUROC_P"):
                if out[key] < 0.5:
                    out[key] = 1.0 - out[key]
        return {k: out[k] for k in METRICS}

    def image_results(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, labels)`` of the class's images in the order they were added."""
        return np.concatenate(self.scores), np.concatenate(self.labels)


# ----------------------------------------------------------------------------- all classes
class MetricAccumulator:
    """Per-class streaming metrics over chunks whose classes may be interleaved.

    Call :meth:`update` on every chunk, then :meth:`update_pixels` on every chunk's maps again (same
    chunks, any order), then :meth:`compute`. Memory: the anomalous pixels, the image scores and
    sorting buffers of at most about ``chunk_pixels`` pixels in all.
    """

    def __init__(self, mode: str = "paper", *, pixel: bool = True, device=None, chunk_pixels: int = CHUNK_PIXELS):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.pixel, self.device, self.chunk_pixels = mode, pixel, device, chunk_pixels
        self.classes: dict[str, ClassAccumulator] = {}
        self._second = False

    @staticmethod
    def _split(clsnames: Sequence[str], n: int):
        names = np.asarray(clsnames)
        if names.shape != (n,):
            raise ValueError(f"{n} maps but {names.size} class names")
        for cls in sorted(set(names.tolist())):
            rows = names == cls
            yield cls, (slice(None) if rows.all() else rows)

    def update(self, amaps: np.ndarray, masks: np.ndarray | None, clsnames: Sequence[str],
               labels: np.ndarray | None = None, scores: np.ndarray | None = None) -> None:
        """First pass over one chunk: ``(n, H, W)`` maps, masks (``> 0`` anomalous) or None, n class names."""
        amaps = np.asarray(amaps)
        if amaps.ndim != 3:
            raise ValueError(f"anomaly maps must be (N, H, W), got {amaps.shape}")
        if masks is not None and np.shape(masks) != amaps.shape:
            raise ValueError(f"masks {np.shape(masks)} do not match amaps {amaps.shape}")
        if self._second:
            raise RuntimeError("the second pass has started")
        gt = None if masks is None or not self.pixel else np.asarray(masks) > 0
        for cls, rows in self._split(clsnames, len(amaps)):
            acc = self.classes.get(cls)
            if acc is None:
                acc = self.classes[cls] = ClassAccumulator(cls, mode=self.mode, pixel=self.pixel,
                                                           device=self.device, chunk_pixels=self.chunk_pixels)
            acc.add(amaps[rows], None if gt is None else gt[rows], None if labels is None else np.asarray(labels)[rows],
                    None if scores is None else np.asarray(scores)[rows])

    @property
    def needs_second_pass(self) -> bool:
        return any(acc.pixel for acc in self.classes.values())

    def update_pixels(self, amaps: np.ndarray, clsnames: Sequence[str]) -> None:
        """Second pass over one chunk's maps (no masks needed)."""
        self._second = True
        amaps = np.asarray(amaps)
        for cls, rows in self._split(clsnames, len(amaps)):
            if cls not in self.classes:
                raise KeyError(f"class {cls!r} appears only in the second pass")
            self.classes[cls].add_pixels(amaps[rows])
        buffers = {cls: acc._buffered for cls, acc in self.classes.items()}
        while sum(buffers.values()) > self.chunk_pixels:  # classes interleaved: flush the fullest buffers
            cls = max(buffers, key=buffers.get)
            self.classes[cls]._flush()
            buffers[cls] = 0

    def compute(self) -> dict[str, dict[str, float]]:
        """``{class: {metric: value}, "mean": {...}}`` with keys :data:`METRICS`, fractions in [0, 1]."""
        results = {cls: self.classes[cls].compute() for cls in sorted(self.classes)}
        results["mean"] = mean_over_classes(results)
        return results


def mean_over_classes(per_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """Unweighted mean over classes (classes where a metric is undefined are left out, with a warning)."""
    mean = {}
    for key in METRICS:
        values = np.array([m[key] for m in per_class.values()], dtype=float)
        if np.isnan(values).any() and not np.isnan(values).all():
            log.warning("%s undefined for %d class(es); the mean is over the others", key, np.isnan(values).sum())
        mean[key] = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
    return mean


def evaluate_stream(chunks: Callable[[], Iterable[tuple]], mode: str = "paper", *, pixel: bool = True,
                    device=None, chunk_pixels: int = CHUNK_PIXELS) -> MetricAccumulator:
    """Both passes over ``chunks()``, a callable returning a fresh iterable of ``(amaps, masks, clsnames,
    labels)`` tuples (``masks`` and ``labels`` may be None) each time it is called.

    Returns:
        The filled :class:`MetricAccumulator`; ``.compute()`` gives the results.
    """
    acc = MetricAccumulator(mode, pixel=pixel, device=device, chunk_pixels=chunk_pixels)
    for amaps, masks, clsnames, labels in chunks():
        acc.update(amaps, masks, clsnames, labels)
    if acc.needs_second_pass:
        for amaps, _, clsnames, _ in chunks():
            acc.update_pixels(amaps, clsnames)
    return acc


def evaluate(amaps: np.ndarray, masks: np.ndarray | None, clsnames: Sequence[str], mode: str = "paper",
             labels: np.ndarray | None = None, *, device=None) -> dict[str, dict[str, float]]:
    """Metrics per class and their mean, for maps held in memory.

    Args:
        amaps: ``(N, H, W)`` anomaly maps (float32 or float64).
        masks: ``(N, H, W)`` ground-truth masks (``> 0`` is anomalous), or None (image labels only).
        clsnames: N class names (images of a class may be interleaved).
        mode: ``"paper"`` or ``"exact"``.
        labels: optional ``(N,)`` image labels (needed when ``masks`` is None).
        device: torch device for the counting pass (None: NumPy on the CPU).

    Returns:
        ``{class: {metric: value}, "mean": {...}}`` with keys :data:`METRICS`, fractions in [0, 1].
    """
    return evaluate_stream(lambda: [(amaps, masks, clsnames, labels)], mode, pixel=masks is not None,
                           device=device).compute()


def class_metrics(amaps: np.ndarray, masks: np.ndarray | None, mode: str = "paper",
                  labels: np.ndarray | None = None, scores: np.ndarray | None = None) -> dict[str, float]:
    """The seven metrics of one class held in memory (``scores``: precomputed image scores)."""
    acc = ClassAccumulator("class", mode=mode, pixel=masks is not None)
    gt = None if masks is None else np.asarray(masks) > 0
    acc.add(amaps, gt, labels, scores)
    if gt is not None:
        acc.add_pixels(amaps)
    return acc.compute()


def aupro_paper(amaps: np.ndarray, gt: np.ndarray) -> float:
    """The reference's ``compute_pro`` on one class: 200 uniform thresholds, FPR < 0.3, FPR / max(FPR)."""
    return class_metrics(amaps, gt, "paper", labels=np.zeros(len(amaps)), scores=np.zeros(len(amaps)))["AUPRO"]


def aupro_exact(amaps: np.ndarray, gt: np.ndarray) -> float:
    """Exact AU-PRO of one class: every distinct score a threshold, trapezoid to FPR 0.3 (interpolated), / 0.3."""
    return class_metrics(amaps, gt, "exact", labels=np.zeros(len(amaps)), scores=np.zeros(len(amaps)))["AUPRO"]
