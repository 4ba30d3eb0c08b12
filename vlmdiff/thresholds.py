"""Decision thresholds of a test run: per class and over all classes, the image-score threshold that
maximises F1 on the labelled test split (``<run>/thresholds.json``, written by test runs and read by
predictions)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from utils.io import write_json
from vlmdiff.metrics import binary_curve


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The image-score threshold (``score >= t`` is anomalous) with the highest F1 on labelled data."""
    tps, fps, n_pos, _ = binary_curve(scores, labels)
    if n_pos == 0:
        return float(np.max(scores)) + 1e-12
    f1 = 2 * tps / (tps + fps + n_pos)
    distinct = np.unique(scores)[::-1]  # the curve's thresholds, highest first
    return float(distinct[int(np.argmax(f1))])


def write_thresholds(path: str | os.PathLike, per_class: dict[str, tuple[np.ndarray, np.ndarray]], method: str) -> dict:
    """F1-optimal thresholds per class and over all classes; ``per_class[c] = (scores, labels)``."""
    out = {"image_score": method, "per_class": {c: f1_threshold(s, y) for c, (s, y) in per_class.items()}}
    scores = np.concatenate([s for s, _ in per_class.values()])
    labels = np.concatenate([y for _, y in per_class.values()])
    out["all"] = f1_threshold(scores, labels)
    write_json(path, out)
    return out



def read_threshold(path: str | os.PathLike, clsname: str | None = None) -> tuple[float, str]:
    """``(threshold, image-score method)`` from a ``thresholds.json`` (one class's, or the all-class one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: thresholds file not found (run test.py first, or pass --threshold)")
    data = json.loads(path.read_text())
    if clsname is None:
        return float(data["all"]), data["image_score"]
    if clsname not in data["per_class"]:
        raise KeyError(f"{path}: no threshold for class {clsname!r}; classes: {sorted(data['per_class'])}")
    return float(data["per_class"][clsname]), data["image_score"]
