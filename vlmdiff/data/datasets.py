"""Torch datasets yielding the same item dict for every benchmark (docs/design.md §8.1).

Item: ``jpg`` (3×S×S normalised image), ``hint`` (the same values), ``txt`` (caption, ``""`` without
captions), ``mask`` (1×S×S in [0, 1]), ``label`` (1 = anomalous — everywhere; the reference's class index
for MVTec/VisA is not used), ``clsname``, ``filename``, ``has_mask``, ``mask_levels`` and ``mask_between``
(:func:`mask_levels` of the mask file; 0 without one) and ``key``: the image's path relative to the dataset root with ``/`` separators, a stable name that seeds the image's test-time noise
(:mod:`vlmdiff.inference`).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlmdiff.choices import DATASETS
from vlmdiff.data.captions import Captions, match_captions
from vlmdiff.data.images import image_file_problem, image_to_tensor, load_mask, load_rgb, mask_to_tensor
from vlmdiff.data.layouts import (Record, coco_records, log_summary, mvtec_records, realiad_records,
                                  visa_records)

log = logging.getLogger(__name__)


class AnomalyDataset(Dataset):
    """Images (and masks) of a list of records, resized to ``image_size``.

    Args:
        records: the split's images.
        image_size: side S of the square output.
        captions: captions read by :mod:`vlmdiff.data.captions`, matched by filename; None gives ``""``.
        root: the dataset root; keys are the images' paths relative to it (None: the records' filenames).
    """

    def __init__(self, records: Sequence[Record], image_size: int = 256, captions: Captions | None = None,
                 root: str | os.PathLike | None = None):
        self.records = list(records)
        self.image_size = image_size
        self._keys = [_relative_key(r.image, root) if root is not None else _posix(r.filename)
                      for r in self.records]
        self.captions = ([""] * len(self.records) if captions is None
                         else match_captions([r.filename for r in self.records], captions))
        self.has_masks = all(r.has_mask for r in self.records)
        if not self.has_masks:
            log.warning("some images have image-level labels only: pixel metrics will be skipped")

    @property
    def clsnames(self) -> list[str]:
        return sorted({r.clsname for r in self.records})

    @property
    def keys(self) -> list[str]:
        """Every item's key (its path relative to the dataset root, ``/``-separated), in item order."""
        return list(self._keys)

    def image_key(self, index: int) -> str:
        return self._keys[index]

    def item_files(self, index: int) -> tuple[Path, ...]:
        """The files item ``index`` is read from: its image, and its mask when it has one."""
        r = self.records[index]
        return (Path(r.image),) if r.mask is None else (Path(r.image), Path(r.mask))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        r = self.records[index]
        img = load_rgb(r.image)
        jpg = image_to_tensor(img, self.image_size)
        if r.mask is not None:
            mask_img = load_mask(r.mask)
            if mask_img.size != img.size:
                raise ValueError(f"{r.mask}: mask size {mask_img.size} differs from its image {r.image} ({img.size})")
            mask = mask_to_tensor(mask_img, self.image_size)
            levels, between = mask_levels(mask_img)
        else:
            mask = torch.zeros(1, self.image_size, self.image_size)
            levels, between = 0, 0.0
        return {"jpg": jpg, "hint": jpg.clone(), "txt": self.captions[index], "mask": mask, "label": r.label,
                "clsname": r.clsname, "filename": r.filename, "has_mask": r.has_mask, "key": self._keys[index],
                "mask_levels": levels, "mask_between": between}


