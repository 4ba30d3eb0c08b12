"""Test runs: batched reconstruction, scoring, metrics and report (docs/design.md §13; the reference's ``test.py``).

Results are stored per image, keyed by the image's path relative to the dataset root, in
``<run>/scores/part_<first index>_<digest>.npz`` (anomaly maps as float32, binary ground truth, image
labels, class names, filenames, keys): an interrupted run, or a dataset that has grown, scores only the
images without a result; a dataset that has shrunk reports only the images present (``images.json``
lists them). Each result records the size and modification time of its image and mask files
(``image_files.json`` names them): an image replaced by another file of the same name is scored again,
and only that image; ``--run_eval_only`` refuses to report it until then. ``per_image.csv`` lists each
reported image once with its score. ``<run>/run.json``
fingerprints every setting that changes results, the checkpoint, model config and scorer weights by
content (size and SHA-256): a run folder never mixes results of different settings or weights (the
reference merges stale ``.npz`` files, docs/design.md D4). Batch size, image range and class selection only choose which
images are scored together or reported. With several processes (``torchrun``), each process takes every
``world_size``-th batch and process 0 computes the metrics.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from utils.io import atomic_path, write_json, write_text
from vlmdiff.data.images import denormalize
from vlmdiff.inference import score_images, scoring_settings
from vlmdiff.precision import check_precision, compile_networks, compiled_networks, is_compiled, to_channels_last
from vlmdiff.run_config import TestConfig, result_keys
from vlmdiff.metrics import MetricAccumulator
from vlmdiff.report import write_class_plots, write_gallery_images, write_html_report, write_tables, write_visuals
from vlmdiff.scoring import POOLED_MIN_SIDE, image_score_method, image_scores
from vlmdiff.thresholds import write_thresholds

log = logging.getLogger(__name__)

RESULT_KEYS = result_keys(TestConfig)  # the settings tagged results=True
# Settings that name a file: compared by content (size and SHA-256), not by path.
FILE_KEYS = ("checkpoint", "model_config", "scorer_weights")
# run.json keys written by earlier versions under another name -> the setting's name now
STORED_KEYS = {"resume_path": "checkpoint"}


_DIGESTS: dict[tuple, str] = {}  # (absolute path, size, mtime_ns) -> SHA-256, for this process


def file_digest(path: str | os.PathLike | None, known: dict | None = None) -> dict | None:
    """``{"path", "size", "mtime_ns", "sha256"}`` of a file (None: no path, or no such file).

    ``known``: an earlier digest of the file; its SHA-256 is reused when the size and the modification
    time are unchanged, so a rerun does not hash a multi-gigabyte checkpoint again.
    """
    if not path or not Path(path).is_file():
        return None
    st = Path(path).stat()
    out = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns \
            and os.path.abspath(known.get("path", "")) == memo[0] and known.get("sha256"):
        _DIGESTS[memo] = known["sha256"]
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    out["sha256"] = _DIGESTS[memo]
    return out


def fingerprint(cfg: TestConfig, known: dict | None = None) -> dict:
    """The settings that change results; files (:data:`FILE_KEYS`) as :func:`file_digest` s."""
    known = known or {}
    return {k: file_digest(getattr(cfg, k), known.get(k) if isinstance(known.get(k), dict) else None)
            if k in FILE_KEYS else getattr(cfg, k) for k in RESULT_KEYS}


def read_fingerprint(marker: Path) -> dict | None:
    """A run's stored fingerprint (``run.json``), its keys by today's setting names (:data:`STORED_KEYS`);
    None when there is none."""
    if not marker.is_file():
        return None
    stored = json.loads(marker.read_text())
    for old, new in STORED_KEYS.items():
        if old in stored and new not in stored:
            stored[new] = stored.pop(old)
    return stored


def _same(key: str, old, new) -> bool:
    if key in FILE_KEYS and isinstance(old, dict) and isinstance(new, dict):
        return (old.get("size"), old.get("sha256")) == (new["size"], new["sha256"])
    return old == new


def _describe(key: str, old, new) -> str:
    if key in FILE_KEYS and isinstance(old, dict) and isinstance(new, dict):
        return (f"{key} {new['path']}: content changed (size {old.get('size')} -> {new['size']}, "
                f"sha256 {str(old.get('sha256'))[:12]}... -> {new['sha256'][:12]}...)")
    if key in FILE_KEYS:
        old, new = (v["path"] if isinstance(v, dict) else v for v in (old, new))
    return f"{key}: {old!r} -> {new!r}"


def prepare_run_dir(cfg: TestConfig, skipped: Sequence[tuple[Path, str]] | None = None) -> Path:
    """Create the run folder, or check that an existing one holds results of the same settings.

    Stored results of other settings (a changed checkpoint, scorer weights or model config included) are
    refused naming what changed, or discarded with ``overwrite``. ``skipped``: the ``(image, reason)`` of
    the unreadable images left out of this run (``--skip_bad_images``), listed in ``skipped.txt``
    (None: the file is left as it is).
    """
    run = cfg.run_dir
    marker = run / "run.json"
    old = read_fingerprint(marker)
    if old is not None and not any((run / "scores").glob("part_*.npz")):
        old = None  # a run that stopped before storing any result binds no settings
    info = fingerprint(cfg, old)
    if old is not None and not cfg.overwrite:
        diff = [_describe(k, old.get(k), v) for k, v in info.items() if not _same(k, old.get(k), v)]
        if diff:
            raise ValueError(f"{marker}: this run folder holds results of other settings ({'; '.join(diff)}); "
                             "use another --exp_name, or --overwrite to discard them")
    elif old is not None and cfg.overwrite:
        for f in (run / "scores").glob("*.npz"):
            f.unlink()
        (run / IMAGES_FILE).unlink(missing_ok=True)
        (run / FILES_FILE).unlink(missing_ok=True)
    write_json(marker, info)
    if skipped is not None:
        write_skipped(run, skipped, cfg.data_path)
    return run


SKIPPED_FILE = "skipped.txt"


def write_skipped(run: Path, skipped: Sequence[tuple[Path, str]], root: str | os.PathLike) -> None:
    """``<run>/skipped.txt``: one line per image left out, its path relative to the dataset root, a tab and
    the reason (an empty file when a run that skipped images is run again with all of them readable)."""
    from vlmdiff.data.datasets import _relative_key

    if skipped or (run / SKIPPED_FILE).exists():
        write_text(run / SKIPPED_FILE, "".join(f"{_relative_key(p, root)}\t{reason}\n" for p, reason in skipped))


IMAGES_FILE = "images.json"  # the keys of the images of the last scoring pass, in dataset order
FILES_FILE = "image_files.json"  # key -> the files its result is computed from (image, mask), absolute paths


def file_stamp(paths: Sequence[str | os.PathLike]) -> str:
    """``size:mtime_ns`` of each file, ``;``-joined (``-`` for a missing file): a cheap check that an image
    (or its mask) is the one that was scored. Replacing a file's content changes its modification time."""
    parts = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            parts.append("-")
        else:
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def _item_files(dataset, indices: Sequence[int]) -> dict[str, list[str]]:
    """``key -> [absolute paths]`` of the files of the dataset's items ``indices``."""
    if not hasattr(dataset, "item_files"):
        return {}
    return {dataset.image_key(i): [os.path.abspath(f) for f in dataset.item_files(i)] for i in indices}


