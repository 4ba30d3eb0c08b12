"""Caption a dataset split into the reference's caption files (docs/design.md §9.3): sharded and resumable.

Shard ``k`` of ``n`` covers the contiguous index range ``[start, end)`` of the split's records and writes
``<split>_captions_<data_set>_<vlm>_<start>_<end>.json`` plus the matching ``<split>_labels_…`` file. The
indices are the shard's own, also for the test split (the reference names its test files with the train
range, docs/design.md D14; the loaders merge every shard file, so names only have to be distinct).

Resuming: every batch is appended to ``progress/<split>_<data_set>_<vlm>_<start>_<end>.jsonl`` (one header
line with the run's settings, then one ``{"index", "filename", "caption"}`` line per image), flushed and
fsynced before the next batch. A rerun skips the images found there, so an interrupted run loses at most
the batch in flight and never duplicates a caption. The final JSON files are written atomically once the
shard is complete, then the progress file is removed; a rerun of a complete shard does nothing.

COCO additionally gets ``annotations/captions_{train,val}2017_<vlm>.json`` (COCO caption format, image id =
the file stem), written by whichever shard completes the split.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from vlmdiff.captioning.backends import Captioner
from vlmdiff.data.captions import file_names, read_caption_files, write_caption_files, write_coco_captions
from vlmdiff.data.images import load_rgb
from vlmdiff.data.layouts import Record

log = logging.getLogger(__name__)


@dataclass
class ShardResult:
    """What one call of :func:`run_captioning` did."""

    split: str
    start: int
    end: int
    captions_file: Path | None  # None: empty shard, nothing written
    labels_file: Path | None
    captioned: int  # images sent to the backend by this call
    resumed: int  # images whose captions came from an earlier, interrupted or complete, run
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.captioned / self.seconds if self.seconds > 0 else 0.0


def shard_range(n_items: int, shard_index: int = 0, num_shards: int = 1, start: int = 0,
                end: int | None = None) -> tuple[int, int]:
    """The contiguous ``[start, end)`` of shard ``shard_index`` when ``[start, end)`` (``end`` clipped to
    ``n_items``) is cut into ``num_shards`` pieces whose sizes differ by at most one."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards), got {shard_index} of {num_shards}")
    end = n_items if end is None else min(end, n_items)
    if start < 0 or start > end:
        raise ValueError(f"bad index range [{start}, {end}) for {n_items} images")
    size, extra = divmod(end - start, num_shards)
    a = start + shard_index * size + min(shard_index, extra)
    return a, a + size + (shard_index < extra)


def progress_path(out_folder: str | os.PathLike, split: str, data_set: str, vlm: str, start: int, end: int) -> Path:
    return Path(out_folder) / "progress" / f"{split}_{data_set}_{vlm}_{start}_{end}.jsonl"


def _read_progress(path: Path, header: dict, records: Sequence[Record]) -> dict[int, str]:
    """Captions already in the progress file; a line cut by the interruption is dropped from the file."""
    data, pos, done = path.read_bytes(), 0, {}
    while (nl := data.find(b"\n", pos)) >= 0:
        try:
            entry = json.loads(data[pos:nl])
        except json.JSONDecodeError:
            break
        if "header" in entry:
            diff = {k: (entry["header"].get(k), v) for k, v in header.items() if entry["header"].get(k) != v}
            if diff:
                raise ValueError(f"{path}: progress of a different run (found vs now: {diff}); "
                                 "delete it or run without resume")
        else:
            i, name = entry["index"], entry["filename"]
            if not header["start"] <= i < header["end"] or records[i].filename != name:
                raise ValueError(f"{path}: entry {i} is {name!r}, but the dataset has "
                                 f"{records[i].filename if 0 <= i < len(records) else 'no image'!r} there "
                                 "(the dataset changed since; delete the file or run without resume)")
            done[i] = entry["caption"]
        pos = nl + 1
    if pos < len(data):
        log.warning("%s: dropping a partly written line at the end", path)
        with open(path, "r+b") as fh:
            fh.truncate(pos)
    return done


