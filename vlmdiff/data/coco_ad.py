"""COCO-AD, built from the COCO 2017 instance annotations (the benchmark read by ``layouts.coco_records``).

The 80 categories get labels 0..79 in ascending category-id order; split k holds out labels
``20k … 20k+19`` as anomalies, the other 60 are normal. Only images with at least one instance annotation
take part, in the order of the annotation index (``COCO.imgToAnns``: first annotation of each image).

* train = the train2017 images whose instances are all normal (the others are dropped);
* test = every annotated val2017 image, anomalous iff one of its instances is held out, with a mask
  ``val2017_mask_ad_20_<k>/<stem>.png``: 3 channels, 255 on every pixel of every held-out instance
  (polygons filled, RLE and crowd masks decoded, all through ``pycocotools.mask``), 0 elsewhere;
* ``meta_20_<k>.json`` = ``{"train": {"coco": [items]}, "test": {"coco": [items]}}`` with items
  ``{img_path: "train2017/<file>" | "val2017/<file>", mask_path: "" | "val2017_mask_ad_20_<k>/<stem>.png",
  cls_name: "coco", specie_name: "", anomaly: 0 | 1}``, paths relative to the COCO root.

Everything is written into the COCO root, atomically: each mask goes to a temporary file renamed onto its
name, so an interrupted build leaves only whole masks; a rerun keeps them, removes stray temporary files
and writes the rest. Each split's meta file is written after all masks, so its presence means the split is
complete. An image's instance masks are decoded once for all the splits being built.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from utils.io import atomic_path, write_json

NUM_CATEGORIES = 80
HELD_OUT_PER_SPLIT = 20  # the reference generator's ``ano_num``
SPLITS = tuple(range(NUM_CATEGORIES // HELD_OUT_PER_SPLIT))  # 0, 1, 2, 3
SUBSETS = ("train2017", "val2017")


def annotation_file(coco_root, subset: str) -> Path:
    return Path(coco_root) / "annotations" / f"instances_{subset}.json"


def mask_dir_name(split: int) -> str:
    return f"val2017_mask_ad_{HELD_OUT_PER_SPLIT}_{split}"


def meta_file(coco_root, split: int) -> Path:
    return Path(coco_root) / f"meta_{HELD_OUT_PER_SPLIT}_{split}.json"


def held_out_labels(split: int) -> range:
    """Labels held out as anomalies by split ``split``: ``20k … 20k+19``."""
    if split not in SPLITS:
        raise ValueError(f"COCO-AD split must be one of {list(SPLITS)}, got {split!r}")
    return range(HELD_OUT_PER_SPLIT * split, HELD_OUT_PER_SPLIT * (split + 1))


def category_labels(categories: Sequence[dict]) -> dict[int, int]:
    """Category id → label 0..N-1 in ascending id order."""
    return {cat_id: label for label, cat_id in enumerate(sorted(c["id"] for c in categories))}


def held_out_categories(categories: Sequence[dict], split: int) -> list[str]:
    """Names of the categories split ``split`` holds out, in label order."""
    by_id = {c["id"]: c["name"] for c in categories}
    label_to_id = {label: cat_id for cat_id, label in category_labels(categories).items()}
    return [by_id[label_to_id[label]] for label in held_out_labels(split)]


def check_inputs(coco_root) -> None:
    """Raise ``FileNotFoundError`` naming the first missing annotation file or image folder."""
    root = Path(coco_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: COCO root folder not found")
    for subset in SUBSETS:
        if not annotation_file(root, subset).is_file():
            raise FileNotFoundError(f"{annotation_file(root, subset)}: COCO instance annotation file not found")
    for subset in SUBSETS:
        if not (root / subset).is_dir():
            raise FileNotFoundError(f"{root / subset}: COCO image folder not found")


def read_instances(path: Path) -> COCO:
    """An ``instances_*.json`` file indexed by pycocotools, its structure checked (errors name the file)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid JSON file ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise ValueError(f"{path}: expected a COCO instances file with 'images', 'annotations' and 'categories' lists")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    for ann in data["annotations"]:
        if ann.get("image_id") not in coco.imgs:
            raise ValueError(f"{path}: annotation {ann.get('id')!r} refers to image {ann.get('image_id')!r}, "
                             "which is not in 'images'")
        if ann.get("category_id") not in coco.cats:
            raise ValueError(f"{path}: annotation {ann.get('id')!r} has category {ann.get('category_id')!r}, "
                             "which is not in 'categories'")
    for img in data["images"]:
        if not all(k in img for k in ("id", "file_name", "height", "width")):
            raise ValueError(f"{path}: image {img.get('id')!r} lacks one of 'id', 'file_name', 'height', 'width'")
    return coco