def _part_file(run: Path, first: int, keys: Sequence[str]) -> Path:
    """A stored group of images: named by its first image's dataset index and a digest of its keys."""
    digest = hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()[:12]
    return run / "scores" / f"part_{first:08d}_{digest}.npz"


def _write_batch(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def stored_index(run: Path, stamps: dict[str, str] | None = None) -> dict[str, tuple[Path, int]]:
    """``key -> (file, row)`` of every stored image result (the first file, in name order, of a key).

    ``stamps``: the current :func:`file_stamp` of the images; a result scored from files with another
    stamp (an image replaced since) is left out, as is every result of such an image: it is to be
    scored again. Results stored without stamps are taken as they are."""
    index: dict[str, tuple[Path, int]] = {}
    for f in sorted((run / "scores").glob("part_*.npz")):
        with np.load(f) as z:
            stored = z["stamps"].tolist() if "stamps" in z.files else None
            for row, key in enumerate(z["keys"].tolist()):
                if stamps is not None and stored is not None and key in stamps and stored[row] != stamps[key]:
                    continue
                index.setdefault(key, (f, row))
    return index


def changed_images(run: Path, stamps: dict[str, str], files: dict[str, list[str]]) -> list[tuple[str, str]]:
    """``(key, file)`` of the images with a stored result but none of their current stamp: the image (or
    its mask) ``file`` was replaced or touched since it was scored."""
    current, any_result = stored_index(run, stamps), stored_index(run)
    out = []
    for key in stamps:
        if key in any_result and key not in current:
            f, row = any_result[key]
            with np.load(f) as z:
                old = str(z["stamps"][row]).split(";")
            new = stamps[key].split(";")
            which = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), 0)
            out.append((key, files[key][which] if which < len(files.get(key, [])) else key))
    return out


