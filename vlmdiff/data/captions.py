"""Caption files in the reference's formats (docs/design.md §9.3, §9.4), attached to images by path.

* ``<data_set>_captions_<vlm>_<prompt_type>/`` holds ``{train,test}_captions_<data_set>_<vlm>_<start>_<end>.json``
  (a JSON list of captions) and the matching ``…_labels_…`` file (a JSON list of image filenames; for
  COCO one-element lists ``[image_id]``). Several shards of a split are merged.
* COCO caption format ``captions_{train,val}2017<suffix>.json``: ``{"annotations": [{id, image_id, caption}]}``;
  every caption of an image is appended without separator, as the reference does.

Captions are matched to images by filename, never by list order; a missing caption is an error naming the
caption file and the image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from utils.io import write_json

SPLITS = ("train", "test")


class Captions(dict):
    """``{image filename: caption}`` remembering the files it was read from (for error messages)."""

    def __init__(self, mapping: Mapping[str, str] = (), source: str = "captions"):
        super().__init__(mapping)
        self.source = source


def folder_name(data_set: str, vlm: str, prompt_type: str) -> str:
    return f"{data_set}_captions_{vlm}_{prompt_type}"


def file_names(split: str, data_set: str, vlm: str, start: int = 0, end: int | None = None) -> tuple[str, str]:
    """``(captions file, labels file)`` names of one shard."""
    suffix = f"{data_set}_{vlm}" + (f"_{start}_{end}" if end is not None else "")
    return f"{split}_captions_{suffix}.json", f"{split}_labels_{suffix}.json"


def write_caption_files(folder: str | os.PathLike, split: str, data_set: str, vlm: str,
                        items: Iterable[tuple[str, str]], *, start: int = 0, end: int | None = None) -> tuple[Path, Path]:
    """Write one shard: ``items`` = ``(filename, caption)`` pairs in dataset order. Atomic."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    items = list(items)
    caps_name, labels_name = file_names(split, data_set, vlm, start, end)
    folder = Path(folder)
    write_json(folder / labels_name, [f for f, _ in items], indent=None)
    write_json(folder / caps_name, [c for _, c in items], indent=None)
    return folder / caps_name, folder / labels_name


def _label_key(label) -> str:
    return str(label[0]) if isinstance(label, list) else str(label)


def _caption_text(caption) -> str:
    return " ".join(map(str, caption)) if isinstance(caption, list) else str(caption)  # LLaVA stored lists


def read_caption_files(folder: str | os.PathLike, split: str) -> Captions:
    """Every ``<split>_captions_*.json`` / ``<split>_labels_*.json`` pair of ``folder`` merged."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: caption folder not found")
    caption_files = sorted(folder.glob(f"{split}_captions_*.json"))
    if not caption_files:
        raise FileNotFoundError(f"{folder}: no {split}_captions_*.json file")
    out = Captions(source=str(folder))
    for caps_path in caption_files:
        labels_path = caps_path.with_name(caps_path.name.replace(f"{split}_captions_", f"{split}_labels_", 1))
        if not labels_path.is_file():
            raise FileNotFoundError(f"{labels_path}: labels file of {caps_path.name} not found")
        try:
            captions, labels = json.loads(caps_path.read_text()), json.loads(labels_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{caps_path.parent}: unreadable caption file ({err})") from err
        if not isinstance(captions, list) or not isinstance(labels, list) or len(captions) != len(labels):
            raise ValueError(f"{caps_path}: expected a list as long as {labels_path.name} "
                             f"({len(captions) if isinstance(captions, list) else '?'} vs "
                             f"{len(labels) if isinstance(labels, list) else '?'})")
        out.update((_label_key(k), _caption_text(c)) for k, c in zip(labels, captions))
    return out


# COCO-AD training's caption-file suffix when ``caption_folder`` is null (the reference's training default)
COCO_DEFAULT_SUFFIX = "_internvl"
COCO_FILES = {"train": "captions_train2017", "test": "captions_val2017"}


def caption_source(cfg, split: str) -> Captions | None:
    """The captions a training or test run reads for ``split`` (None without ``cfg.use_captions``).

    ``cfg.caption_folder`` names them, for both stages alike. COCO-AD: the caption-file suffix,
    ``<data_path>/annotations/captions_{train,val}2017<suffix>.json`` (``""``: the human captions; null:
    :data:`COCO_DEFAULT_SUFFIX`). Other data sets: a folder of caption files (:func:`read_caption_files`),
    given as a path (absolute, or an existing folder relative to the working directory) or as the name of a
    sibling of the dataset root (the captioner writes it there).
    """
    if not cfg.use_captions:
        return None
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root, name = Path(cfg.data_path), cfg.caption_folder
    if cfg.data_set == "coco":
        suffix = COCO_DEFAULT_SUFFIX if name is None else name
        return read_coco_captions(root / "annotations" / f"{COCO_FILES[split]}{suffix}.json")
    if not name:
        raise ValueError("caption_folder: not set (the caption folder that use_captions reads, a sibling of the "
                         "dataset root or a path)")
    folder = Path(name)
    return read_caption_files(folder if folder.is_absolute() or folder.is_dir() else root.parent / name, split)


def read_coco_captions(path: str | os.PathLike) -> Captions:
    """COCO caption format → ``{12-digit image id: all captions concatenated}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO caption file not found")
    try:
        annotations = json.loads(path.read_text())["annotations"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: not a COCO caption file ({err})") from err
    out = Captions(source=str(path))
    for a in annotations:
        key = f"{int(str(a['image_id'])):012d}"
        out[key] = out.get(key, "") + str(a["caption"])
    return out


def write_coco_captions(path: str | os.PathLike, items: Iterable[tuple[str, str]]) -> None:
    """``(image id, caption)`` pairs → COCO caption format (atomic)."""
    annotations = [{"id": i, "image_id": int(image_id), "caption": c} for i, (image_id, c) in enumerate(items)]
    write_json(path, {"annotations": annotations}, indent=None)


def match_captions(filenames: Sequence[str], captions: Captions) -> list[str]:
    """The caption of each image, by filename.

    Tried in order: the exact filename; the 12-digit COCO image id (the file stem); a caption key whose
    last path components equal the filename (a dataset root moved since captioning). Raises ValueError
    naming the caption source and the first image without a caption.
    """
    tails: dict[int, dict[str, str]] = {}

    def by_tail(n: int) -> dict[str, str]:
        if n not in tails:
            tails[n] = {"/".join(k.replace("\\", "/").split("/")[-n:]): v for k, v in captions.items()}
        return tails[n]

    out = []
    for name in filenames:
        hit = captions.get(name, captions.get(Path(name).stem))
        if hit is None:
            hit = by_tail(len(name.split("/"))).get(name)
        if hit is None:
            raise ValueError(f"{captions.source}: no caption for image {name!r}")
        out.append(hit)
    return out
