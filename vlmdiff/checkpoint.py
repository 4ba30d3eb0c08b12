"""The one checkpoint loader: ``.ckpt``, ``.pt``, ``.pth`` and ``.safetensors`` files to a state dict; and
:func:`save_state_dict`, the one writer of model checkpoints.

Never downloads anything and never falls back to random weights: a missing or unreadable file raises.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Mapping

import torch

from utils.io import atomic_path

log = logging.getLogger(__name__)

SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")

# Lightning 1.x training checkpoints (the original Stable Diffusion 1.x ``.ckpt`` files among them) store
# the *class* of their ModelCheckpoint callback as a dictionary key. ``weights_only=True`` refuses any
# class it does not know; these names are allowed and mapped to an inert stand-in, nothing is executed.
_LIGHTNING_CALLBACK_NAMES = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
)


class LightningCallbackPlaceholder:
    """Inert stand-in for a pickled Lightning callback class (only ever used as a dict key)."""

    def __setstate__(self, state):  # pragma: no cover - classes, not instances, are pickled in practice
        self.state = state


def _torch_load(path: Path, weights_only: bool, mmap: bool = False):
    if not weights_only:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if not any(name in str(err) for name in _LIGHTNING_CALLBACK_NAMES):
            raise ValueError(
                f"{path}: refused by the safe loader (weights_only=True): {str(err).splitlines()[0]}. "
                "If you trust this file, pass weights_only=False."
            ) from err
    log.info("%s: a Lightning 1.x training checkpoint (pickles its ModelCheckpoint callback class); "
             "loading it with that class allow-listed as an inert placeholder", path)
    allowed = [(LightningCallbackPlaceholder, name) for name in _LIGHTNING_CALLBACK_NAMES]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def load_state_dict(path: str | os.PathLike, *, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its flat state dict of tensors.

    Args:
        path: ``.safetensors``, or a pickled ``.ckpt``/``.pt``/``.pth``/``.bin`` file. Lightning
            checkpoints are unwrapped from their ``state_dict`` entry (also ``model``/``module``).
        weights_only: use torch's safe unpickler (default). Original SD-1.5 ``.ckpt`` files are handled.

    Returns:
        ``{key: tensor}`` on the CPU, in the file's dtypes.
    """
    # (DINO training checkpoints keep the weights under ``teacher``.)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint type {path.suffix!r}; expected one of {SUFFIXES}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: checkpoint file is empty (0 bytes)")
    try:
        obj = _torch_load(path, weights_only)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({first_line(err)})") from err
    return unwrap_state_dict(obj, source=str(path))


def checkpoint_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]] | None:
    """``{key: shape}`` of a checkpoint's tensors, read without loading the weights: the header of a
    ``.safetensors`` file, or a memory-mapped ``.ckpt``/``.pt``/``.pth`` (torch's zip format). None: a file in
    torch's legacy format, which cannot be mapped (its shapes are known only once it is loaded).
    A missing, empty or unreadable file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unknown checkpoint type {path.suffix!r}; expected one of {SUFFIXES}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: checkpoint file is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({first_line(err)})") from err
    import zipfile

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x80\x02":  # torch's legacy format starts with a protocol-2 pickle
                raise ValueError(f"{path}: not a readable torch checkpoint (neither a zip archive nor a pickle)")
        return None
    try:
        obj = _torch_load(path, weights_only=True, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({first_line(err)})") from err
    return {k: tuple(v.shape) for k, v in unwrap_state_dict(obj, source=str(path)).items()}


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def unwrap_state_dict(obj, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the tensor mapping inside a loaded checkpoint object (``state_dict``/``model``/``module``)."""
    for key in ("state_dict", "model", "teacher", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{source}: no tensors found (top-level keys: {sorted(map(str, obj))[:10]})")
    return tensors


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keep the keys that start with ``prefix``, with the prefix removed (a leading prefix only)."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "state dict",
                strict: bool = True) -> None:
    """``module.load_state_dict`` with one clear error naming the source and the missing, unexpected and
    mis-shaped keys (shapes are checked even with ``strict=False``)."""
    own = module.state_dict()
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if shapes or (strict and (missing or unexpected)):
        parts = [f"{len(shapes)} mis-shaped, e.g. {shapes[:3]}" if shapes else "",
                 f"{len(missing)} missing, e.g. {missing[:3]}" if missing else "",
                 f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}" if unexpected else ""]
        raise ValueError(f"{source}: does not fit the model ({'; '.join(p for p in parts if p)})")
    module.load_state_dict(state_dict, strict=strict)


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write atomically: safetensors for ``.safetensors``, else ``torch.save({"state_dict": ...})``."""
    path = Path(path)
    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state_dict, str(tmp))
        else:
            torch.save({"state_dict": state_dict}, tmp)
