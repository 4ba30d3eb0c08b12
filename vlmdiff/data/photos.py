"""General photographs for pretraining a small autoencoder offline.

The pictures are scikit-image's bundled sample images, minus the four that the synthetic benchmark's
classes are cut from (brick, grass, gravel, immunohistochemistry): an autoencoder pretrained here has
never seen the benchmark, as Stable Diffusion's autoencoder had never seen MVTec-AD before finetuning.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlmdiff.data.images import image_to_tensor
from vlmdiff.data.synthetic import SOURCE_PHOTOS

PHOTOS = ("astronaut", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "hubble_deep_field",
          "microaneurysms", "moon", "page", "retina", "rocket", "stereo_motorcycle", "text")
BENCHMARK_SOURCES = tuple(SOURCE_PHOTOS.values())


def load_photos(names=PHOTOS) -> list[np.ndarray]:
    """The photographs as ``(H, W, 3)`` or ``(H, W)`` uint8 arrays (stereo pairs give two)."""
    import skimage.data

    clash = sorted(set(names) & set(BENCHMARK_SOURCES))
    if clash:
        raise ValueError(f"{clash}: the synthetic benchmark is made from these photographs; pretrain without them")
    out = []
    for name in names:
        img = getattr(skimage.data, name)()
        for arr in img[:2] if isinstance(img, tuple) else (img,):
            out.append(np.asarray(arr, dtype=np.uint8))
    return out


class PhotoCrops(Dataset):
    """``length`` random crops of the photographs, ``size``×``size``, in the datasets' ``jpg`` convention.

    Crop ``index`` is a pure function of ``(seed, index)``: a random photograph; a square whose side is
    log-uniform from ``size`` to the photograph's short side, so scales vary; a random quarter turn and
    flip; a random colour tint for greyscale pictures; a brightness gain. Same seed → same crops, with or
    without DataLoader workers.
    """

    def __init__(self, size: int = 64, length: int = 10_000, *, seed: int = 0, photos: list[np.ndarray] | None = None):
        self.size, self.length, self.seed = size, length, seed
        self.photos = load_photos() if photos is None else photos
        small = [p.shape[:2] for p in self.photos if min(p.shape[:2]) < size]
        if small:
            raise ValueError(f"crop size {size} exceeds photographs of shape {small}")

    def __len__(self) -> int:
        return self.length

    def crop(self, index: int) -> np.ndarray:
        """Crop ``index`` as a ``(size, size, 3)`` uint8 array."""
        rng = np.random.default_rng([self.seed, index])
        photo = self.photos[rng.integers(len(self.photos))]
        h, w = photo.shape[:2]
        side = int(round(np.exp(rng.uniform(np.log(self.size), np.log(min(h, w))))))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        img = Image.fromarray(np.ascontiguousarray(photo[y:y + side, x:x + side]))
        arr = np.asarray(img.resize((self.size, self.size), Image.BILINEAR), dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[..., None] * rng.uniform(0.4, 1.0, 3)
        arr = np.rot90(arr, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        return np.clip(arr * rng.uniform(0.8, 1.2), 0, 255).round().astype(np.uint8)

    def __getitem__(self, index: int) -> dict:
        return {"jpg": image_to_tensor(Image.fromarray(np.ascontiguousarray(self.crop(index))), self.size)}
