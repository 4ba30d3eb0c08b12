"""Test runs: batched reconstruction, scoring, metrics and report (docs/design.md §13; the reference's ``test.py``).

Results are stored per batch in ``<run>/scores/batch_<index>.npz`` (anomaly maps as float32, binary
ground truth, image labels, class names, filenames) so an interrupted run resumes at the next missing
batch. ``<run>/run.json`` fingerprints every setting that changes results: a run folder never mixes
results of different settings (the reference's stale ``.npz`` merge, docs/design.md D4). With several processes
(``torchrun``), each process takes every ``world_size``-th batch and process 0 computes the metrics.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from utils.io import atomic_path, write_json
from vlmdiff.data.images import denormalize
from vlmdiff.inference import score_images
from vlmdiff.run_config import DataRunConfig
from vlmdiff.metrics import MetricAccumulator
from vlmdiff.predict import write_thresholds
from vlmdiff.report import write_class_plots, write_gallery_images, write_html_report, write_tables, write_visuals
from vlmdiff.scoring import image_scores

log = logging.getLogger(__name__)

RESULT_KEYS = ("resume_path", "model_config", "data_set", "data_path", "coco_part", "classes", "image_size",
               "use_captions", "caption_folder", "only_mid_control", "scorer", "scorer_weights", "ddim_steps", "guidance_scale",
               "start_timestep", "start_mode", "sigma", "seed", "start_ind", "end_ind", "batch_size")


@dataclass
class TestConfig(DataRunConfig):
    """Settings of a test run (defaults: the reference protocol at 256×256 with DINO ViT-S/8)."""

    resume_path: str = "models/vlmdiff_trained.ckpt"
    exp_name: str = "testing_mvtec"
    scorer: str = "v1s8"
    scorer_weights: str | None = None
    ddim_steps: int = 10
    guidance_scale: float = 9.0
    start_timestep: int = 999
    start_mode: str = "reference"
    sigma: float = 5.0
    metrics_mode: str = "paper"
    batch_size: int = 8
    num_workers: int = 2
    seed: int = 0
    start_ind: int = 0
    end_ind: int | None = None
    save_visuals: bool = False
    gallery_per_class: int = 3
    device: str = "auto"
    overwrite: bool = False


def fingerprint(cfg: TestConfig) -> dict:
    return {k: getattr(cfg, k) for k in RESULT_KEYS}


def prepare_run_dir(cfg: TestConfig) -> Path:
    """Create the run folder, or check that an existing one holds results of the same settings."""
    run, info = cfg.run_dir, fingerprint(cfg)
    marker = run / "run.json"
    if marker.is_file() and not cfg.overwrite:
        old = json.loads(marker.read_text())
        diff = {k: (old.get(k), v) for k, v in info.items() if old.get(k) != v}
        if diff:
            raise ValueError(f"{marker}: this run folder holds results of other settings {diff}; "
                             "use another --exp_name, or --overwrite to discard them")
    elif marker.is_file() and cfg.overwrite:
        for f in (run / "scores").glob("*.npz"):
            f.unlink()
    write_json(marker, info)
    return run


def _batch_file(run: Path, index: int) -> Path:
    return run / "scores" / f"batch_{index:06d}.npz"


def _write_batch(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def score_batch(model, extractor, batch: dict, cfg: TestConfig) -> dict:
    """Reconstruct a batch and compare features: maps ``(B, S, S)`` float64 and decoded images.

    Each image's noise is seeded by ``cfg.seed`` and its key (:func:`vlmdiff.inference.image_noise`).
    """
    return score_images(model, extractor, batch["jpg"], list(batch["key"]), seed=cfg.seed,
                        captions=list(batch["txt"]) if cfg.use_captions else None, hints=batch["hint"],
                        ddim_steps=cfg.ddim_steps, guidance_scale=cfg.guidance_scale,
                        start_timestep=cfg.start_timestep, start_mode=cfg.start_mode, sigma=cfg.sigma,
                        return_ae_reconstruction=cfg.save_visuals)


def run_batches(model, extractor, dataset, cfg: TestConfig, *, rank: int = 0, world_size: int = 1) -> None:
    """Score every not-yet-stored batch of this process's share."""
    run = cfg.run_dir
    end = len(dataset) if cfg.end_ind is None else min(cfg.end_ind, len(dataset))
    indices = list(range(cfg.start_ind, end))
    batches = [indices[i:i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)]
    todo = [b for b in range(len(batches)) if b % world_size == rank and not _batch_file(run, b).is_file()]
    if len(todo) < len(batches) // world_size:
        log.info("resuming: %d of this process's batches already scored", len(batches) // world_size - len(todo))
    loader = DataLoader(dataset, batch_sampler=[batches[b] for b in todo], num_workers=cfg.num_workers)
    for b, batch in zip(tqdm(todo, desc=f"test [{rank}]", unit="batch", disable=not todo), loader):
        res = score_batch(model, extractor, batch, cfg)
        gt = (batch["mask"][:, 0] > 0).numpy()
        if cfg.save_visuals:
            _save_batch_visuals(run, batch, res)
        _write_batch(_batch_file(run, b), maps=res["maps"].astype(np.float32), gt=gt,
                     labels=np.asarray(batch["label"]).astype(np.int8), has_mask=np.asarray(batch["has_mask"]),
                     clsnames=np.asarray(batch["clsname"]), filenames=np.asarray(batch["filename"]))


def visual_name(filename: str) -> str:
    return filename.replace("\\", "/").strip("/").replace("/", "__").rsplit(".", 1)[0]


def _save_batch_visuals(run: Path, batch: dict, res: dict) -> None:
    inputs = denormalize(batch["jpg"]).numpy()
    samples = denormalize(res["samples"]).numpy()
    recon = None if res["reconstruction"] is None else denormalize(res["reconstruction"].cpu()).numpy()
    for i, name in enumerate(batch["filename"]):
        write_visuals(run / "visuals" / batch["clsname"][i], visual_name(name), input_rgb=inputs[i],
                      samples_rgb=samples[i], amap=res["maps"][i],
                      reconstruction_rgb=None if recon is None else recon[i])


def _score_files(run: Path) -> list[Path]:
    files = sorted((run / "scores").glob("batch_*.npz"))
    if not files:
        raise FileNotFoundError(f"{run / 'scores'}: no scored batches")
    return files


def load_results(run: Path, cls: str | None = None, files: Sequence[Path] | None = None) -> dict[str, np.ndarray]:
    """Stored results (of one class only, if given), concatenated in batch order."""
    parts = []
    for f in files if files is not None else _score_files(run):
        with np.load(f) as z:
            rows = slice(None) if cls is None else z["clsnames"] == cls
            parts.append({k: z[k][rows] for k in z.files})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def evaluate_run(cfg: TestConfig, config_dump: dict | None = None, *, device=None) -> dict:
    """Metrics per class from the stored batches, tables, curves and the HTML report.

    Streams the batch files twice (:class:`vlmdiff.metrics.MetricAccumulator`): memory holds the image
    scores, the anomalous pixels and one sorting buffer, never a class's or the test set's maps.
    ``device``: a torch device (a GPU) for the image scores and the sorting pass; None: the CPU.
    """
    run = cfg.run_dir
    files = _score_files(run)
    pixel = True
    for f in files:
        with np.load(f) as z:
            pixel = pixel and bool(z["has_mask"].all())
    if not pixel:
        log.warning("image-level labels only: pixel metrics are skipped")
    method = "pooled" if cfg.metrics_mode == "paper" else "max"
    acc = MetricAccumulator(cfg.metrics_mode, pixel=pixel, device=device)
    filenames: dict[str, list[str]] = {}
    where: dict[str, list[tuple[Path, int]]] = {}  # per class: (batch file, row) of each image, in order
    scale: dict[str, list[float]] = {}  # per class: [min, max] of its maps, the report's one colour scale
    for f in tqdm(files, desc="metrics, pass 1/2", unit="batch", leave=False):
        with np.load(f) as z:
            maps, clsnames = z["maps"], z["clsnames"]
            for row, cls in enumerate(clsnames.tolist()):
                where.setdefault(cls, []).append((f, row))
                lo, hi = scale.setdefault(cls, [np.inf, -np.inf])
                scale[cls] = [min(lo, float(maps[row].min())), max(hi, float(maps[row].max()))]
            if method == "pooled" and min(maps.shape[1:]) < 57:
                method = "max"
                log.warning("maps smaller than 57x57: the plain max image score replaces the pooled one")
            scores = image_scores(maps, method, device=device)
            acc.update(maps, z["gt"] if pixel else None, clsnames, z["labels"], scores)
            for cls, name in zip(clsnames.tolist(), z["filenames"].tolist()):
                filenames.setdefault(cls, []).append(name)
    if acc.needs_second_pass:
        for f in tqdm(files, desc="metrics, pass 2/2", unit="batch", leave=False):
            with np.load(f) as z:
                acc.update_pixels(z["maps"], z["clsnames"])
    results = acc.compute()
    plots, gallery, scored = [], [], {}
    for cls in sorted(acc.classes):
        scores, labels = acc.classes[cls].image_results()
        scored[cls] = (scores, labels)
        plots.append(write_class_plots(run / "report", cls, scores, labels)["curves"])
        gallery += _gallery(run, cls, filenames[cls], scores, labels, cfg.gallery_per_class, where[cls], scale[cls])
    write_thresholds(run / "thresholds.json", scored, method)
    config = config_dump or asdict(cfg)
    write_tables(results, run, config)
    write_html_report(run / "report" / "index.html", results, plots=plots, gallery=gallery, config=config,
                      about=_about(cfg))
    return results


def _about(cfg: TestConfig) -> dict[str, str]:
    """What the report's page states above its table."""
    captions = f"captions from {cfg.caption_folder}" if cfg.use_captions else "no captions"
    return {"checkpoint": str(cfg.resume_path), "model config": str(cfg.model_config),
            "data": f"{cfg.data_set} at {cfg.data_path}", "scorer": str(cfg.scorer),
            "protocol": (f"noise to t = {cfg.start_timestep} ({cfg.start_mode} start), {cfg.ddim_steps} DDIM steps, "
                         f"guidance {cfg.guidance_scale:g}, {captions}, Gaussian σ = {cfg.sigma:g}, "
                         f"seed {cfg.seed}"),
            "metrics": f"{cfg.metrics_mode} mode", "gallery": "heatmaps share one colour scale per class"}


def _gallery(run: Path, cls: str, filenames: Sequence[str], scores: np.ndarray, labels: np.ndarray, k: int,
             where: Sequence[tuple[Path, int]] = (), scale: Sequence[float] = (0.0, 1.0)) -> list:
    """Worst cases first (highest-scored normal, lowest-scored anomalous), then the best detections.

    Each entry shows the input with its ground truth outlined, the diffusion reconstruction and the
    anomaly map on the class's colour scale ``scale`` (so a normal image shows no hot spot of its own).
    """
    folder = run / "visuals" / cls
    if k <= 0 or not folder.is_dir():
        return []
    order = np.argsort(scores)
    normal, anomalous = [i for i in order if labels[i] == 0], [i for i in order if labels[i] == 1]
    picks = [("false alarm?", i) for i in normal[::-1][:k]] + [("missed?", i) for i in anomalous[:k]]
    picks += [("detected", i) for i in anomalous[::-1][:k]]
    lo, hi = scale
    heading = ["input, ground truth outlined", "diffusion reconstruction",
               f"anomaly heatmap (class scale {lo:.3f} to {hi:.3f})"]
    out = []
    for what, i in picks:
        name = visual_name(str(filenames[i]))
        source = [folder / f"{name}-{kind}" for kind in ("input.jpg", "samples.jpg")]
        if not all(p.is_file() for p in source) or i >= len(where):
            continue
        batch_file, row = where[i]
        with np.load(batch_file) as z:
            amap, gt = z["maps"][row], (z["gt"][row] if bool(z["has_mask"][row]) else None)
        rgb = np.asarray(Image.open(source[0]).convert("RGB"))
        made = write_gallery_images(run / "report" / "gallery" / cls, name, input_rgb=rgb, amap=amap, mask=gt,
                                    vmin=lo, vmax=hi)
        out.append({"caption": f"{cls} {what} score {scores[i]:.3f} ({filenames[i]})",
                    "images": [made["input_gt"], source[1], made["heatmap_class"]], "labels": heading})
    return out


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``: from torch.distributed when initialised, else from torchrun's variables."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
