#!/usr/bin/env python
"""Time and peak memory of the seven metrics (paper mode) on synthetic 256x256 maps, next to the
straightforward evaluator of the paper (connected components labelled again at each of the 200 AU-PRO
thresholds, scikit-learn curves for the rest) measured in the same run, and the ratio.

The maps are written to a memory-mapped file first and read back in chunks of --chunk maps, as test.py
reads its stored batches: both passes of the streaming evaluator are timed, reading included. The
straightforward loop is timed on a subset (--naive_images) and scaled linearly by the number of maps (its
sorts grow faster than linearly, so the scaled time flatters it); the output says so. Peak memory is
what NumPy allocated (tracemalloc), the memory-mapped input excluded.

    python scripts/bench_metrics.py                           # 2,000 and 20,000 maps
    python scripts/bench_metrics.py --sizes 500 --naive_images 40
    python scripts/bench_metrics.py --device cuda             # the counting pass on a GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from skimage.measure import label, regionprops
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)
from vlmdiff.metrics import evaluate, evaluate_stream  # noqa: E402


def synthetic_map(rng, anomalous: bool, size: int = 256):
    """A smooth noise map (float32); anomalous ones get 1-3 rectangular defects that raise the map."""
    mask = np.zeros((size, size), np.uint8)
    low = rng.random((size // 16, size // 16)).astype(np.float32)
    if anomalous:
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, size - 40, 2)
            h, w = rng.integers(3, 40, 2)
            mask[r:r + h, c:c + w] = 1
    raised = np.kron(low, np.ones((16, 16), np.float32)) + np.float32(0.5 * rng.random()) * mask
    return gaussian_filter(raised, 2), mask


def synthetic(n: int, size: int = 256, n_classes: int = 10, seed: int = 0, folder: Path | None = None):
    """``n`` maps (the second half anomalous) with interleaved class names; memory-mapped under ``folder``."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size)
    if folder is None:
        amaps, masks = np.empty(shape, np.float32), np.zeros(shape, np.uint8)
    else:
        amaps = np.lib.format.open_memmap(folder / f"maps_{n}.npy", "w+", np.float32, shape)
        masks = np.lib.format.open_memmap(folder / f"masks_{n}.npy", "w+", np.uint8, shape)
    for i in range(n):
        amaps[i], masks[i] = synthetic_map(rng, i >= n // 2, size)
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


def naive_image_scores(amaps):
    """Eight 8x8 average pools then the max, as the reference (which repeats it for each image metric)."""
    x = torch.from_numpy(np.asarray(amaps, np.float64))[:, None]
    for _ in range(8):
        x = F.avg_pool2d(x, 8, stride=1)
    return x.flatten(1).max(dim=1).values.numpy()


def naive_evaluate(amaps, masks, names):
    """The reference evaluator's algorithms, class by class (its image score computed once, not three times)."""
    for cls in sorted(set(names)):
        a, m = amaps[names == cls], masks[names == cls]
        y, s = m.reshape(len(m), -1).any(1), naive_image_scores(a)
        roc_auc_score(y, s), average_precision_score(y, s), precision_recall_curve(y, s)
        roc_auc_score(m.ravel() > 0, a.ravel()), average_precision_score(m.ravel() > 0, a.ravel())
        precision_recall_curve(m.ravel() > 0, a.ravel())
        naive_pro(m, a)


def streamed(amaps, masks, names, chunk: int, device=None):
    """Both passes of the streaming evaluator over chunks of the (memory-mapped) arrays."""
    def chunks():
        for i in range(0, len(amaps), chunk):
            yield np.asarray(amaps[i:i + chunk]), np.asarray(masks[i:i + chunk]), names[i:i + chunk], None
    return evaluate_stream(chunks, "paper", device=device).compute()


def timed(fn, *args, **kwargs):
    tracemalloc.start()
    start = time.perf_counter()
    fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--naive_images", type=int, default=100, help="subset timed for the straightforward loop")
    p.add_argument("--chunk", type=int, default=1000, help="maps read at a time")
    p.add_argument("--device", default=None, help="torch device for the counting pass (default: NumPy on the CPU)")
    args = p.parse_args(argv)
    sub = synthetic(args.naive_images)
    naive_s, _ = timed(naive_evaluate, *sub)
    fast_sub, _ = timed(evaluate, *sub, device=args.device)
    per_map = naive_s / args.naive_images
    print(f"straightforward evaluator: {naive_s:.1f} s on {args.naive_images} maps ({per_map * 1e3:.0f} ms/map); "
          f"this implementation on the same maps: {fast_sub:.2f} s ({naive_s / fast_sub:.1f}x)")
    print(f"{'maps':>7} {'seconds':>8} {'ms/map':>7} {'peak MiB':>9} {'straightforward s (scaled)':>27} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            data = synthetic(n, folder=Path(folder))
            seconds, peak = timed(streamed, *data, chunk=args.chunk, device=args.device)
            print(f"{n:>7} {seconds:>8.1f} {seconds / n * 1e3:>7.2f} {peak:>9.0f} {per_map * n:>27.0f} "
                  f"{per_map * n / seconds:>8.1f}x", flush=True)
            del data
            for f in Path(folder).iterdir():
                f.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