def _check_segmentation(path: Path, ann: dict, img: dict) -> None:
    segm = ann.get("segmentation")
    if isinstance(segm, list) and segm and all(isinstance(p, list) and p and len(p) % 2 == 0 for p in segm):
        return
    if isinstance(segm, dict) and "counts" in segm and list(segm.get("size", ())) == [img["height"], img["width"]]:
        return
    raise ValueError(f"{path}: annotation {ann.get('id')!r} has no usable segmentation (polygons, or an RLE of "
                     f"size [{img['height']}, {img['width']}])")


def _check_categories(train: COCO, val: COCO, train_file: Path, val_file: Path) -> None:
    if len(train.cats) != NUM_CATEGORIES:
        raise ValueError(f"{train_file}: expected the {NUM_CATEGORIES} COCO categories, found {len(train.cats)}")
    if {c: v.get("name") for c, v in val.cats.items()} != {c: v.get("name") for c, v in train.cats.items()}:
        raise ValueError(f"{val_file}: categories differ from those of {train_file}")


def instance_mask(segmentation, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool mask of one instance: polygons (filled, parts merged), uncompressed or compressed RLE."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle) > 0.5


def _item(img_path: str, mask_path: str = "") -> dict:
    return {"img_path": img_path, "mask_path": mask_path, "cls_name": "coco", "specie_name": "",
            "anomaly": int(bool(mask_path))}


@dataclass
class _MaskJob:
    """The masks still to write for one val2017 image."""

    source: str  # the annotation file, for error messages
    height: int
    width: int
    instances: list  # (annotation id, label, segmentation) of the instances held out by a target split
    targets: list  # (split, mask file, frozenset of the split's held-out labels)


def _write_masks(job: _MaskJob) -> list[tuple[int, str]]:
    decoded: dict[int, np.ndarray] = {}  # each instance decoded once for all target splits
    for _, path, labels in job.targets:
        union = np.zeros((job.height, job.width), bool)
        for i, (ann_id, label, segm) in enumerate(job.instances):
            if label in labels:
                if i not in decoded:
                    try:
                        decoded[i] = instance_mask(segm, job.height, job.width)
                    except Exception as err:  # pycocotools raises several types on malformed polygons
                        raise ValueError(f"{job.source}: cannot decode annotation {ann_id!r} ({err})") from err
                union |= decoded[i]
        rgb = np.repeat(np.where(union, 255, 0).astype(np.uint8)[..., None], 3, axis=2)  # (H, W, 3)
        with atomic_path(path) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
    return [(split, path) for split, path, _ in job.targets]


@dataclass
class SplitSummary:
    split: int
    held_out: list[str]  # category names, label order
    train: int = 0
    test_normal: int = 0
    test_anomalous: int = 0
    masks_written: int = 0
    meta: dict = field(default_factory=dict, repr=False)


def _plan(root: Path, train: COCO, val: COCO, splits: Sequence[int]) -> tuple[list[SplitSummary], list[_MaskJob]]:
    """Item lists of every split and the masks still missing (nothing is written)."""
    labels = category_labels(list(train.cats.values()))
    held = {k: frozenset(held_out_labels(k)) for k in splits}
    summaries = [SplitSummary(k, held_out_categories(list(train.cats.values()), k),
                              meta={"train": {"coco": []}, "test": {"coco": []}}) for k in splits]
    for img_id, anns in train.imgToAnns.items():
        present = {labels[a["category_id"]] for a in anns}
        for s in summaries:
            if not present & held[s.split]:
                s.meta["train"]["coco"].append(_item(f"train2017/{train.imgs[img_id]['file_name']}"))
    jobs = []
    val_file = annotation_file(root, "val2017")
    for img_id, anns in val.imgToAnns.items():
        img = val.imgs[img_id]
        present = {labels[a["category_id"]] for a in anns}
        targets = []
        for s in summaries:
            mask_path = ""
            if present & held[s.split]:
                mask_path = f"{mask_dir_name(s.split)}/{Path(img['file_name']).stem}.png"
                if not (root / mask_path).is_file():
                    targets.append((s.split, str(root / mask_path), held[s.split]))
            s.meta["test"]["coco"].append(_item(f"val2017/{img['file_name']}", mask_path))
        if targets:
            wanted = frozenset().union(*(lab for _, _, lab in targets))
            instances = []
            for a in anns:
                if labels[a["category_id"]] in wanted:
                    _check_segmentation(val_file, a, img)
                    instances.append((a.get("id"), labels[a["category_id"]], a["segmentation"]))
            jobs.append(_MaskJob(str(val_file), img["height"], img["width"], instances, targets))
    for s in summaries:
        s.train = len(s.meta["train"]["coco"])
        s.test_anomalous = sum(it["anomaly"] for it in s.meta["test"]["coco"])
        s.test_normal = len(s.meta["test"]["coco"]) - s.test_anomalous
    return summaries, jobs


def _check_images(root: Path, summaries: Sequence[SplitSummary]) -> None:
    paths = {it["img_path"] for s in summaries for part in ("train", "test") for it in s.meta[part]["coco"]}
    missing = sorted(p for p in paths if not (root / p).is_file())
    if missing:
        raise FileNotFoundError(f"{root / missing[0]}: image not found ({len(missing)} annotated image(s) missing)")


def build_coco_ad(coco_root, splits: Sequence[int] = SPLITS, *, workers: int = 1, progress: bool = True,
                  on_mask_written: Callable[[str], None] | None = None) -> list[SplitSummary]:
    """Write the masks and ``meta_20_<k>.json`` of the COCO-AD splits ``splits`` into ``coco_root``.

    Args:
        coco_root: folder holding ``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``.
        splits: split indices in 0..3.
        workers: processes writing masks (1: in this process).
        progress: show a progress bar over the images whose masks are missing.
        on_mask_written: called with each mask file once it is in place.

    Returns:
        One :class:`SplitSummary` per split (item counts and held-out category names).

    Inputs are checked before anything is written: missing files or folders raise ``FileNotFoundError``,
    malformed annotation files ``ValueError``, each naming the file.
    """
    splits = sorted(set(splits))
    for k in splits:
        held_out_labels(k)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    root = Path(coco_root)
    check_inputs(root)
    val = read_instances(annotation_file(root, "val2017"))
    train = read_instances(annotation_file(root, "train2017"))
    _check_categories(train, val, annotation_file(root, "train2017"), annotation_file(root, "val2017"))
    summaries, jobs = _plan(root, train, val, splits)
    _check_images(root, summaries)

    for k in splits:
        folder = root / mask_dir_name(k)
        folder.mkdir(exist_ok=True)
        for stray in folder.glob(".*.png.*.tmp"):  # left by an interrupted build
            stray.unlink()
    from tqdm.auto import tqdm

    written_per_split = {k: 0 for k in splits}
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(jobs) > 1:
            pool = stack.enter_context(multiprocessing.Pool(min(workers, len(jobs))))
            results = pool.imap(_write_masks, jobs, chunksize=8)
        else:
            results = map(_write_masks, jobs)
        bar = stack.enter_context(tqdm(total=len(jobs), desc="COCO-AD masks", unit="img", disable=not progress))
        for written in results:
            for k, path in written:
                written_per_split[k] += 1
                if on_mask_written is not None:
                    on_mask_written(path)
            bar.update(1)
    for s in summaries:
        s.masks_written = written_per_split[s.split]
        write_json(meta_file(root, s.split), s.meta, indent=4)
    return summaries


def format_summary(summaries: Sequence[SplitSummary]) -> str:
    """The held-out categories and the item counts of each split, as printed by the builder."""
    lines = [f"split {s.split} holds out labels {s.split * HELD_OUT_PER_SPLIT}-"
             f"{(s.split + 1) * HELD_OUT_PER_SPLIT - 1}: {', '.join(s.held_out)}" for s in summaries]
    lines.append("")
    lines.append(f"{'split':>5}  {'train':>7}  {'test normal':>11}  {'test anomalous':>14}  {'masks written':>13}")
    for s in summaries:
        lines.append(f"{s.split:>5}  {s.train:>7}  {s.test_normal:>11}  {s.test_anomalous:>14}  {s.masks_written:>13}")
    return "\n".join(lines)
