"""Scoring unlabeled images with a trained model: per-image score, anomaly map, heatmap and a decision.

Images are scored as a test run scores them (:func:`vlmdiff.inference.score_images` with the run config's
:func:`vlmdiff.inference.scoring_settings`). The decision threshold comes from a test run:
``thresholds.json`` (:mod:`vlmdiff.thresholds`) holds, per class and over all classes, the image-score
threshold that maximises F1 on the labelled test split.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from utils.io import write_bytes, write_json, write_text
from vlmdiff.data.images import denormalize, image_to_tensor, is_image, load_rgb
from vlmdiff.inference import score_images, scoring_settings
from vlmdiff.report import heatmap_overlay, to_uint8_rgb
from vlmdiff.thresholds import f1_threshold, read_threshold, write_thresholds  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


def find_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    images = sorted(p for p in folder.rglob("*") if is_image(p))
    if not images:
        raise ValueError(f"{folder}: no images found")
    return images


def check_images(images: list[Path]) -> list[tuple[Path, str]]:
    """``(file, reason)`` of each image that cannot be decoded (each image is decoded once)."""
    bad = []
    for p in tqdm(images, desc="checking images", unit="image", leave=False, disable=len(images) < 100):
        try:
            load_rgb(p)
        except (ValueError, OSError) as err:
            reason = str(err)
            bad.append((p, reason[len(str(p)) + 2:] if reason.startswith(f"{p}: ") else reason))
    return bad


def refuse_bad_images(bad: list[tuple[Path, str]]) -> None:
    """Raise naming the first unreadable image (and how many more there are)."""
    first, reason = bad[0]
    more = f"; {len(bad) - 1} more unreadable" if len(bad) > 1 else ""
    raise ValueError(f"{first}: {reason}{more}; --skip_bad_images scores the others")


@torch.no_grad()
def predict_folder(model, extractor, folder, out_dir, *, threshold: float, image_size: int = 256,
                   method: str = "pooled", batch_size: int = 8, scoring: dict | None = None,
                   skip_bad_images: bool = False, settings: dict | None = None,
                   bad_images: list[tuple[Path, str]] | None = None) -> list[dict]:
    """Score every image under ``folder``; write maps, overlays and ``predictions.csv`` to ``out_dir``.

    ``scoring``: :func:`vlmdiff.inference.score_images`' settings, as a test run scores
    (:func:`vlmdiff.inference.scoring_settings` of its config; None: the defaults). An image's noise is seeded
    by the seed and its path relative to ``folder`` (:func:`vlmdiff.inference.image_noise`): its score does
    not depend on ``batch_size``.
    Every image is decoded before any is scored: an unreadable one stops the run naming it, before anything
    is written, or with ``skip_bad_images`` is left out and listed (``skipped.txt`` and
    ``predictions.json``). The outputs are written to a staging folder beside ``out_dir`` and moved in
    when every image is scored (:func:`staging_folder`): a run that fails midway leaves ``out_dir`` as it
    was. ``settings``: recorded in ``predictions.json``; ``bad_images``: the result of :func:`check_images`
    when already known.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    images = find_images(folder)
    bad = check_images(images) if bad_images is None else bad_images
    if bad and not skip_bad_images:
        refuse_bad_images(bad)
    if len(bad) == len(images):
        raise ValueError(f"{folder}: none of its {len(images)} images can be read (first: {bad[0][0]})")
    skipped = [{"file": p.relative_to(folder).as_posix(), "reason": reason} for p, reason in bad]
    for s in skipped:
        log.warning("skipping unreadable image %s: %s", folder / s["file"], s["reason"])
    images = [p for p in images if p not in {b for b, _ in bad}]
    with staging_folder(out_dir) as stage:
        rows = []
        for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch"):
            paths = images[start:start + batch_size]
            keys = [p.relative_to(folder).as_posix() for p in paths]
            x = torch.stack([image_to_tensor(load_rgb(p), image_size) for p in paths])
            res = score_images(model, extractor, x, keys, image_score=method, **(scoring or {}))
            maps, scores = res["maps"], res["scores"]
            rgb = denormalize(x).numpy()
            for p, amap, score, img in zip(paths, maps, scores, rgb):
                name = p.relative_to(folder).with_suffix("").as_posix().replace("/", "__")
                grey = np.clip(np.round(amap / max(2 * threshold, 1e-12) * 255), 0, 255).astype(np.uint8)
                _png(stage / "maps" / f"{name}.png", grey)
                _png(stage / "heatmaps" / f"{name}.png",
                     heatmap_overlay(to_uint8_rgb(img), amap, 0.0, 2 * threshold))
                rows.append({"file": p.relative_to(folder).as_posix(), "score": float(score),
                             "anomalous": bool(score >= threshold)})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["file", "score", "anomalous"])
        writer.writeheader()
        writer.writerows(rows)
        if skipped or (out_dir / "skipped.txt").exists():
            write_text(stage / "skipped.txt", "".join(f"{s['file']}\t{s['reason']}\n" for s in skipped))
        write_json(stage / "predictions.json", {"threshold": threshold, "image_score": method,
                                                "image_size": image_size, "settings": settings or {},
                                                "images": rows, "skipped": skipped})
        write_text(stage / "predictions.csv", buf.getvalue())
    return rows


