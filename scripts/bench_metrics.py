#!/usr/bin/env python
"""Time and peak memory of the seven metrics (paper mode) on synthetic 256x256 maps, next to the
straightforward evaluator of the paper (connected components labelled again at each of the 200 AU-PRO
thresholds, scikit-learn curves for the rest) measured in the same run, and the ratio.

The straightforward loop is timed on a subset (--naive_images) and scaled linearly by the number of maps
(its cost is linear in the pixel count); the output says so.

    python scripts/bench_metrics.py                           # 2,000 and 20,000 maps
    python scripts/bench_metrics.py --sizes 500 --naive_images 40
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.measure import label, regionprops
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vlmdiff.metrics import evaluate  # noqa: E402
from vlmdiff.scoring import image_scores  # noqa: E402


def synthetic(n: int, size: int = 256, n_classes: int = 10, seed: int = 0):
    """Smooth noise maps (float32); half of the images get 1-3 rectangular defects that raise the map."""
    rng = np.random.default_rng(seed)
    amaps = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):  # one image at a time: 20,000 maps are 5 GiB already
        low = rng.random((size // 16, size // 16)).astype(np.float32)
        if i >= n // 2:
            for _ in range(rng.integers(1, 4)):
                r, c = rng.integers(0, size - 40, 2)
                h, w = rng.integers(3, 40, 2)
                masks[i, r:r + h, c:c + w] = 1
        raised = np.kron(low, np.ones((16, 16), np.float32)) + np.float32(0.5 * rng.random()) * masks[i]
        amaps[i] = gaussian_filter(raised, 2)
    names = np.array([f"class{i % n_classes}" for i in range(n)])
    return amaps, masks, names


def naive_pro(masks, amaps, num_th=200):
    lo, hi = amaps.min(), amaps.max()
    fprs, pros = [], []
    inverse = 1 - masks
    for th in np.arange(lo, hi, (hi - lo) / num_th):
        binary = amaps > th
        overlaps = [binary[i][r.coords[:, 0], r.coords[:, 1]].sum() / r.area
                    for i in range(len(masks)) for r in regionprops(label(masks[i]))]
        pros.append(np.mean(overlaps))
        fprs.append(np.logical_and(inverse, binary).sum() / inverse.sum())
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < 0.3
    return auc(fprs[keep] / fprs[keep].max(), pros[keep])


def naive_evaluate(amaps, masks, names):
    """The reference evaluator's algorithms, class by class."""
    for cls in sorted(set(names)):
        a, m = amaps[names == cls], masks[names == cls]
        y, s = m.reshape(len(m), -1).any(1), image_scores(a)
        roc_auc_score(y, s), average_precision_score(y, s), precision_recall_curve(y, s)
        roc_auc_score(m.ravel() > 0, a.ravel()), average_precision_score(m.ravel() > 0, a.ravel())
        precision_recall_curve(m.ravel() > 0, a.ravel())
        naive_pro(m, a)


def timed(fn, *args):
    tracemalloc.start()
    start = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--naive_images", type=int, default=100, help="subset timed for the straightforward loop")
    args = p.parse_args(argv)
    sub = synthetic(args.naive_images)
    naive_s, _ = timed(naive_evaluate, *sub)
    fast_sub, _ = timed(evaluate, *sub)
    per_map = naive_s / args.naive_images
    print(f"straightforward evaluator: {naive_s:.1f} s on {args.naive_images} maps ({per_map * 1e3:.0f} ms/map); "
          f"this implementation on the same maps: {fast_sub:.2f} s ({naive_s / fast_sub:.1f}x)")
    print(f"{'maps':>7} {'seconds':>8} {'peak MiB':>9} {'straightforward s (scaled)':>27} {'speed-up':>9}")
    for n in args.sizes:
        data = synthetic(n)
        seconds, peak = timed(evaluate, *data)
        print(f"{n:>7} {seconds:>8.1f} {peak:>9.0f} {per_map * n:>27.0f} {per_map * n / seconds:>8.1f}x")
        del data
    return 0


if __name__ == "__main__":
    sys.exit(main())