class CifarDataset(Dataset):
    """CIFAR-10/100 one-vs-rest as the reference (split 0): train on classes ``0 … n/2−1``; the test set is
    the whole test batch with label 1 for classes ``n/2 … n−1``. Image-level labels only (no pixel masks).
    """

    def __init__(self, root, split: str, *, num_classes: int = 10, image_size: int = 256,
                 captions: Captions | None = None):
        root = Path(root)
        images, classes = _read_cifar(root, split, num_classes)
        normal = classes < num_classes // 2
        keep = normal if split == "train" else np.ones_like(normal)
        self.images, self.labels = images[keep], (~normal[keep]).astype(int)
        self.sources = tuple(_cifar_files(root, split, num_classes)[0])
        self.name = f"cifar{num_classes}"
        self.filenames = [f"{split}/{i}" for i in np.flatnonzero(keep)]
        self.image_size = image_size
        self.has_masks = False
        self.captions = [""] * len(self.filenames) if captions is None else match_captions(self.filenames, captions)

    @property
    def clsnames(self) -> list[str]:
        return [self.name]

    @property
    def keys(self) -> list[str]:
        """Every item's key: ``<split>/<index in the CIFAR batch>``."""
        return list(self.filenames)

    def image_key(self, index: int) -> str:
        return self.filenames[index]

    def item_files(self, index: int) -> tuple[Path, ...]:
        """The files item ``index`` is read from: the split's CIFAR batch files."""
        return self.sources

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        jpg = image_to_tensor(Image.fromarray(self.images[index]), self.image_size)
        return {"jpg": jpg, "hint": jpg.clone(), "txt": self.captions[index],
                "mask": torch.zeros(1, self.image_size, self.image_size), "label": int(self.labels[index]),
                "clsname": self.name, "filename": self.filenames[index], "has_mask": False,
                "key": self.filenames[index], "mask_levels": 0, "mask_between": 0.0}


def mask_levels(mask: Image.Image) -> tuple[int, float]:
    """``(distinct grey values, fraction of pixels strictly between the lowest and the highest)`` of a mask
    at its own resolution: a two-valued mask gives ``(≤ 2, 0.0)``; JPEG noise or anti-aliased edges do not."""
    arr = np.asarray(mask)
    values = np.unique(arr)
    if len(values) <= 2:
        return int(len(values)), 0.0
    return int(len(values)), float(np.mean((arr > values[0]) & (arr < values[-1])))


def _posix(name: str) -> str:
    return str(name).replace("\\", "/")


