"""A cache of what the frozen parts compute for every training image: posterior moments and caption tokens.

The autoencoder and the text encoder are frozen during training and the training images are not
augmented, so ``q(z|x)`` and ``CLIP(caption)`` are the same at every epoch. The cache computes them once;
training then still draws a fresh posterior sample at every step (from the cached mean and log-variance,
with the same random draws as without the cache), so the loss curve is unchanged.

The cache file lives beside the run (``<run>/cache/conditioning.pt``) and is keyed by a digest of what
it depends on: the autoencoder and text-encoder weights, the image files (path, size, modification time),
the captions and the image size. A cache whose key differs is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from utils.io import atomic_path
from vlmdiff.model import VLMDiff

log = logging.getLogger(__name__)

MOMENTS_KEY, CONTEXT_KEY = "moments", "context"


def _digest_tensors(h, state: dict) -> None:
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())


def cache_key(model: VLMDiff, dataset: Dataset, image_size: int) -> str:
    """sha256 of the frozen weights, the image files, the captions and the image size."""
    h = hashlib.sha256()
    _digest_tensors(h, model.first_stage_model.state_dict())
    _digest_tensors(h, model.cond_stage_model.state_dict())
    h.update(str(image_size).encode())
    for path, caption in zip(image_paths(dataset), captions_of(dataset)):
        st = os.stat(path) if path and os.path.exists(path) else None
        h.update(f"{path}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}|{caption}\n".encode())
    return h.hexdigest()


def image_paths(dataset: Dataset) -> list[str]:
    records = getattr(dataset, "records", None)
    if records is None:
        return [f"#{i}" for i in range(len(dataset))]
    return [str(r.image) for r in records]


def captions_of(dataset: Dataset) -> Sequence[str]:
    captions = getattr(dataset, "captions", None)
    return list(captions) if captions is not None else [""] * len(dataset)


class CachedConditioning(Dataset):
    """``dataset`` whose items also carry ``moments`` (posterior mean and log-variance) and ``context``."""

    def __init__(self, dataset: Dataset, moments: torch.Tensor, contexts: torch.Tensor, context_index: list[int]):
        if len(moments) != len(dataset) or len(context_index) != len(dataset):
            raise ValueError(f"cache holds {len(moments)} images, the dataset {len(dataset)}")
        self.dataset, self.moments, self.contexts, self.context_index = dataset, moments, contexts, context_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        item[MOMENTS_KEY] = self.moments[index]
        item[CONTEXT_KEY] = self.contexts[self.context_index[index]]
        return item

    def __getattr__(self, name):  # records, captions, clsnames … of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


@torch.no_grad()
def compute_conditioning(model: VLMDiff, dataset: Dataset, *, batch_size: int = 16, progress: bool = True):
    """Posterior moments ``(N, 2C, h, w)`` of every image and the tokens of every distinct caption."""
    from tqdm.auto import tqdm

    moments = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="caching latents", unit="batch",
                      disable=not progress):
        x = torch.stack([dataset[i]["jpg"] for i in range(start, min(start + batch_size, len(dataset)))])
        posterior = model.encode_first_stage(x.to(model.device).float())
        moments.append(torch.cat([posterior.mean, posterior.logvar], dim=1).cpu())
    captions = captions_of(dataset)
    distinct = sorted(set(captions))
    contexts = torch.cat([model.get_learned_conditioning(distinct[i:i + 64]).cpu() for i in range(0, len(distinct), 64)]) \
        if distinct else torch.zeros(0)
    index = {c: i for i, c in enumerate(distinct)}
    return torch.cat(moments), contexts, [index[c] for c in captions]


def cached_dataset(model: VLMDiff, dataset: Dataset, cache_file: str | os.PathLike, *, image_size: int,
                   progress: bool = True) -> CachedConditioning:
    """Load the cache at ``cache_file`` if its key matches, else compute it and write it atomically."""
    path = Path(cache_file)
    key = cache_key(model, dataset, image_size)
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged cache is rebuilt, never trusted
            log.warning("%s: unreadable conditioning cache (%s); rebuilding it", path, err)
            saved = None
        if saved is not None and saved.get("key") == key:
            log.info("conditioning cache: %s (%d images)", path, len(saved["moments"]))
            return CachedConditioning(dataset, saved["moments"], saved["contexts"], saved["context_index"])
        if saved is not None:
            log.info("%s: autoencoder, text encoder, images or captions changed; rebuilding the cache", path)
    moments, contexts, index = compute_conditioning(model, dataset, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"key": key, "moments": moments, "contexts": contexts, "context_index": index}, tmp)
    return CachedConditioning(dataset, moments, contexts, index)
