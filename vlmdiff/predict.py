"""Scoring unlabeled images with a trained model: per-image score, anomaly map, heatmap and a decision.

The decision threshold comes from a test run: ``thresholds.json`` holds, per class and over all classes,
the image-score threshold that maximises F1 on the labelled test split (written by ``test.py``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from utils.io import write_bytes, write_json, write_text
from vlmdiff.data.images import denormalize, image_to_tensor, is_image, load_rgb
from vlmdiff.inference import score_images
from vlmdiff.metrics import binary_curve
from vlmdiff.report import heatmap_overlay, to_uint8_rgb


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


def find_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    images = sorted(p for p in folder.rglob("*") if is_image(p))
    if not images:
        raise ValueError(f"{folder}: no images found")
    return images


@torch.no_grad()
def predict_folder(model, extractor, folder, out_dir, *, threshold: float, image_size: int = 256,
                   method: str = "pooled", batch_size: int = 8, sigma: float = 5.0, seed: int = 0,
                   reconstruct_kwargs: dict | None = None) -> list[dict]:
    """Score every image under ``folder``; write maps, overlays and ``predictions.csv`` to ``out_dir``.

    An image's noise is seeded by ``seed`` and its path relative to ``folder``
    (:func:`vlmdiff.inference.image_noise`): its score does not depend on ``batch_size``.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    images = find_images(folder)
    rows = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch"):
        paths = images[start:start + batch_size]
        keys = [p.relative_to(folder).as_posix() for p in paths]
        x = torch.stack([image_to_tensor(load_rgb(p), image_size) for p in paths])
        res = score_images(model, extractor, x, keys, seed=seed, sigma=sigma, image_score=method,
                           **(reconstruct_kwargs or {}))
        maps, scores = res["maps"], res["scores"]
        rgb = denormalize(x).numpy()
        for p, amap, score, img in zip(paths, maps, scores, rgb):
            name = p.relative_to(folder).with_suffix("").as_posix().replace("/", "__")
            grey = np.clip(np.round(amap / max(2 * threshold, 1e-12) * 255), 0, 255).astype(np.uint8)
            _png(out_dir / "maps" / f"{name}.png", grey)
            _png(out_dir / "heatmaps" / f"{name}.png", heatmap_overlay(to_uint8_rgb(img), amap, 0.0, 2 * threshold))
            rows.append({"file": p.relative_to(folder).as_posix(), "score": float(score),
                         "anomalous": bool(score >= threshold)})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["file", "score", "anomalous"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_dir / "predictions.csv", buf.getvalue())
    write_json(out_dir / "predictions.json", {"threshold": threshold, "image_score": method, "images": rows})
    return rows


def _png(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


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