def score_batch(model, extractor, batch: dict, cfg: TestConfig) -> dict:
    """Reconstruct a batch and compare features: maps ``(B, S, S)`` float64 and decoded images.

    Each image's noise is seeded by ``cfg.seed`` and its key (:func:`vlmdiff.inference.image_noise`).
    """
    return score_images(model, extractor, batch["jpg"], list(batch["key"]),
                        captions=list(batch["txt"]) if cfg.use_captions else None, hints=batch["hint"],
                        return_ae_reconstruction=cfg.save_visuals, **scoring_settings(cfg))


def run_batches(model, extractor, dataset, cfg: TestConfig, *, rank: int = 0, world_size: int = 1) -> None:
    """Score this process's share of the selected images that have no stored result yet.

    Results are stored per image key: images scored by an earlier run of the same settings (an
    interrupted run, or a dataset that has since grown) are not scored again. Process 0 records the
    selected keys (``images.json``): the report covers exactly those.
    """
    run = cfg.run_dir
    keys = list(dataset.keys)
    end = len(dataset) if cfg.end_ind is None else min(cfg.end_ind, len(dataset))
    indices = list(range(cfg.start_ind, end))
    selected = [keys[i] for i in indices]
    if len(set(selected)) != len(selected):
        dup = next(k for k, n in Counter(selected).items() if n > 1)
        raise ValueError(f"{cfg.data_path}: image {dup!r} is listed more than once in the test split")
    files = _item_files(dataset, indices)
    stamps = {k: file_stamp(v) for k, v in files.items()}
    if rank == 0:
        write_json(run / IMAGES_FILE, selected)
        write_json(run / FILES_FILE, files)
    changed = changed_images(run, stamps, files)
    if changed:
        log.info("%d images changed since they were scored (first: %s): scoring them again", len(changed),
                 changed[0][1])
    stored = stored_index(run, stamps)
    batches = [indices[i:i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)]
    mine = [i for b, batch in enumerate(batches) if b % world_size == rank for i in batch]
    todo = [[i for i in batches[b] if keys[i] not in stored] for b in range(len(batches)) if b % world_size == rank]
    todo = [t for t in todo if t]
    n_todo = sum(map(len, todo))
    if n_todo < len(mine):
        log.info("resuming: %d of this process's %d images already scored", len(mine) - n_todo, len(mine))
    check_precision(cfg.precision)
    if cfg.channels_last:
        to_channels_last(model)
    if cfg.compile and not all(is_compiled(m) for m in compiled_networks(model)):
        compile_networks(model)
    cuda = next(model.parameters()).device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    loader = DataLoader(dataset, batch_sampler=todo, num_workers=cfg.num_workers,
                        pin_memory=cuda, persistent_workers=False,
                        prefetch_factor=4 if cfg.num_workers > 0 else None)
    timed, seconds, start = 0, 0.0, time.perf_counter()
    for n, (idx, batch) in enumerate(zip(tqdm(todo, desc=f"test [{rank}]", unit="batch", disable=not todo), loader)):
        res = score_batch(model, extractor, batch, cfg)
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if n > 0 or not cfg.compile:  # a compiled run's first batch is its warm-up
            timed, seconds = timed + len(idx), seconds + (now - start)
        start = now
        gt = (batch["mask"][:, 0] > 0).numpy()
        distances = reconstruction_distances(batch["jpg"], res)
        if cfg.save_visuals:
            _save_batch_visuals(run, batch, res)
        _write_batch(_part_file(run, idx[0], list(batch["key"])), maps=res["maps"].astype(np.float32), gt=gt,
                     labels=np.asarray(batch["label"]).astype(np.int8), has_mask=np.asarray(batch["has_mask"]),
                     clsnames=np.asarray(batch["clsname"]), filenames=np.asarray(batch["filename"]),
                     keys=np.asarray(batch["key"]), **distances, **_mask_quality(batch),
                     **({"stamps": np.asarray([stamps[k] for k in batch["key"]])} if stamps else {}))
        start = time.perf_counter()  # storing is not scoring
    if timed:
        speed = {"images": timed, "seconds": seconds, "images_per_s": timed / max(seconds, 1e-9),
                 "precision": cfg.precision, "channels_last": cfg.channels_last, "compile": cfg.compile,
                 "batch_invariant": cfg.batch_invariant, "batch_size": cfg.batch_size,
                 "device": str(next(model.parameters()).device),
                 "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
        write_json(run / f"speed_{rank}.json", speed)
        log.info("scored %d images at %.2f img/s (%s%s)%s", timed, speed["images_per_s"], cfg.precision,
                 ", channels-last" if cfg.channels_last else "", f"; peak GPU memory {speed['peak_gpu_memory_gb']:.2f} GB"
                 if cuda else "")


def reconstruction_distances(images: torch.Tensor, res: dict) -> dict[str, np.ndarray]:
    """Per image, the mean absolute difference (ImageNet-normalised units) between the input and its diffusion
    reconstruction (``l1_sample``) and, when it was decoded, its autoencoder round trip (``l1_autoencoder``,
    NaN otherwise): how closely the scored reconstruction resembles its input (``per_image.csv``)."""
    def l1(y):
        return (y.cpu().float() - images.cpu().float()).abs().mean(dim=(1, 2, 3)).numpy().astype(np.float32)

    recon = res.get("reconstruction")
    return {"l1_sample": l1(res["samples"]),
            "l1_autoencoder": np.full(len(images), np.nan, np.float32) if recon is None else l1(recon)}


def _mask_quality(batch: dict) -> dict:
    """``mask_levels`` and ``mask_between`` of a batch's masks (see :func:`vlmdiff.data.datasets.mask_levels`)."""
    if "mask_levels" not in batch:
        return {}
    return {"mask_levels": np.asarray(batch["mask_levels"]).astype(np.int32),
            "mask_between": np.asarray(batch["mask_between"]).astype(np.float32)}


def warn_non_binary_masks(quality: dict[str, list[tuple[str, int, float]]]) -> list[str]:
    """One warning per class whose masks are not all two-valued, naming the first such image's mask and the
    count; ``quality[cls]``: ``(image key, distinct values, fraction of pixels between)`` of its masks."""
    out = []
    for cls in sorted(quality):
        bad = [q for q in quality[cls] if q[1] > 2]
        if bad:
            key, levels, between = bad[0]
            out.append(f"class {cls}: {len(bad)} of {len(quality[cls])} masks are not two-valued (first: the mask "
                       f"of {key}, {levels} grey values, {100 * between:.1f}% of its pixels between the lowest and "
                       "the highest: JPEG noise or anti-aliased edges?); binarised with > 0, as the paper's "
                       "evaluator does, which grows the anomalous regions")
    for line in out:
        log.warning(line)
    return out


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


def _selection(run: Path) -> tuple[list[str], dict[Path, np.ndarray]]:
    """The reported images' keys (``images.json``, dataset order) and, per stored file in name order, the
    rows to read: every reported image once, images no longer selected left out."""
    listed, recorded = run / IMAGES_FILE, run / FILES_FILE
    files = json.loads(recorded.read_text()) if recorded.is_file() else {}
    stamps = {k: file_stamp(v) for k, v in files.items()}
    index = stored_index(run, stamps)
    if not index and not any((run / "scores").glob("part_*.npz")):
        raise FileNotFoundError(f"{run / 'scores'}: no scored images")
    keys = json.loads(listed.read_text()) if listed.is_file() else list(index)
    changed = changed_images(run, {k: stamps[k] for k in keys if k in stamps}, files)
    if changed:
        what = "changed" if Path(changed[0][1]).exists() else "removed"
        raise ValueError(f"{changed[0][1]}: {what} since it was scored (size or modification time)"
                         + (f", and {len(changed) - 1} more images" if len(changed) > 1 else "")
                         + "; run the test again without --run_eval_only to score it again")
    missing = [k for k in keys if k not in index]
    if missing:
        raise ValueError(f"{run}: {len(missing)} of {len(keys)} images have no stored result (first: {missing[0]!r}); "
                         "run the test again without --run_eval_only to score them")
    rows: dict[Path, list[int]] = {}
    for k in keys:
        f, r = index[k]
        rows.setdefault(f, []).append(r)
    return keys, {f: np.sort(np.asarray(rows[f])) for f in sorted(rows)}


def _read(f: Path, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    with np.load(f) as z:
        return {k: z[k][rows] for k in (names or z.files)}


def load_results(run: Path, cls: str | None = None) -> dict[str, np.ndarray]:
    """Stored results of the reported images (of one class only, if given), in dataset order."""
    keys, selection = _selection(Path(run))
    parts = [_read(f, rows) for f, rows in selection.items()]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    position = {k: i for i, k in enumerate(out["keys"].tolist())}
    order = np.asarray([position[k] for k in keys], dtype=np.int64)
    if cls is not None:
        order = order[out["clsnames"][order] == cls]
    return {k: v[order] for k, v in out.items()}


def evaluate_run(cfg: TestConfig, config_dump: dict | None = None, *, device=None) -> dict:
    """Metrics per class of the reported images, tables (``per_image.csv`` included), curves and the report.

    Streams the stored files twice (:class:`vlmdiff.metrics.MetricAccumulator`): memory holds the image
    scores, the anomalous pixels and one sorting buffer, never a class's or the test set's maps.
    ``device``: a torch device (a GPU) for the image scores and the sorting pass; None: the CPU.
    """
    run = cfg.run_dir
    keys, selection = _selection(run)
    pixel = all(bool(_read(f, rows, ["has_mask"])["has_mask"].all()) for f, rows in selection.items())
    if not pixel:
        log.warning("image-level labels only: pixel metrics are skipped")
    method = "pooled" if cfg.metrics_mode == "paper" else "max"
    acc = MetricAccumulator(cfg.metrics_mode, pixel=pixel, device=device)
    filenames: dict[str, list[str]] = {}
    per_image: dict[str, dict] = {}
    where: dict[str, list[tuple[Path, int]]] = {}  # per class: (stored file, row) of each image, in order
    scale: dict[str, list[float]] = {}  # per class: [min, max] of its maps, the report's one colour scale
    quality: dict[str, list[tuple[str, int, float]]] = {}  # per class: the masks' two-valuedness
    for f, rows in tqdm(selection.items(), desc="metrics, pass 1/2", unit="file", leave=False):
        z = _read(f, rows)
        maps, clsnames = z["maps"], z["clsnames"]
        if "mask_levels" in z:
            for key, cls, has, levels, between in zip(z["keys"].tolist(), clsnames.tolist(), z["has_mask"].tolist(),
                                                      z["mask_levels"].tolist(), z["mask_between"].tolist()):
                if has and levels > 0:
                    quality.setdefault(cls, []).append((key, int(levels), float(between)))
        for i, cls in enumerate(clsnames.tolist()):
            where.setdefault(cls, []).append((f, int(rows[i])))
            lo, hi = scale.setdefault(cls, [np.inf, -np.inf])
            scale[cls] = [min(lo, float(maps[i].min())), max(hi, float(maps[i].max()))]
        if image_score_method(method, maps.shape) != method:
            method = "max"
            log.warning("maps smaller than %dx%d: the plain max image score replaces the pooled one",
                        POOLED_MIN_SIDE, POOLED_MIN_SIDE)
        scores = image_scores(maps, method, device=device)
        acc.update(maps, z["gt"] if pixel else None, clsnames, z["labels"], scores)
        nan = np.full(len(scores), np.nan)  # results stored before the distances were recorded
        for key, cls, name, label, score, d_sample, d_ae in zip(
                z["keys"].tolist(), clsnames.tolist(), z["filenames"].tolist(), z["labels"].tolist(), scores.tolist(),
                z.get("l1_sample", nan).tolist(), z.get("l1_autoencoder", nan).tolist()):
            filenames.setdefault(cls, []).append(name)
            per_image[key] = {"path": key, "class": cls, "label": int(label), "score": float(score),
                              "l1_sample": float(d_sample), "l1_autoencoder": float(d_ae),
                              "map_file": f.relative_to(run).as_posix(), "filename": name}
    if pixel:
        warn_non_binary_masks(quality)
    if acc.needs_second_pass:
        for f, rows in tqdm(selection.items(), desc="metrics, pass 2/2", unit="file", leave=False):
            z = _read(f, rows, ["maps", "clsnames"])
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
    write_per_image(run, [per_image[k] for k in keys])
    write_html_report(run / "report" / "index.html", results, plots=plots, gallery=gallery, config=config,
                      about=_about(cfg))
    return results


def _about(cfg: TestConfig) -> dict[str, str]:
    """What the report's page states above its table."""
    captions = f"captions from {cfg.caption_folder}" if cfg.use_captions else "no captions"
    return {"checkpoint": str(cfg.checkpoint), "model config": str(cfg.model_config),
            "data": f"{cfg.data_set} at {cfg.data_path}", "scorer": str(cfg.scorer),
            "protocol": (f"noise to t = {cfg.start_timestep} ({cfg.start_mode} start), {cfg.ddim_steps} DDIM steps, "
                         f"guidance {cfg.guidance_scale:g}, {captions}, Gaussian σ = {cfg.sigma:g}, "
                         f"seed {cfg.seed}"),
            "metrics": f"{cfg.metrics_mode} mode", "gallery": "heatmaps share one colour scale per class"}


PER_IMAGE_COLUMNS = ("path", "class", "label", "score", "l1_sample", "l1_autoencoder", "map_file", "heatmap")


def write_per_image(run: Path, rows: Sequence[dict]) -> Path:
    """``<run>/per_image.csv``: each reported image once (its key, class, label, image score, the distances of
    :func:`reconstruction_distances` (empty when not recorded), the stored file holding its map, and its heatmap
    when visuals were saved)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PER_IMAGE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        heatmap = Path("visuals") / r["class"] / f"{visual_name(r['filename'])}-heatmap.png"
        distances = {k: "" if np.isnan(r.get(k, np.nan)) else repr(r[k]) for k in ("l1_sample", "l1_autoencoder")}
        writer.writerow({**r, "score": repr(r["score"]), **distances,
                         "heatmap": heatmap.as_posix() if (run / heatmap).is_file() else ""})
    write_text(run / "per_image.csv", buf.getvalue())
    return run / "per_image.csv"


def _gallery(run: Path, cls: str, filenames: Sequence[str], scores: np.ndarray, labels: np.ndarray, k: int,
             where: Sequence[tuple[Path, int]] = (), scale: Sequence[float] = (0.0, 1.0)) -> list:
    """Worst cases first (highest-scored normal, lowest-scored anomalous), then the best detections.

    Each entry shows the input with its ground truth outlined, the diffusion reconstruction and the
    anomaly map on the class's colour scale ``scale`` (so a normal image shows no hot spot of its own);
    ``where[i]`` is the stored file and row of image ``i``.
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
        stored, row = where[i]
        z = _read(stored, np.asarray([row]), ["maps", "gt", "has_mask"])
        gt = z["gt"][0] if bool(z["has_mask"][0]) else None
        rgb = np.asarray(Image.open(source[0]).convert("RGB"))
        made = write_gallery_images(run / "report" / "gallery" / cls, name, input_rgb=rgb, amap=z["maps"][0], mask=gt,
                                    vmin=lo, vmax=hi)
        out.append({"caption": f"{cls} {what} score {scores[i]:.3f} ({filenames[i]})",
                    "images": [made["input_gt"], source[1], made["heatmap_class"]], "labels": heading})
    return out


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``: from torch.distributed when initialised, else from torchrun's variables."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