def _complete_files(folder: Path, split: str, data_set: str, vlm: str, start: int, end: int,
                    records: Sequence[Record]) -> dict[int, str] | None:
    """The captions of a shard whose final files exist and match the records, else None."""
    caps_name, labels_name = file_names(split, data_set, vlm, start, end)
    try:
        captions = json.loads((folder / caps_name).read_text())
        labels = json.loads((folder / labels_name).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if labels != [r.filename for r in records[start:end]] or len(captions) != len(labels):
        return None
    return dict(zip(range(start, end), captions))


def _load_images(records: Sequence[Record], indices: Sequence[int]) -> list[Image.Image]:
    return [load_rgb(records[i].image) for i in indices]  # native resolution, 8-bit RGB


def run_captioning(records: Sequence[Record], backend: Captioner, prompt: str, out_folder: str | os.PathLike,
                   split: str, data_set: str, vlm_name: str, *, batch_size: int = 8, shard_index: int = 0,
                   num_shards: int = 1, start: int = 0, end: int | None = None, resume: bool = True,
                   coco_annotations_dir: str | os.PathLike | None = None, progress: bool = True) -> ShardResult:
    """Caption shard ``shard_index`` of ``records[start:end]`` with ``backend`` and write its caption files.

    Args:
        records: the split's images in the loader's order (``build_dataset(...).records``).
        backend: a captioner (:mod:`vlmdiff.captioning.backends`).
        prompt: the prompt text (:func:`vlmdiff.captioning.prompts.resolve_prompt`).
        out_folder: the caption folder, e.g. ``<root>/../mvtec_captions_internvl_pd``.
        split, data_set, vlm_name: the caption file names' parts.
        batch_size: images per backend call (and per progress-file flush).
        shard_index, num_shards: this process's piece of ``[start, end)``.
        start, end: the index range to caption; ``end=None`` is the end of the split.
        resume: continue from the progress / final files of an earlier run; False starts over.
        coco_annotations_dir: COCO only (required there): where ``captions_<split>2017_<vlm>.json`` goes.
        progress: show a tqdm bar.
    Returns:
        :class:`ShardResult`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if data_set == "coco" and coco_annotations_dir is None:
        raise ValueError("COCO captions need coco_annotations_dir (the dataset's annotations folder)")
    out = Path(out_folder)
    a, b = shard_range(len(records), shard_index, num_shards, start, end)
    t0 = time.perf_counter()
    if a == b:
        log.info("%s shard %d/%d: no images", split, shard_index, num_shards)
        return ShardResult(split, a, b, None, None, 0, 0, 0.0)
    ckpt = progress_path(out, split, data_set, vlm_name, a, b)
    header = {"data_set": data_set, "vlm": vlm_name, "split": split, "prompt": prompt, "start": a, "end": b}
    if not resume and ckpt.exists():
        ckpt.unlink()
    done: dict[int, str] = {}
    if resume and ckpt.exists():
        done = _read_progress(ckpt, header, records)
    elif resume and (complete := _complete_files(out, split, data_set, vlm_name, a, b, records)) is not None:
        log.info("%s [%d, %d): caption files already complete", split, a, b)
        done = complete
    resumed = len(done)
    todo = [i for i in range(a, b) if i not in done]
    if todo:
        _caption_indices(records, todo, backend, prompt, ckpt, header, done, batch_size=batch_size,
                         desc=f"caption {split} [{a},{b})", total=b - a, progress=progress)
    caps_file, labels_file = write_caption_files(out, split, data_set, vlm_name,
                                                 [(records[i].filename, done[i]) for i in range(a, b)], start=a, end=b)
    if ckpt.exists():
        ckpt.unlink()
    if data_set == "coco":
        write_coco_annotations(out, split, vlm_name, records, coco_annotations_dir)
    return ShardResult(split, a, b, caps_file, labels_file, len(todo), resumed, time.perf_counter() - t0)


def _caption_indices(records, todo, backend, prompt, ckpt: Path, header: dict, done: dict[int, str], *,
                     batch_size: int, desc: str, total: int, progress: bool) -> None:
    """Caption ``records[todo]`` batch by batch, appending each batch to the progress file."""
    batches = [todo[k:k + batch_size] for k in range(0, len(todo), batch_size)]
    needs_pixels = getattr(backend, "is_vlm", True)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    new_file = not ckpt.exists() or ckpt.stat().st_size == 0
    with open(ckpt, "a", encoding="utf-8") as fh, ThreadPoolExecutor(1) as pool, \
            tqdm(total=total, initial=total - len(todo), desc=desc, unit="img", disable=not progress) as bar:
        if new_file:
            fh.write(json.dumps({"header": header}, ensure_ascii=False) + "\n")
        load = (lambda idx: _load_images(records, idx)) if needs_pixels else (lambda idx: [None] * len(idx))
        pending = pool.submit(load, batches[0])  # the next batch is read while the backend works
        for j, batch in enumerate(batches):
            images = pending.result()
            if j + 1 < len(batches):
                pending = pool.submit(load, batches[j + 1])
            captions = backend.caption(images, prompt, clsnames=[records[i].clsname for i in batch])
            if len(captions) != len(batch) or not all(isinstance(c, str) for c in captions):
                raise ValueError(f"backend {getattr(backend, 'name', backend)!r} returned {len(captions)} "
                                 f"captions for {len(batch)} images (expected one string per image)")
            for i, c in zip(batch, captions):
                fh.write(json.dumps({"index": i, "filename": records[i].filename, "caption": c},
                                    ensure_ascii=False) + "\n")
                done[i] = c
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(batch))


def coco_annotation_path(annotations_dir: str | os.PathLike, split: str, vlm: str) -> Path:
    """``captions_train2017_<vlm>.json`` (train) / ``captions_val2017_<vlm>.json`` (test), as the loader reads."""
    return Path(annotations_dir) / f"captions_{'train' if split == 'train' else 'val'}2017_{vlm}.json"


def write_coco_annotations(out_folder: str | os.PathLike, split: str, vlm: str, records: Sequence[Record],
                           annotations_dir: str | os.PathLike) -> Path | None:
    """Merge the split's caption files into the COCO caption format once they cover every record.

    Returns the written file, or None while other shards are still missing (logged).
    """
    captions = read_caption_files(out_folder, split)
    missing = [r.filename for r in records if r.filename not in captions]
    if missing:
        log.info("COCO %s: %d of %d images not captioned yet (other shards?): annotations not written",
                 split, len(missing), len(records))
        return None
    path = coco_annotation_path(annotations_dir, split, vlm)
    write_coco_captions(path, [(int(Path(r.filename).stem), captions[r.filename]) for r in records])
    log.info("wrote %s", path)
    return path
