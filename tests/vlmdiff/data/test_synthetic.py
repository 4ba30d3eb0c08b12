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


def test_defect_free_counterparts_differ_from_the_stored_images_exactly_inside_their_masks(tmp_path):
    from vlmdiff.data.synthetic import defect_free_counterparts

    root = generate(tmp_path / "d", classes=("brick", "disc"), **SMALL)
    clean = defect_free_counterparts(root)
    assert len(clean) == 2 * SMALL["n_test_defect"] and all("/test/" in k and "/good/" not in k for k in clean)
    for rel, img in clean.items():
        bad = np.asarray(Image.open(root / rel).convert("RGB"))
        kind, stem = rel.split("/")[2], rel.split("/")[3][:-4]
        mask = np.asarray(Image.open(root / rel.split("/")[0] / "ground_truth" / kind / f"{stem}_mask.png")) > 0
        assert mask.any() and np.array_equal(np.any(bad != img, axis=-1), mask), rel
    victim = root / next(iter(clean))
    Image.fromarray(255 - np.asarray(Image.open(victim))).save(victim)
    with pytest.raises(ValueError, match="differs from what synthetic_dataset.json regenerates"):
        defect_free_counterparts(root)
    with pytest.raises(FileNotFoundError, match="synthetic_dataset.json"):
        defect_free_counterparts(tmp_path)
