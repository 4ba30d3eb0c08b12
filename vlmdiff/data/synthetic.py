"""A bundled multi-class anomaly benchmark in the MVTec-AD layout, generated offline and deterministically.

Classes come from scikit-image's sample photographs (``brick``, ``grass``, ``gravel``, ``tissue`` =
the immunohistochemistry slide) and from procedural generators (``weave``, a textile; ``disc``, an
object: a machined washer on a plain background). Normal images vary by crop, flip, rotation,
brightness and (objects) position. Defects: ``scratch``, ``stain`` (colour spot), ``cut_paste`` (a patch
of another class), ``hole`` (missing material) and ``deformation`` (a local warp). Every mask covers
exactly the pixels that differ from the defect-free image. Same seed → identical bytes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter, map_coordinates

from vlmdiff.choices import SYNTHETIC_CLASSES as CLASSES  # the names, also read by --help without numpy
from vlmdiff.choices import SYNTHETIC_DEFAULT_CLASSES as DEFAULT_CLASSES

DEFECTS = ("scratch", "stain", "cut_paste", "hole", "deformation")
TINTS = {"brick": (1.0, 0.62, 0.45), "grass": (0.55, 0.9, 0.45), "gravel": (0.9, 0.88, 0.8)}
SOURCE_PHOTOS = {"brick": "brick", "grass": "grass", "gravel": "gravel", "tissue": "immunohistochemistry"}


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, SOURCE_PHOTOS[name])()
    if name not in TINTS:
        return img
    grey = img.astype(np.float32)
    return np.clip(grey[..., None] * np.array(TINTS[name], np.float32), 0, 255).astype(np.uint8)


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


def _texture_crop(src: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    crop = int(min(src.shape[:2]) * rng.uniform(0.45, 0.6))
    y, x = rng.integers(0, src.shape[0] - crop + 1), rng.integers(0, src.shape[1] - crop + 1)
    img = _resize(np.ascontiguousarray(src[y:y + crop, x:x + crop]), size)
    img = np.rot90(img, k=int(rng.integers(4)))
    return img[:, ::-1] if rng.random() < 0.5 else img


def _weave(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / rng.uniform(14, 16)
    phase = rng.uniform(0, 2 * np.pi, 2)
    warp = np.sin(2 * np.pi * xx / period + phase[0])
    weft = np.sin(2 * np.pi * yy / period + phase[1])
    checker = np.sign(np.sin(np.pi * xx / period + phase[0]) * np.sin(np.pi * yy / period + phase[1]))
    pattern = 0.5 + 0.25 * np.where(checker > 0, warp, weft) + 0.03 * rng.standard_normal((size, size))
    colour = np.array([0.35, 0.45, 0.75]) * rng.uniform(0.95, 1.05)
    return np.clip(pattern[..., None] * colour * 255 * 1.4, 0, 255).astype(np.uint8)


def _disc(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2 + rng.uniform(-0.04, 0.04, 2) * size
    r = np.hypot(yy - cy, xx - cx) / size
    background = 40 + 6 * rng.standard_normal((size, size))
    metal = 150 + 40 * np.cos(np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 6.28)) * (r / 0.38)
    grey = np.where((r < 0.38) & (r > 0.14), metal, background)
    grey = gaussian_filter(grey, 0.7) + 3 * rng.standard_normal((size, size))
    return np.clip(grey[..., None] * np.array([1.0, 0.97, 0.9]), 0, 255).astype(np.uint8)


def normal_image(name: str, size: int, rng: np.random.Generator, photo: np.ndarray | None = None) -> np.ndarray:
    """A defect-free ``(size, size, 3)`` uint8 image of class ``name``."""
    if name == "weave":
        img = _weave(size, rng)
    elif name == "disc":
        img = _disc(size, rng)
    else:
        img = _texture_crop(photo if photo is not None else _photo(name), size, rng)
    gain = rng.uniform(0.92, 1.08)
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _centre(size: int, rng: np.random.Generator) -> tuple[float, float]:
    return tuple(rng.uniform(0.3, 0.7, 2) * size)  # defects stay off the border


def _blob(size: int, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    """A soft irregular blob mask ``(size, size)`` in [0, 1]."""
    cy, cx = _centre(size, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ry, rx = rng.uniform(*radius, 2) * size
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.2 * np.sin(3 * angle + rng.uniform(0, 6.28))
    d = np.hypot((yy - cy) / ry, (xx - cx) / rx) / wobble
    return np.clip((1.15 - d) / 0.3, 0, 1)


def add_defect(img: np.ndarray, kind: str, rng: np.random.Generator, donor: np.ndarray) -> np.ndarray:
    """Return a defective copy of ``img`` (uint8 ``(H, W, 3)``); ``donor`` feeds ``cut_paste``."""
    size = img.shape[0]
    out = img.astype(np.float32)
    if kind == "scratch":
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        y, x = _centre(size, rng)
        points = [(x, y)]
        for _ in range(3):
            step = rng.uniform(0.06, 0.12) * size
            a = rng.uniform(0, 2 * np.pi)
            x, y = x + step * np.cos(a), y + step * np.sin(a)
            points.append((float(np.clip(x, 2, size - 3)), float(np.clip(y, 2, size - 3))))
        draw.line(points, fill=255, width=max(1, size // 64))
        alpha = np.asarray(canvas, np.float32)[..., None] / 255
        shade = 235.0 if out.mean() < 128 else 20.0
        out = out * (1 - alpha) + shade * alpha
    elif kind == "stain":
        alpha = (_blob(size, rng, (0.05, 0.09)) * rng.uniform(0.6, 0.85))[..., None]
        colour = rng.choice([[150, 70, 20], [30, 30, 30], [200, 190, 60], [90, 20, 110]])
        out = out * (1 - alpha) + np.array(colour, np.float32) * alpha
    elif kind == "cut_paste":
        h, w = (rng.uniform(0.12, 0.2, 2) * size).astype(int)
        y, x = (np.array(_centre(size, rng)) - [h / 2, w / 2]).astype(int)
        sy, sx = rng.integers(0, size - h), rng.integers(0, size - w)
        out[y:y + h, x:x + w] = donor[sy:sy + h, sx:sx + w]
    elif kind == "hole":
        alpha = (_blob(size, rng, (0.05, 0.08)) > 0.5)[..., None]
        out = np.where(alpha, 8.0 + 4 * rng.standard_normal(out.shape), out)
    elif kind == "deformation":
        cy, cx = _centre(size, rng)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        radius = rng.uniform(0.08, 0.13) * size
        weight = np.clip(1 - np.hypot(yy - cy, xx - cx) / radius, 0, 1) ** 2
        angle = rng.uniform(1.5, 2.5) * weight  # a swirl: rotate around the centre, strongest inside
        sy = cy + (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)
        sx = cx + (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
        out = np.stack([map_coordinates(out[..., c], [sy, sx], order=1, mode="reflect") for c in range(3)], -1)
    else:
        raise ValueError(f"unknown defect {kind!r}; valid: {list(DEFECTS)}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", compress_level=6)


def class_images(classes: Sequence[str], ci: int, *, defects: Sequence[str] = DEFECTS, image_size: int = 128,
                 n_train: int = 24, n_test_good: int = 6, n_test_defect: int = 10, seed: int = 0):
    """Yield ``(relative path, image, defect-free image or None, mask path, mask or None)`` for every image of
    class ``classes[ci]``, in the benchmark's generation order (the one :func:`generate` writes): normal
    training images, normal test images, then the defective ones (types round-robin)."""
    cls = classes[ci]
    rng = np.random.default_rng([seed, ci])
    photo = None if cls in ("weave", "disc") else _photo(cls)
    donor_cls = classes[(ci + 1) % len(classes)] if len(classes) > 1 else "weave"
    donor_photo = None if donor_cls in ("weave", "disc") else _photo(donor_cls)
    for i in range(n_train):
        yield f"{cls}/train/good/{i:03d}.png", normal_image(cls, image_size, rng, photo), None, None, None
    for i in range(n_test_good):
        yield f"{cls}/test/good/{i:03d}.png", normal_image(cls, image_size, rng, photo), None, None, None
    for i in range(n_test_defect):
        kind = defects[i % len(defects)]
        clean = normal_image(cls, image_size, rng, photo)
        bad = add_defect(clean, kind, rng, normal_image(donor_cls, image_size, rng, donor_photo))
        mask = np.any(bad != clean, axis=-1).astype(np.uint8) * 255
        stem = f"{i // len(defects):03d}"
        yield f"{cls}/test/{kind}/{stem}.png", bad, clean, f"{cls}/ground_truth/{kind}/{stem}_mask.png", mask


def defect_free_counterparts(dataset_dir) -> dict[str, np.ndarray]:
    """``{relative path: defect-free uint8 image}`` of every defective test image of a benchmark written by
    :func:`generate`, regenerated from its ``synthetic_dataset.json``: the perfect "normal reconstruction" a
    detector could aim at. Each regenerated defective image is checked against the stored file."""
    dataset_dir = Path(dataset_dir)
    info_file = dataset_dir / "synthetic_dataset.json"
    if not info_file.is_file():
        raise FileNotFoundError(f"{info_file}: not a benchmark written by the synthetic generator")
    info = json.loads(info_file.read_text())
    settings = {k: info[k] for k in ("defects", "image_size", "n_train", "n_test_good", "n_test_defect", "seed")}
    out = {}
    for ci in range(len(info["classes"])):
        for rel, img, clean, _, _ in class_images(info["classes"], ci, **settings):
            if clean is None:
                continue
            stored = np.asarray(Image.open(dataset_dir / rel).convert("RGB"))
            if not np.array_equal(stored, img):
                raise ValueError(f"{dataset_dir / rel}: differs from what {info_file.name} regenerates")
            out[rel] = clean
    return out


def generate(out_dir, *, classes: Sequence[str] = DEFAULT_CLASSES, defects: Sequence[str] = DEFECTS,
             image_size: int = 128, n_train: int = 24, n_test_good: int = 6, n_test_defect: int = 10,
             seed: int = 0, overwrite: bool = False) -> Path:
    """Write the benchmark to ``out_dir`` (MVTec layout) and return it.

    The folder is built beside the target and renamed into place at the end, so an interrupted run never
    leaves a half-written dataset. Defect types are assigned round-robin to the defective test images.
    """
    out_dir = Path(out_dir)
    unknown = [c for c in classes if c not in CLASSES] + [d for d in defects if d not in DEFECTS]
    if unknown:
        raise ValueError(f"unknown class or defect {unknown}; classes: {list(CLASSES)}, defects: {list(DEFECTS)}")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True / --overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for ci in range(len(classes)):
            for rel, img, _, mask_rel, mask in class_images(
                    classes, ci, defects=defects, image_size=image_size, n_train=n_train, n_test_good=n_test_good,
                    n_test_defect=n_test_defect, seed=seed):
                _save_png(img, tmp / rel)
                if mask is not None:
                    _save_png(mask, tmp / mask_rel)
        info = dict(classes=list(classes), defects=list(defects), image_size=image_size, n_train=n_train,
                    n_test_good=n_test_good, n_test_defect=n_test_defect, seed=seed)
        (tmp / "synthetic_dataset.json").write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir
