"""Image and mask decoding and the loaders' transforms (docs/design.md §8.1).

Image: RGB → ``Resize((S, S))`` bilinear (PIL, antialiased; aspect ratio not kept, no crop) → [0, 1] →
ImageNet normalisation. Mask: greyscale → the same bilinear resize → [0, 1] (soft edges; binarised with
``> 0`` by the metrics). Conversions of unusual files (documented, never silent failures):

* greyscale, palette and CMYK images → RGB;
* RGBA / LA → RGB by dropping the alpha channel;
* 16-bit and 32-bit integer images → 8 bit by scaling their full range (``v / 257`` for 16 bit);
* float images (mode F) → clipped to [0, 255].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully; a missing, unreadable or truncated file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode != "P" else img.convert("RGBA" if "transparency" in img.info else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from err


def image_file_problem(path: str | os.PathLike) -> str | None:
    """Why an image file cannot be read (None: it looks whole), found without decoding its pixels.

    A missing, empty, unreadable or unrecognised file is found from its header; a PNG is verified chunk by
    chunk (every chunk's checksum up to the end marker: truncation and flipped bytes are found); a JPEG
    must hold its end-of-image marker near the end of the file (else it is decoded in full, which tells a
    truncated file from one with trailing data); other formats are decoded in full. About 100x cheaper
    than decoding a PNG or JPEG (README, "When something goes wrong").
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as fh:
            fh.seek(max(0, size - _TAIL))
            tail = fh.read()
    except FileNotFoundError:
        return "image file not found"
    except PermissionError:
        return "not readable (permission denied)"
    except OSError as err:
        return f"not readable ({err.strerror or err})"
    try:
        with Image.open(path) as img:
            if img.format == "PNG":
                img.verify()
            elif img.format not in ("JPEG", "MPO") or _JPEG_END not in tail:
                img.load()
    except Image.DecompressionBombError as err:
        return f"too large to decode ({err})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        return f"cannot decode image ({str(err).strip() or type(err).__name__})"
    return None


_TAIL = 4096  # bytes at the end of a JPEG searched for its end-of-image marker
_JPEG_END = b"\xff\xd9"


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray((np.asarray(img, dtype=np.uint16).astype(np.float64) / 257.0).round().astype(np.uint8))
    if img.mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        top = 65535 if arr.max() <= 65535 else 2**31 - 1
        return Image.fromarray((np.clip(arr, 0, top) * (255.0 / top)).round().astype(np.uint8))
    if img.mode == "F":
        return Image.fromarray(np.clip(np.asarray(img), 0, 255).round().astype(np.uint8))
    return img


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """An 8-bit RGB image (see the module docstring for the conversions)."""
    img = _to_8bit(open_image(path))
    if img.mode in ("RGBA", "LA"):
        img = img.convert("RGBA").convert("RGB") if img.mode == "LA" else img.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_mask(path: str | os.PathLike) -> Image.Image:
    """An 8-bit greyscale mask (colour masks: any non-zero channel counts, via the L conversion)."""
    img = _to_8bit(open_image(path))
    if img.mode == "RGB":
        arr = np.asarray(img).max(axis=2)
        return Image.fromarray(arr)
    return img if img.mode == "L" else img.convert("L")


def image_to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """``(3, S, S)`` float32, ImageNet-normalised."""
    arr = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, S, S)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def mask_to_tensor(mask: Image.Image, size: int) -> torch.Tensor:
    """``(1, S, S)`` float32 in [0, 1], bilinearly resized (soft edges)."""
    arr = np.asarray(mask.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None]


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``(…, 3, H, W)`` → RGB in [0, 1] (clamped)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
    return (x * std + mean).clamp(0, 1)