def _relative_key(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root``, ``/``-separated (``..`` components for a file outside the root)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of lists and NumPy arrays) and refuses every other class: a batch
    file from elsewhere cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_files(root: Path, split: str, num_classes: int) -> tuple[list[Path], bytes]:
    """The batch files of a CIFAR split and the key of their class ids."""
    if num_classes == 10:
        folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        files = [folder / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [folder / "test_batch"]
        return files, b"labels"
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    return [folder / ("train" if split == "train" else "test")], b"fine_labels"


def _read_cifar(root: Path, split: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR python batches → ``(N, 32, 32, 3)`` uint8 images and ``(N,)`` class ids."""
    files, key = _cifar_files(root, split, num_classes)
    data, labels = [], []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: CIFAR batch file not found")
        try:
            with open(f, "rb") as fh:
                batch = _ArrayUnpickler(fh, encoding="bytes").load()
            data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[key]))
        except (pickle.UnpicklingError, KeyError, EOFError, ValueError) as err:
            raise ValueError(f"{f}: not a CIFAR python batch ({err})") from err
    return np.concatenate(data), np.concatenate(labels)


def check_layout(name: str, root: str | os.PathLike, split: str, *, classes: Sequence[str] | None = None,
                 coco_part: int = 0, split_csv=None, json_dir=None) -> None:
    """Check that ``root`` holds the ``split`` of dataset ``name`` in its layout, reading no image."""
    if name in ("cifar10", "cifar100"):
        folder = Path(root) / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
        folder = folder if folder.is_dir() else Path(root)
        names = ((["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]) if name == "cifar10"
                 else [split])
        for f in names:
            if not (folder / f).is_file():
                raise FileNotFoundError(f"{folder / f}: CIFAR batch file not found")
        return
    readers = _readers(name, root, split, classes, coco_part, split_csv, json_dir)
    if name not in readers:
        raise ValueError(f"data_set: unknown dataset {name!r}; valid: {list(DATASETS)}")
    readers[name]()


def _readers(name, root, split, classes, coco_part, split_csv, json_dir) -> dict:
    return {
        "mvtec": lambda: mvtec_records(root, split, classes),
        "custom": lambda: mvtec_records(root, split, classes, require_masks=False),
        "visa": lambda: visa_records(root, split, classes, split_csv=split_csv),
        "realiad": lambda: realiad_records(root, split, classes, json_dir=json_dir),
        "coco": lambda: coco_records(root, split, coco_part=coco_part),
    }


def unreadable_images(records: Sequence[Record], *, masks: bool = True, progress: bool = True
                      ) -> list[tuple[Path, str]]:
    """``(image, reason)`` of each record whose image (or, with ``masks``, mask) cannot be read, found cheaply
    without decoding pixels (:func:`vlmdiff.data.images.image_file_problem`); a bad mask is named in its
    image's reason."""
    from tqdm import tqdm

    bad = []
    for r in tqdm(records, desc="checking image files", unit="image", leave=False,
                  disable=not progress or len(records) < 500):
        problem = image_file_problem(r.image)
        if problem is None and masks and r.mask is not None:
            mask_problem = image_file_problem(r.mask)
            problem = None if mask_problem is None else f"its mask {r.mask}: {mask_problem}"
        if problem is not None:
            bad.append((Path(r.image), problem))
    return bad


def unreadable_split_images(name: str, root: str | os.PathLike, split: str, *, classes: Sequence[str] | None = None,
                            coco_part: int = 0, split_csv=None, json_dir=None, masks: bool = True
                            ) -> list[tuple[Path, str]]:
    """``(image, reason)`` of the images (with ``masks``: or their masks) of a split that cannot be read
    (CIFAR: none, its batch files are read whole by :func:`check_layout`)."""
    records = split_records(name, root, split, classes=classes, coco_part=coco_part, split_csv=split_csv,
                            json_dir=json_dir)
    return unreadable_images(records, masks=masks)


def split_records(name: str, root: str | os.PathLike, split: str, *, classes: Sequence[str] | None = None,
                  coco_part: int = 0, split_csv=None, json_dir=None) -> list[Record]:
    """The records of a split read from its layout (CIFAR, whose images live in batch files: none)."""
    if name in ("cifar10", "cifar100"):
        return []
    readers = _readers(name, root, split, classes, coco_part, split_csv, json_dir)
    if name not in readers:
        raise ValueError(f"data_set: unknown dataset {name!r}; valid: {list(DATASETS)}")
    return readers[name]()


def build_dataset(name: str, root: str | os.PathLike, split: str, *, image_size: int = 256,
                  classes: Sequence[str] | None = None, captions: Captions | None = None,
                  coco_part: int = 0, split_csv=None, json_dir=None, exclude: Sequence[str | os.PathLike] = ()
                  ) -> Dataset:
    """The dataset ``name`` (one of :data:`DATASETS`) of the folder ``root``, split ``train`` or ``test``.

    ``exclude``: image files left out (e.g. the unreadable ones found by :func:`unreadable_split_images`)."""
    readers = _readers(name, root, split, classes, coco_part, split_csv, json_dir)
    if name in ("cifar10", "cifar100"):
        return CifarDataset(root, split, num_classes=int(name[5:]), image_size=image_size, captions=captions)
    if name not in readers:
        raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")
    records = readers[name]()
    if exclude:
        left_out = {os.path.abspath(p) for p in exclude}
        records = [r for r in records if os.path.abspath(r.image) not in left_out]
        if not records:
            raise ValueError(f"{root}: no readable images left in the {split} split")
    log_summary(records, name, split)
    return AnomalyDataset(records, image_size, captions, root=root)
