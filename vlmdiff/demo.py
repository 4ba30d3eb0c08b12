"""Pieces of the CPU demo (``scripts/demo.py``) that are worth testing on their own.

* :func:`normal_distances` reads, from a test run, how close the diffusion reconstructions (and the
  autoencoder round trip) of the normal test images are to their inputs: the evidence that training taught
  the semantic-guided network to control the reconstruction.
* :func:`write_summary` writes ``summary.json``: wall time per stage, both metric modes of the trained and
  of the untrained model, and the three reconstruction distances.
* :func:`write_overview` draws the picture of a run: input, diffusion reconstruction and heatmap per class.
* :func:`reconstruction_bounds` and :func:`control_sensitivity` (``scripts/demo_diagnostics.py``) measure what
  bounds the demo's numbers: the best and the copying reconstruction through its autoencoder, and how much
  its UNet listens where the semantic-guided network speaks.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
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
    ``l1_autoencoder`` is NaN unless the run saved visuals; both are NaN without normal test images)."""
    with open(Path(run) / "per_image.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == "0"]
    if not rows:  # a folder without normal test images: no distance to report
        return {"samples": float("nan"), "autoencoder": float("nan")}

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
    from vlmdiff.scoring import image_score_method, image_scores
    from vlmdiff.testing import load_results, visual_name

    run, path = Path(run), Path(path)
    res = load_results(run)
    rows = []
    for cls in sorted(set(res["clsnames"].tolist())):
        idx = np.flatnonzero(res["clsnames"] == cls)
        maps = res["maps"][idx]
        scores = image_scores(maps, image_score_method("pooled", maps.shape))
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


@torch.no_grad()
def reconstruction_bounds(model, extractor, data_dir: str | os.PathLike, *, image_size: int, sigma: float = 5.0,
                          mode: str = "paper") -> dict[str, dict]:
    """Metrics of two stand-in reconstructions of a synthetic benchmark's test images, scored as a test run
    scores a diffusion reconstruction (feature maps of input vs. reconstruction, Gaussian ``sigma``):

    * ``"ceiling"``: the autoencoder round trip (posterior mode) of each image's defect-free counterpart
      (:func:`vlmdiff.data.synthetic.defect_free_counterparts`; a normal image's own round trip), the best a
      model that decodes through this autoencoder can reconstruct;
    * ``"copy"``: the round trip of the input itself, defects included, what a model that copies its input
      scores.

    Returns ``{"ceiling": {class: metrics, "mean": ...}, "copy": {...}}`` (fractions).
    """
    from PIL import Image

    from vlmdiff.data import build_dataset
    from vlmdiff.data.images import image_to_tensor
    from vlmdiff.data.synthetic import defect_free_counterparts
    from vlmdiff.metrics import evaluate
    from vlmdiff.precision import extract_features
    from vlmdiff.scoring import anomaly_map

    clean = defect_free_counterparts(data_dir)
    info = json.loads((Path(data_dir) / "synthetic_dataset.json").read_text())
    ds = build_dataset("mvtec", data_dir, "test", image_size=image_size, classes=info["classes"])

    def round_trip(x):
        return model.decode_first_stage(model.scale_factor * model.encode_first_stage(x).mode())

    maps = {"ceiling": [], "copy": []}
    masks, classes = [], []
    for i in range(len(ds)):
        item = ds[i]
        x = item["jpg"][None].to(model.device)
        target = clean.get(ds.keys[i])
        target = x if target is None else image_to_tensor(Image.fromarray(target), image_size)[None].to(model.device)
        features = extract_features(extractor, x, "fp32")
        for name, y in (("ceiling", round_trip(target)), ("copy", round_trip(x))):
            maps[name].append(anomaly_map(features, extract_features(extractor, y, "fp32"), image_size, sigma=sigma)[0])
        masks.append((item["mask"][0] > 0).numpy())
        classes.append(item["clsname"])
    return {name: evaluate(np.stack(m), np.stack(masks), classes, mode) for name, m in maps.items()}


@torch.no_grad()
def control_sensitivity(model, images: torch.Tensor, *, timestep: int = 999, magnitude: float = 5.0,
                        seed: int = 0) -> dict[str, float]:
    """How much the UNet's predicted noise moves (mean ``|Δε|``) when a random control of standard deviation
    ``magnitude`` is added where the semantic-guided network's controls enter: at the middle block, and at the
    skips of each resolution (``"skips 2x2"`` …), one place at a time, on ``images``' latents at ``timestep``.

    A UNet that ignores what enters at its deepest levels cannot be steered from there, whatever the SGN
    learns: the paper's routing (middle block and the three deepest skips) needs these numbers to be large.
    """
    g = torch.Generator().manual_seed(seed)
    images = images.to(model.device).float()
    posterior = model.encode_first_stage(images)
    z = model.get_first_stage_encoding(posterior, torch.randn(posterior.mean.shape, generator=g).to(model.device))
    t = torch.full((len(z),), int(timestep), dtype=torch.long, device=model.device)
    x_t = model.q_sample(z, t, torch.randn(z.shape, generator=g).to(model.device))
    context = model.empty_conditioning(len(z))
    controls = model.control_model(x_t, images, t, context)
    unet = model.model.diffusion_model
    zeros = [torch.zeros_like(c) for c in controls]
    base = unet(x_t, t, context, control=zeros, only_mid_control=False)
    places: dict[str, list[int]] = {"middle block": [len(controls) - 1]}
    for i, c in enumerate(controls[:-1]):
        places.setdefault(f"skips {c.shape[-2]}x{c.shape[-1]}", []).append(i)
    out = {}
    for name, indices in places.items():
        probe = list(zeros)
        for i in indices:
            probe[i] = magnitude * torch.randn(controls[i].shape, generator=g).to(model.device)
        out[name] = float((unet(x_t, t, context, control=probe, only_mid_control=False) - base).abs().mean())
    return out
