"""Result tables, per-image visuals, curves and a static HTML report of a test run (docs/design.md §13.1).

Tables: per class and mean, as Markdown, CSV and JSON (with the run's configuration). Visuals keep the
reference's file names (``<name>-input.jpg``, ``-reconstruction.jpg``, ``-samples.jpg``, ``-features.jpg``,
``-heatmap.png``) but fix its colours (docs/design.md D9): images are written in the right channel order,
the features image is clipped instead of wrapping around, and the heatmap blends a colour map with the RGB
input.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.io import atomic_path, write_bytes, write_json, write_text  # noqa: E402
from vlmdiff.metrics import METRICS, binary_curve  # noqa: E402

HEADERS = {"AUROC_I": "mAU-ROC_I", "AP_I": "mAP_I", "F1max_I": "mF1-max_I", "AUROC_P": "mAU-ROC_P",
           "AP_P": "mAP_P", "F1max_P": "mF1-max_P", "AUPRO": "mAU-PRO_R"}


def header(metric: str) -> str:
    """The paper's column name of a metric; a metric without one is shown under its own key."""
    return HEADERS.get(metric, metric)


# ----------------------------------------------------------------------------- tables
def _fmt(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def markdown_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """Per-class rows then the mean, values in % with one decimal (as the paper's table)."""
    lines = ["| class | " + " | ".join(header(m) for m in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for cls, vals in results.items():
        name = f"**{cls}**" if cls == "mean" else cls
        lines.append(f"| {name} | " + " | ".join(_fmt(vals[m]) for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


def write_tables(results: Mapping[str, Mapping[str, float]], out_dir: str | os.PathLike,
                 config: Mapping | None = None) -> dict[str, Path]:
    """``results.md``, ``results.csv``, ``results.json`` (values as fractions; JSON also holds the config)."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["class", *METRICS])
    for cls, vals in results.items():
        writer.writerow([cls, *(f"{vals[m]:.6f}" for m in METRICS)])
    paths = {"md": out_dir / "results.md", "csv": out_dir / "results.csv", "json": out_dir / "results.json"}
    write_text(paths["md"], markdown_table(results))
    write_text(paths["csv"], buf.getvalue())
    clean = {c: {m: (None if not np.isfinite(v) else v) for m, v in vals.items()} for c, vals in results.items()}
    write_json(paths["json"], {"results": clean, "config": dict(config or {})})
    return paths


# ----------------------------------------------------------------------------- per-image visuals
def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` or ``(H, W, 3)`` RGB in [0, 1] → ``(H, W, 3)`` uint8, clipped (never wrapped)."""
    image = np.asarray(image, dtype=np.float64)
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def heatmap_overlay(rgb: np.ndarray, amap: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                    alpha: float = 0.5) -> np.ndarray:
    """JET colour map of ``amap`` (min–max scaled, or to [vmin, vmax]) blended with the RGB image; RGB out."""
    lo = amap.min() if vmin is None else vmin
    hi = amap.max() if vmax is None else vmax
    scaled = np.clip((amap - lo) / max(hi - lo, 1e-12), 0, 1)
    colour = cv2.applyColorMap(np.round(255 * scaled).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]  # BGR → RGB
    return np.round((1 - alpha) * rgb.astype(np.float64) + alpha * colour).astype(np.uint8)


def outline_mask(rgb: np.ndarray, mask: np.ndarray | None, colour=(0, 255, 0), thickness: int = 1) -> np.ndarray:
    """``rgb`` (uint8 ``(H, W, 3)``) with the outline of the binary ``mask`` drawn on it (a copy)."""
    out = np.ascontiguousarray(rgb.copy())
    if mask is None or not np.any(mask):
        return out
    m = np.asarray(mask) > 0
    if m.shape != out.shape[:2]:
        m = cv2.resize(m.astype(np.uint8), out.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), thickness)
    return out


def write_gallery_images(out_dir: str | os.PathLike, name: str, *, input_rgb: np.ndarray, amap: np.ndarray,
                         mask: np.ndarray | None, vmin: float, vmax: float) -> dict[str, Path]:
    """The report's pictures of one image: the input with the ground truth outlined (``-input_gt.png``) and
    the anomaly map on a colour scale shared by its class, ``[vmin, vmax]`` (``-heatmap_class.png``), so
    that a normal image shows no hot spot of its own."""
    out_dir = Path(out_dir)
    inp = to_uint8_rgb(input_rgb) if input_rgb.dtype != np.uint8 else input_rgb
    if amap.shape != inp.shape[:2]:
        inp = cv2.resize(inp, amap.shape[::-1], interpolation=cv2.INTER_AREA)
    files = {"input_gt": out_dir / f"{name}-input_gt.png", "heatmap_class": out_dir / f"{name}-heatmap_class.png"}
    _write_image(files["input_gt"], outline_mask(inp, mask))
    _write_image(files["heatmap_class"], heatmap_overlay(inp, amap, vmin=vmin, vmax=vmax))
    return files


def _write_image(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise ValueError(f"{path}: could not encode image")
    write_bytes(path, buf.tobytes())


def write_visuals(out_dir: str | os.PathLike, name: str, *, input_rgb: np.ndarray, samples_rgb: np.ndarray,
                  amap: np.ndarray, reconstruction_rgb: np.ndarray | None = None, vmax: float | None = None) -> dict:
    """The reference's per-image pictures (RGB inputs in [0, 1] or uint8; ``amap`` ``(H, W)``)."""
    out_dir = Path(out_dir)
    inp = to_uint8_rgb(input_rgb) if input_rgb.dtype != np.uint8 else input_rgb
    files = {"input": out_dir / f"{name}-input.jpg", "samples": out_dir / f"{name}-samples.jpg",
             "features": out_dir / f"{name}-features.jpg", "heatmap": out_dir / f"{name}-heatmap.png"}
    _write_image(files["input"], inp)
    _write_image(files["samples"], to_uint8_rgb(samples_rgb) if samples_rgb.dtype != np.uint8 else samples_rgb)
    if reconstruction_rgb is not None:
        files["reconstruction"] = out_dir / f"{name}-reconstruction.jpg"
        _write_image(files["reconstruction"], to_uint8_rgb(reconstruction_rgb))
    grey = np.clip(np.round(amap * 255), 0, 255).astype(np.uint8)
    _write_image(files["features"], np.repeat(grey[..., None], 3, axis=-1))
    _write_image(files["heatmap"], heatmap_overlay(inp, amap, vmax=vmax))
    return files


# ----------------------------------------------------------------------------- curves
def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def write_class_plots(out_dir: str | os.PathLike, cls: str, scores: np.ndarray, labels: np.ndarray) -> dict[str, Path]:
    """Image-level ROC and PR curves and the score histogram (normal vs anomalous) of one class."""
    out_dir = Path(out_dir)
    labels = np.asarray(labels).astype(bool)
    tps, fps, n_pos, n_neg = binary_curve(np.asarray(scores), labels)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    if n_pos and n_neg:
        axes[0].plot(np.r_[0, fps / n_neg], np.r_[0, tps / n_pos])
        axes[1].step(tps / n_pos, tps / (tps + fps), where="post")
    axes[0].plot([0, 1], [0, 1], ":", color="grey")
    axes[0].set(title=f"{cls}: ROC (image)", xlabel="false positive rate", ylabel="true positive rate")
    axes[1].set(title=f"{cls}: precision-recall (image)", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    bins = np.linspace(np.min(scores), np.max(scores) + 1e-12, 25)
    axes[2].hist(np.asarray(scores)[~labels], bins=bins, alpha=0.6, label="normal")
    axes[2].hist(np.asarray(scores)[labels], bins=bins, alpha=0.6, label="anomalous")
    axes[2].set(title=f"{cls}: image scores", xlabel="score")
    axes[2].legend()
    path = out_dir / f"curves_{cls}.png"
    _save_figure(fig, path)
    return {"curves": path}


# ----------------------------------------------------------------------------- HTML
def write_html_report(path: str | os.PathLike, results: Mapping[str, Mapping[str, float]], *,
                      plots: Sequence[str | os.PathLike] = (), gallery: Sequence[Mapping] = (),
                      title: str = "VLMDiff test report", config: Mapping | None = None,
                      about: Mapping[str, str] | None = None) -> Path:
    """A static page: what was run (``about``: e.g. scorer, checkpoint, protocol), the metric table, the
    curves, and a gallery (``{"caption", "images": [paths], "labels": [column labels]}``, labels optional).

    Image paths are written relative to the report's folder.
    """
    path = Path(path)

    def rel(p) -> str:
        return html.escape(os.path.relpath(Path(p), path.parent))

    rows = "".join(
        f"<tr><td>{'<b>mean</b>' if c == 'mean' else html.escape(c)}</td>"
        + "".join(f"<td>{_fmt(v[m])}</td>" for m in METRICS) + "</tr>" for c, v in results.items())
    head = "".join(f"<th>{header(m)}</th>" for m in METRICS)
    plot_html = "".join(f'<img class="plot" src="{rel(p)}" alt="curves">' for p in plots)
    def card(g: Mapping) -> str:
        labels = list(g.get("labels") or [Path(p).name for p in g["images"]])
        cells = "".join(f'<div class="cell"><img src="{rel(p)}" alt="{html.escape(lab)}"><div class="lab">'
                        f'{html.escape(lab)}</div></div>' for p, lab in zip(g["images"], labels))
        return f'<figure><figcaption>{html.escape(g["caption"])}</figcaption>{cells}</figure>'

    cards = "".join(card(g) for g in gallery)
    about_html = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in (about or {}).items())
    cfg = html.escape(json.dumps(dict(config or {}), indent=2, default=str))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child{{text-align:left}}
img{{width:160px;margin:2px;image-rendering:pixelated}} img.plot{{width:auto;max-width:900px;display:block}}
figure{{display:inline-block;margin:6px;border:1px solid #ddd;padding:4px}} .cell{{display:inline-block;
vertical-align:top;text-align:center}} .lab{{font-size:11px;color:#444;max-width:164px}}
dl{{display:grid;grid-template-columns:max-content auto;gap:2px 12px}} dt{{font-weight:bold}} dd{{margin:0}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<dl id="about">{about_html}</dl>
<h2>Metrics (%)</h2><table id="results"><tr><th>class</th>{head}</tr>{rows}</table>
<h2>Image-level curves</h2>{plot_html}
<h2>Gallery</h2>{cards}
<h2>Configuration</h2><pre>{cfg}</pre>
</body></html>
"""
    write_text(path, page)
    return path
