"""Item lists of the benchmarks, read from their on-disk layouts (docs/design.md §8.2).

Each reader returns :class:`Record` s; nothing is taken from lists shipped with the code. Paths in
``filename`` follow the reference (relative to the root for MVTec, VisA and custom folders; root-joined
for Real-IAD; the meta file's relative path for COCO-AD) and key the caption files.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vlmdiff.data.images import is_image

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Record:
    """One image of a dataset split."""

    image: Path
    mask: Path | None  # None: no pixel annotation (normal image, or an image-level-only dataset)
    label: int  # 1 = anomalous
    clsname: str
    filename: str
    has_mask: bool = True  # False: only the image-level label is known


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root not found")
    return root


def _select(found: Sequence[str], classes: Sequence[str] | None, where: Path) -> list[str]:
    if not found:
        raise FileNotFoundError(f"{where}: no class folders found")
    if classes is None:
        return sorted(found)
    missing = [c for c in classes if c not in found]
    if missing:
        raise FileNotFoundError(f"{where}: class(es) {missing} not found; available: {sorted(found)}")
    return list(classes)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image(p)) if folder.is_dir() else []


def log_summary(records: Sequence[Record], name: str, split: str) -> None:
    counts = Counter((r.clsname, r.label) for r in records)
    classes = sorted({r.clsname for r in records})
    lines = [f"  {c}: {counts[(c, 0)]} normal, {counts[(c, 1)]} anomalous" for c in classes]
    log.info("%s %s: %d images in %d classes\n%s", name, split, len(records), len(classes), "\n".join(lines))


def mvtec_records(root, split: str, classes: Sequence[str] | None = None, *, require_masks: bool = True) -> list[Record]:
    """MVTec-AD layout ``<root>/<class>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}``.

    With ``require_masks=False`` (custom folders) a class without a ``ground_truth`` folder is read with
    image-level labels only; a class that has one must have a mask for every defect image.
    """
    _check_split(split)
    root = _root(root)
    found = [p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())]
    records = []
    for cls in _select(found, classes, root):
        split_dir = root / cls / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir}: split folder not found")
        gt_dir = root / cls / "ground_truth"
        with_masks = require_masks or gt_dir.is_dir()
        n_before = len(records)
        for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            defect = defect_dir.name
            if split == "train" and defect != "good":
                raise ValueError(f"{defect_dir}: the training split may only hold normal images (train/good)")
            for img in _images(defect_dir):
                mask = None
                if defect != "good" and with_masks:
                    mask = _find_mask(gt_dir / defect, img.stem)
                records.append(Record(img, mask, int(defect != "good"), cls,
                                      img.relative_to(root).as_posix(), has_mask=with_masks))
        if len(records) == n_before:
            raise ValueError(f"{split_dir}: no images in class {cls!r} ({split} split)")
    return records


def _find_mask(folder: Path, stem: str) -> Path:
    for name in (f"{stem}_mask.png", f"{stem}.png"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder / (stem + '_mask.png')}: mask of defect image {stem!r} not found")


def visa_records(root, split: str, classes: Sequence[str] | None = None, *, split_csv=None) -> list[Record]:
    """VisA with its official split file (default ``<root>/split_csv/1cls.csv``: object,split,label,image,mask)."""
    _check_split(split)
    root = _root(root)
    csv_path = Path(split_csv) if split_csv else root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: VisA split file not found")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    needed = {"object", "split", "label", "image", "mask"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError(f"{csv_path}: expected columns {sorted(needed)}")
    wanted = _select(sorted({r["object"] for r in rows}), classes, csv_path)
    records = []
    for row in rows:
        if row["split"] != split or row["object"] not in wanted:
            continue
        anomalous = row["label"] == "anomaly"
        mask = root / row["mask"] if anomalous and row["mask"] else None
        if anomalous and mask is None:
            raise ValueError(f"{csv_path}: anomalous image {row['image']!r} has no mask")
        records.append(Record(root / row["image"], mask, int(anomalous), row["object"], row["image"]))
    _check_nonempty(records, wanted, csv_path, split)
    return records


def _check_nonempty(records, classes, where, split):
    present = {r.clsname for r in records}
    empty = [c for c in classes if c not in present]
    if empty:
        raise ValueError(f"{where}: no {split} images for class(es) {empty}")


def realiad_records(root, split: str, classes: Sequence[str] | None = None, *, json_dir=None) -> list[Record]:
    """Real-IAD: class folders in ``<root>``, official per-class JSON splits.

    The JSON folder defaults to ``<root>/../real_iad_jsons/realiad_jsons`` (the reference's path) or
    ``<root>/../real_iad_jsons`` (the README's layout).
    """
    _check_split(split)
    root = _root(root)
    if json_dir is None:
        candidates = [root.parent / "real_iad_jsons" / "realiad_jsons", root.parent / "real_iad_jsons"]
        json_dir = next((c for c in candidates if c.is_dir()), candidates[0])
    json_dir = Path(json_dir)
    found = [p.name for p in root.iterdir() if p.is_dir()]
    records = []
    for cls in _select(found, classes, root):
        path = json_dir / f"{cls}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: Real-IAD split file of class {cls!r} not found")
        try:
            entries = json.loads(path.read_text())[split]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{path}: not a Real-IAD split file with a {split!r} list ({err})") from err
        normal = json.loads(path.read_text()).get("meta", {}).get("normal_class", "OK")
        for e in entries:
            anomalous = e["anomaly_class"] != normal
            if anomalous and not e.get("mask_path"):
                raise ValueError(f"{path}: anomalous image {e['image_path']!r} has no mask_path")
            img = root / cls / e["image_path"]
            mask = root / cls / e["mask_path"] if anomalous else None
            records.append(Record(img, mask, int(anomalous), cls, str(img)))
    return records


def coco_records(root, split: str, *, coco_part: int = 0) -> list[Record]:
    """COCO-AD (ADer's construction): ``<root>/meta_20_<k>.json`` with ``train``/``test`` → ``coco`` items."""
    _check_split(split)
    root = _root(root)
    path = root / f"meta_20_{coco_part}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO-AD meta file of split {coco_part} not found")
    try:
        items = json.loads(path.read_text())[split]["coco"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: expected {{'{split}': {{'coco': [...]}}}} ({err})") from err
    records = []
    for it in items:
        anomalous = bool(it["anomaly"])
        if anomalous and not it.get("mask_path"):
            raise ValueError(f"{path}: anomalous image {it['img_path']!r} has no mask_path")
        mask = root / it["mask_path"] if anomalous else None
        records.append(Record(root / it["img_path"], mask, int(anomalous), "coco", it["img_path"]))
    if not records:
        raise ValueError(f"{path}: no {split} images")
    return records
