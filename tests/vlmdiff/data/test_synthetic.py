"""The bundled synthetic benchmark: deterministic bytes, exact masks, readable as MVTec."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from scripts.make_synthetic_dataset import main as make_main
from vlmdiff.data import build_dataset
from vlmdiff.data.synthetic import DEFECTS, add_defect, generate, normal_image

SMALL = dict(image_size=64, n_train=2, n_test_good=1, n_test_defect=5)


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", classes=("brick", "disc"), seed=3, **SMALL)
    b = generate(tmp_path / "b", classes=("brick", "disc"), seed=3, **SMALL)
    c = generate(tmp_path / "c", classes=("brick", "disc"), seed=4, **SMALL)
    assert digest(a) == digest(b) != digest(c)


@pytest.mark.parametrize("kind", DEFECTS)
def test_masks_cover_exactly_the_altered_pixels(kind):
    rng = np.random.default_rng(0)
    clean = normal_image("weave", 64, rng)
    bad = add_defect(clean, kind, rng, normal_image("brick", 64, rng))
    changed = np.any(bad != clean, axis=-1)
    assert 0 < changed.mean() < 0.2


def test_written_masks_match_defect_images(tmp_path):
    root = generate(tmp_path / "d", classes=("gravel", "weave", "grass", "disc", "brick"), **SMALL)
    ds = build_dataset("mvtec", root, "test", image_size=64)
    assert len(ds.clsnames) == 5 and len(ds) == 5 * 6
    for r in ds.records:
        if r.label:
            mask = np.asarray(Image.open(r.mask))
            assert set(np.unique(mask)) <= {0, 255} and mask.any()


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    assert make_main([str(tmp_path / "s"), "--classes", "disc", "--image_size", "64", "--n_train", "1",
                      "--n_test_good", "1", "--n_test_defect", "1"]) == 0
    assert make_main([str(tmp_path / "s"), "--classes", "disc"]) == 2
    assert "already exists" in capsys.readouterr().err