# The outputs of a prediction, in the order they are moved into the output folder (the table last).
OUTPUTS = ("maps", "heatmaps", "skipped.txt", "predictions.json", "predictions.csv")


@contextmanager
def staging_folder(out_dir: Path):
    """A hidden folder beside ``out_dir`` that the block fills; when the block succeeds its outputs
    (:data:`OUTPUTS`) replace those of ``out_dir`` by renames (the maps' folders as wholes, so no map of an
    earlier prediction stays behind), the table last. When the block fails, the staging folder and any
    folder created for it are removed: ``out_dir`` holds either the earlier outputs or all the new ones,
    never maps without their table."""
    out_dir = Path(out_dir)
    created = [p for p in (out_dir.parent, *out_dir.parent.parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes 0700; the folder may become out_dir
    try:
        yield stage
        if not out_dir.exists():
            os.replace(stage, out_dir)
            return
        for name in OUTPUTS:
            new, old = stage / name, out_dir / name
            if not new.exists():
                continue
            if old.is_dir() and not old.is_symlink():
                os.replace(old, stage / f".old-{name}")  # moved aside, removed with the staging folder
            os.replace(new, old)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        for p in created:  # innermost first: only the folders made for the staging folder, if still empty
            try:
                p.rmdir()
            except OSError:
                break


def _png(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    write_bytes(path, buf.getvalue())


# Settings of the test run that fitted a threshold, and that its predictions must share.
INHERITED = ("model_config", "checkpoint", "only_mid_control", "scorer", "scorer_weights", "image_size",
             "ddim_steps", "guidance_scale", "start_timestep", "start_mode", "sigma", "seed", "metrics_mode")
RUN_SETTINGS_FILE = "test_config.yaml"


def threshold_source(value: str | float | None, default_run: Path) -> tuple[float | None, Path | None]:
    """``--threshold``: a number (used as is) → ``(number, None)``; a test run's folder or its
    ``thresholds.json`` (None: ``default_run``) → ``(None, thresholds file)``."""
    if value is None:
        return None, Path(default_run) / "thresholds.json"
    try:
        return float(value), None
    except (TypeError, ValueError):
        pass
    path = Path(value)
    if path.is_dir():
        return None, path / "thresholds.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: --threshold is neither a number, a test run folder nor a thresholds file")
    return None, path


def explicit_settings(args, names, aliases: dict[str, str] | None = None) -> set[str]:
    """The settings the command line (flags, ``key=value`` overrides, ``--config`` file) sets explicitly;
    ``aliases``: other names of settings (``{"resume_path": "checkpoint"}``), counted as the setting."""
    from omegaconf import OmegaConf

    keys = {k for k, v in vars(args).items() if k in names and v is not None}
    keys |= {o.split("=", 1)[0] for o in getattr(args, "overrides", None) or [] if "=" in o}
    if getattr(args, "use_dino", False):
        keys.add("scorer")
    if getattr(args, "config", None) and Path(args.config).is_file():
        keys |= set(OmegaConf.to_container(OmegaConf.load(args.config)) or {})
    return {(aliases or {}).get(k, k) for k in keys} & set(names)


def _same_setting(key: str, a, b) -> bool:
    if key in ("model_config", "checkpoint", "scorer_weights") and a and b:
        return os.path.abspath(str(a)) == os.path.abspath(str(b)) or (
            Path(a).is_file() and Path(b).is_file() and os.path.samefile(a, b))
    return a == b


def inherit_test_run(cfg, thresholds_file: Path, explicit: set[str], *, force: bool = False):
    """``cfg`` with the :data:`INHERITED` settings of the test run that wrote ``thresholds_file`` (its saved
    ``test_config.yaml``). A setting given explicitly with another value is refused naming it, unless
    ``force`` (then the given value is used, and a warning says the threshold may not fit)."""
    from dataclasses import replace

    from vlmdiff.run_config import resolve_run_config

    saved_file = Path(thresholds_file).parent / RUN_SETTINGS_FILE
    if not saved_file.is_file():
        raise FileNotFoundError(f"{saved_file}: settings of the test run that fitted the threshold not found; "
                                "pass a numeric --threshold to predict with the settings given")
    saved = resolve_run_config(type(cfg), config_file=saved_file)
    changes, differing = {}, []
    for key in INHERITED:
        ours, theirs = getattr(cfg, key), getattr(saved, key)
        if key in explicit and not _same_setting(key, ours, theirs):
            differing.append(f"{key}={ours!r} (the threshold was fitted with {theirs!r})")
        else:
            changes[key] = theirs
    if differing and not force:
        raise ValueError(f"{thresholds_file}: {differing[0]}"
                         + (f", and {len(differing) - 1} more" if len(differing) > 1 else "")
                         + "; leave it out to use the test run's, or add --force_settings")
    for d in differing:
        log.warning("predicting with %s: the threshold may not fit", d)
    return replace(cfg, **changes)


def run_predict(args, cfg, load_model) -> int:
    """``test.py --predict``: :func:`predict_run` with the command line's options; the settings given on it
    (flags, ``key=value``, ``--config``) are the explicit ones."""
    from dataclasses import fields

    from vlmdiff.run_config import key_aliases

    return predict_run(cfg, args.predict, load_model, threshold=args.threshold, threshold_class=args.threshold_class,
                       out=args.predict_out, force_settings=bool(getattr(args, "force_settings", False)),
                       skip_bad_images=bool(getattr(args, "skip_bad_images", False)),
                       explicit=explicit_settings(args, [f.name for f in fields(cfg)], key_aliases(type(cfg))))


def predict_run(cfg, folder, load_model, *, threshold: str | float | None = None, threshold_class: str | None = None,
                out: str | os.PathLike | None = None, force_settings: bool = False, skip_bad_images: bool = False,
                explicit: set[str] | None = None) -> int:
    """Predict the images under ``folder``: settings and threshold from the test run (or a numeric
    ``threshold`` with the settings of ``cfg``), checked, then :func:`predict_folder`.
    ``load_model(cfg, device)`` → ``(model, extractor)``. ``explicit``: the settings of ``cfg`` chosen on
    purpose, which must agree with the test run's (None: those that differ from the defaults). Every image is
    decoded before the model loads: an unreadable one stops the run before anything is written (unless
    ``skip_bad_images``)."""
    from vlmdiff.validate import resolve_device, validate_test_config

    number, source = threshold_source(threshold, cfg.run_dir)
    if source is None:
        value, method, run = number, ("pooled" if cfg.metrics_mode == "paper" else "max"), cfg.run_dir
    else:
        if explicit is None:
            defaults = type(cfg)()
            explicit = {k for k in INHERITED if getattr(cfg, k) != getattr(defaults, k)}
        cfg = inherit_test_run(cfg, source, set(explicit), force=force_settings)
        value, method = read_threshold(source, threshold_class)
        run = source.parent
    validate_test_config(cfg, need_data=False)
    out = Path(out) if out else run / "predict"
    images = find_images(folder)
    bad = check_images(images)
    if bad and not skip_bad_images:
        refuse_bad_images(bad)
    model, extractor = load_model(cfg, resolve_device(cfg.device))
    settings = {k: getattr(cfg, k) for k in INHERITED}
    rows = predict_folder(model, extractor, folder, out, threshold=value, image_size=cfg.image_size,
                          method=method, batch_size=cfg.batch_size, scoring=scoring_settings(cfg),
                          skip_bad_images=skip_bad_images, settings=settings, bad_images=bad)
    flagged = sum(r["anomalous"] for r in rows)
    print(f"{flagged} of {len(rows)} images anomalous (threshold {value:.4f}, image size {cfg.image_size}); "
          f"see {out / 'predictions.csv'}")
    return 0
