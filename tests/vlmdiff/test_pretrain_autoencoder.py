"""The bundled tiny autoencoder: its photographs exclude the benchmark's sources, crops are reproducible,
the pretraining script learns and writes a loadable float16 file, and the shipped file reconstructs the
synthetic benchmark (which it never saw) far better than random weights."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from scripts.pretrain_tiny_autoencoder import main as pretrain_main
from tests.conftest import TINY_CONFIG
from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER as BUNDLED
from vlmdiff.ae_finetune import pretrain_autoencoder
from vlmdiff.checkpoint import load_state_dict, load_strict
from vlmdiff.config import instantiate, load_config
from vlmdiff.data import build_dataset
from vlmdiff.data.photos import BENCHMARK_SOURCES, PHOTOS, PhotoCrops, load_photos
from vlmdiff.data.synthetic import generate


def tiny_autoencoder():
    return instantiate(load_config(TINY_CONFIG).model.params.first_stage_config, where="tiny")


def mean_l1(ae, images: torch.Tensor) -> float:
    with torch.no_grad():
        return (ae.decode(ae.encode(images).mode()) - images).abs().mean().item()


def test_photos_exclude_the_benchmark_sources():
    assert not set(PHOTOS) & set(BENCHMARK_SOURCES)
    with pytest.raises(ValueError, match="brick"):
        load_photos(("astronaut", "brick"))


def test_crops_are_a_function_of_seed_and_index():
    photos = load_photos(("astronaut", "camera", "moon"))
    a, b = PhotoCrops(32, 10, seed=3, photos=photos), PhotoCrops(32, 10, seed=3, photos=photos)
    assert all(np.array_equal(a.crop(i), b.crop(i)) for i in range(10))
    assert not np.array_equal(a.crop(0), PhotoCrops(32, 10, seed=4, photos=photos).crop(0))
    x = a[5]["jpg"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    with pytest.raises(ValueError, match="exceeds"):
        PhotoCrops(1024, 1, photos=photos)


def test_pretraining_lowers_the_reconstruction_error():
    torch.manual_seed(0)
    ae = tiny_autoencoder()
    photos = load_photos(("astronaut", "coffee", "camera"))
    held_out = torch.stack([PhotoCrops(32, 8, seed=1, photos=photos)[i]["jpg"] for i in range(8)])
    history = pretrain_autoencoder(ae, PhotoCrops(32, 1000, photos=photos), steps=60, batch_size=4,
                                   learning_rate=2e-3, eval_images=held_out, eval_every=30, progress=False)
    assert [s for s, _ in history] == [0, 30, 60]
    assert history[-1][1] < 0.8 * history[0][1]
    assert abs(history[-1][1] - mean_l1(ae, held_out)) < 1e-5


def test_script_writes_a_float16_file_that_loads_strictly(tmp_path):
    out = tmp_path / "ae.safetensors"
    assert pretrain_main(["--steps", "3", "--crop", "32", "--batch_size", "2", "--n_eval", "2", "--out", str(out),
                          "--no_progress"]) == 0
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert meta["steps"] == "3" and len(json.loads(meta["held_out_l1"])) == 2
    load_strict(tiny_autoencoder(), load_state_dict(out), source=str(out))
    assert pretrain_main(["--steps", "1", "--out", str(tmp_path / "ae.pt")]) == 2


def test_bundled_autoencoder_reconstructs_the_unseen_benchmark(tmp_path):
    """Benchmark images, never part of pretraining: far better than random weights overall, and the object
    class (whose content is shape, not fine texture) far below the mean-colour level (each image's own
    per-channel mean as its reconstruction)."""
    data = generate(tmp_path / "synthetic", classes=("weave", "disc", "gravel"), n_train=2, n_test_good=0,
                    n_test_defect=0)
    ds = build_dataset("mvtec", data, "train", image_size=128)
    images = {c: torch.stack([ds[i]["jpg"] for i in range(len(ds)) if ds.records[i].clsname == c])
              for c in ("weave", "disc", "gravel")}
    torch.manual_seed(0)
    ae = tiny_autoencoder().eval()
    random_l1 = {c: mean_l1(ae, x) for c, x in images.items()}
    load_strict(ae, load_state_dict(BUNDLED), source=str(BUNDLED))
    bundled_l1 = {c: mean_l1(ae, x) for c, x in images.items()}
    disc = images["disc"]
    mean_colour = (disc - disc.mean(dim=(2, 3), keepdim=True)).abs().mean().item()
    assert sum(bundled_l1.values()) < 0.6 * sum(random_l1.values()), (bundled_l1, random_l1)
    assert bundled_l1["disc"] < 0.3 * mean_colour, (bundled_l1, mean_colour)
