"""Pieces of the CPU demo (``scripts/demo.py``) that are worth testing on their own.

* :func:`normal_distances` reads, from a test run, how close the diffusion reconstructions (and the
  autoencoder round trip) of the normal test images are to their inputs: the evidence that training taught
  the semantic-guided network to control the reconstruction.
* :func:`write_summary` writes ``summary.json``: wall time per stage, both metric modes of the trained and
  of the untrained model, and the three reconstruction distances.
* :func:`write_overview` draws the picture of a run: input, diffusion reconstruction and heatmap per class.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Mapping

import torch

from utils.io import write_json


def write_summary(path: str | os.PathLike, *, wall_s: float, stages_s: Mapping[str, float], metrics: Mapping,
                  untrained_metrics: Mapping, l1_samples: float, l1_autoencoder: float,
                  l1_untrained_samples: float, extra: Mapping | None = None) -> dict:
    """Write ``summary.json`` atomically and return its content."""
    summary = {"wall_s": wall_s, "stages_s": dict(stages_s), "metrics": metrics, "untrained_metrics": untrained_metrics,
               "l1_samples": l1_samples, "l1_autoencoder": l1_autoencoder,
               "l1_untrained_samples": l1_untrained_samples, **(extra or {})}
    write_json(Path(path), summary)
    return json.loads(json.dumps(summary))


def write_random_sd(model_config, path: str | os.PathLike, *, seed: int = 0) -> None:
    """A freshly initialised model of ``model_config`` saved in Stable Diffusion's layout (the demo's
    ``--sd ''``: training from a random UNet)."""
    from safetensors.torch import save_file

    from utils.io import atomic_path
    from utils.seed import seed_everything
    from vlmdiff.diffusion_pretrain import sd_layout_state_dict
    from vlmdiff.model import create_model

    seed_everything(seed)
    with atomic_path(Path(path)) as tmp:
        save_file(sd_layout_state_dict(create_model(model_config), torch.float32), str(tmp))


def evaluate_both_modes(run: str | os.PathLike) -> dict:
    """``{"paper": results, "exact": results}`` of a test run's stored maps (:mod:`vlmdiff.metrics`)."""
    from vlmdiff.metrics import evaluate
    from vlmdiff.testing import load_results

    res = load_results(Path(run))
    masks = res["gt"] if bool(res["has_mask"].all()) else None
    return {mode: evaluate(res["maps"], masks, res["clsnames"], mode, labels=res["labels"]) for mode in ("paper", "exact")}


def compare_tables(metrics: Mapping, untrained: Mapping, mode: str = "paper") -> str:
    """A markdown table: each metric of the trained model beside its untrained start's, per class (percent)."""
    trained, before = metrics[mode], untrained[mode]
    keys = [k for k in trained["mean"]]
    head = "| class | " + " | ".join(f"{k} trained / untrained" for k in keys) + " |"
    rows = [head, "|---" * (len(keys) + 1) + "|"]
    for cls in [c for c in trained if c != "mean"] + ["mean"]:
        name = f"**{cls}**" if cls == "mean" else cls
        cells = [f"{100 * trained[cls][k]:.1f} / {100 * before[cls][k]:.1f}" for k in keys]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return f"{mode} mode, trained / untrained start:\n" + "\n".join(rows)


def normal_distances(run: str | os.PathLike) -> dict[str, float]:
    """Mean ``l1_sample`` and ``l1_autoencoder`` of a test run's normal images, from its ``per_image.csv``:
    the distances of the very reconstructions the run scored (:func:`vlmdiff.testing.reconstruction_distances`;
    ``l1_autoencoder`` is NaN unless the run saved visuals)."""
    with open(Path(run) / "per_image.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == "0"]
    if not rows:
        raise ValueError(f"{run}: no normal test images, so no reconstruction distance")

    def mean(column: str) -> float:
        values = [float(r[column]) for r in rows if r[column] != ""]
        return sum(values) / len(values) if len(values) == len(rows) else float("nan")

    return {"samples": mean("l1_sample"), "autoencoder": mean("l1_autoencoder")}


def write_overview(run: str | os.PathLike, path: str | os.PathLike, *, per_class: int = 1) -> Path:
    """A picture of a test run with ``save_visuals``: per class, its highest-scored anomalous image(s) as
    input with the ground truth outlined, diffusion reconstruction, and anomaly heatmap on the class's
    colour scale (what the report's gallery shows), one row each. Returns ``path``."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from utils.io import atomic_path
    from vlmdiff.report import heatmap_overlay, outline_mask
    from vlmdiff.scoring import image_scores
    from vlmdiff.testing import load_results, visual_name

    run, path = Path(run), Path(path)
    res = load_results(run)
    rows = []
    for cls in sorted(set(res["clsnames"].tolist())):
        idx = np.flatnonzero(res["clsnames"] == cls)
        maps = res["maps"][idx]
        scores = image_scores(maps, "pooled" if min(maps.shape[1:]) >= 57 else "max")
        lo, hi = float(maps.min()), float(maps.max())
        anomalous = [i for i in np.argsort(-scores) if res["labels"][idx[i]] == 1][:per_class]
        for i in anomalous:
            j = idx[i]
            name = visual_name(str(res["filenames"][j]))
            folder = run / "visuals" / cls
            rgb = np.asarray(Image.open(folder / f"{name}-input.jpg").convert("RGB"))
            samples = np.asarray(Image.open(folder / f"{name}-samples.jpg").convert("RGB"))
            gt = res["gt"][j] if bool(res["has_mask"][j]) else None
            rows.append((cls, outline_mask(rgb, gt), samples, heatmap_overlay(rgb, res["maps"][j], vmin=lo, vmax=hi)))
    titles = ("input, ground truth outlined", "diffusion reconstruction", "anomaly heatmap (class scale)")
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.2, 2.5 * len(rows)), squeeze=False)
    for r, (cls, *panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=9)
        axes[r, 0].set_ylabel(cls, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path
