"""Per-image noise: an image's map and score do not depend on its batch, companions, order or process."""

import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from tests.conftest import TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff import testing
from vlmdiff.data import build_dataset
from vlmdiff.data.synthetic import generate
from vlmdiff.features import build_extractor
from vlmdiff.inference import image_noise, image_seed, score_images
from vlmdiff.model import create_model
from vlmdiff.predict import predict_folder


def test_image_seed_is_63_bit_sha256_of_seed_and_key():
    s = image_seed(0, "disc/test/good/000.png")
    assert s == int.from_bytes(hashlib.sha256(b"0\0disc/test/good/000.png").digest()[:8], "big") >> 1
    assert 0 <= s < 2**63
    assert image_seed(0, "disc/test/good/000.png") == s
    assert image_seed(1, "disc/test/good/000.png") != s
    assert image_seed(0, "disc/test/good/001.png") != s
    assert image_seed(1, "0") != image_seed(10, "")  # the separator keeps (seed, key) pairs apart


def test_image_noise_per_image_posterior_first():
    keys = ["a.png", "b/c.png", "d.png"]
    post, start = image_noise(keys, 7, (4, 2, 3))
    assert post.shape == start.shape == (3, 4, 2, 3) and post.dtype == torch.float32
    g = torch.Generator().manual_seed(image_seed(7, "b/c.png"))
    assert torch.equal(post[1], torch.randn(4, 2, 3, generator=g))
    assert torch.equal(start[1], torch.randn(4, 2, 3, generator=g))
    alone = image_noise(["b/c.png"], 7, (4, 2, 3))
    reordered = image_noise(["d.png", "b/c.png"], 7, (4, 2, 3))
    assert torch.equal(alone[0][0], post[1]) and torch.equal(reordered[1][1], start[1])
    assert not torch.equal(post[0], post[2]) and not torch.equal(post[1], start[1])
    assert not torch.equal(image_noise(["b/c.png"], 8, (4, 2, 3))[0][0], post[1])
    empty = image_noise([], 0, (4, 2, 3), device="cpu")
    assert empty[0].shape == (0, 4, 2, 3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inference")
    data = generate(tmp / "data", classes=("disc",), image_size=128, n_train=1, n_test_good=1, n_test_defect=2)
    seed_everything(0)
    model = create_model(TINY_CONFIG).eval()
    torch.nn.init.normal_(model.model.diffusion_model.out[2].weight, std=0.02)
    extractor = build_extractor("effnet_lite0", None).eval()
    return tmp, data, model, extractor


def test_latent_shape(setup):
    model = setup[2]
    assert model.latent_shape(128, 128) == (4, 16, 16)
    assert model.latent_shape(64, 96) == (4, 8, 12)
    with pytest.raises(ValueError, match="100x128"):
        model.latent_shape(100, 128)


def test_dataset_keys_are_paths_relative_to_the_root(setup):
    data = setup[1]
    ds = build_dataset("mvtec", data, "test", image_size=128)
    assert ds.keys == [r.image.relative_to(data).as_posix() for r in ds.records]
    assert len(set(ds.keys)) == len(ds) == 3
    assert all(k.startswith("disc/test/") for k in ds.keys)
    assert ds[2]["key"] == ds.image_key(2) == ds.keys[2]


def _cfg(tmp, data, exp, **kw):
    return testing.TestConfig(checkpoint="none", model_config=str(TINY_CONFIG), data_set="mvtec",
                              data_path=str(data), exp_name=exp, output_dir=str(tmp / "runs"), image_size=128,
                              scorer="effnet_lite0", ddim_steps=1, num_workers=0, device="cpu", **kw)


def test_same_image_same_result_in_any_batch(setup):
    tmp, data, model, extractor = setup
    ds = build_dataset("mvtec", data, "test", image_size=128)
    cfg = _cfg(tmp, data, "batches", batch_size=3)

    def scored(indices):
        res = testing.score_batch(model, extractor, default_collate([ds[i] for i in indices]), cfg)
        return res["maps"], res["samples"]

    alone = scored([1])
    second = scored([0, 1])
    first = scored([1, 2])  # other companion, other place
    for maps, samples, row in ((*second, 1), (*first, 0)):
        np.testing.assert_array_equal(maps[row], alone[0][0])
        assert torch.equal(samples[row], alone[1][0])
    assert not np.array_equal(first[0][0], first[0][1])
    other_seed = testing.score_batch(model, extractor, default_collate([ds[1]]), _cfg(tmp, data, "s1", seed=1))
    assert not np.array_equal(other_seed["maps"][0], alone[0][0])  # the noise matters, and follows the seed


def test_sharded_and_batch_sizes_give_identical_results(setup):
    """Two processes' shares (batch 2) and one process (batch 3) store the same maps; metrics agree."""
    tmp, data, model, extractor = setup
    ds = build_dataset("mvtec", data, "test", image_size=128)
    runs = {}
    for exp, batch, world in (("one", 3, 1), ("two", 2, 2)):
        cfg = _cfg(tmp, data, exp, batch_size=batch)
        testing.prepare_run_dir(cfg)
        for rank in range(world):
            testing.run_batches(model, extractor, ds, cfg, rank=rank, world_size=world)
        runs[exp] = testing.load_results(cfg.run_dir)
        results = testing.evaluate_run(cfg)
        runs[exp]["results"] = results
    assert list(runs["one"]["filenames"]) == list(runs["two"]["filenames"])
    np.testing.assert_array_equal(runs["one"]["maps"], runs["two"]["maps"])
    assert runs["one"]["results"] == runs["two"]["results"]


def test_predict_scores_do_not_depend_on_batch_size(setup):
    tmp, data, model, extractor = setup
    folder = data / "disc" / "test"
    kw = dict(threshold=1.0, image_size=128, scoring=dict(ddim_steps=1))
    a = predict_folder(model, extractor, folder, tmp / "pred1", batch_size=1, **kw)
    b = predict_folder(model, extractor, folder, tmp / "pred2", batch_size=2, **kw)
    assert [r["file"] for r in a] == [r["file"] for r in b] and len(a) == 3
    assert [r["score"] for r in a] == [r["score"] for r in b]
    maps = [(tmp / p / "maps" / "good__000.png").read_bytes() for p in ("pred1", "pred2")]
    assert maps[0] == maps[1]
    item = build_dataset("mvtec", data, "test", image_size=128)[0]
    assert item["key"] == "disc/test/good/000.png" and a[0]["file"] == "good/000.png"
    direct = score_images(model, extractor, item["jpg"][None], ["good/000.png"], ddim_steps=1, image_score="pooled")
    assert direct["scores"][0] == a[0]["score"]  # keyed by the path relative to the predicted folder
