"""Masks that are not two-valued (JPEG noise, anti-aliased edges) are reported once per class."""

import io
import logging

import numpy as np
from PIL import Image

from tests.vlmdiff.test_run_results import cfg_for, data, files, run_test  # noqa: F401 (fixtures)
from vlmdiff.data import build_dataset
from vlmdiff.data.datasets import mask_levels


def jpeg_noisy(path):
    """Re-encode a mask through JPEG (grey values appear along its edges) and store it as PNG again."""
    buf = io.BytesIO()
    Image.open(path).convert("L").save(buf, format="JPEG", quality=60)
    Image.open(io.BytesIO(buf.getvalue())).save(path)


def test_mask_levels():
    binary = np.zeros((32, 32), np.uint8)
    binary[8:20, 8:20] = 255
    assert mask_levels(Image.fromarray(binary)) == (2, 0.0)
    assert mask_levels(Image.fromarray(np.zeros((8, 8), np.uint8))) == (1, 0.0)
    soft = binary.copy()
    soft[8, 8:20] = 128
    levels, between = mask_levels(Image.fromarray(soft))
    assert levels == 3 and between == 12 / (32 * 32)


def test_one_warning_per_class_naming_the_first_mask(files, data, monkeypatch, caplog):  # noqa: F811
    masks = sorted(data.rglob("ground_truth/*/*.png"))
    assert len(masks) == 2
    jpeg_noisy(masks[1])
    ds = build_dataset("mvtec", data, "test", image_size=64)
    levels = {item["key"]: item["mask_levels"] for item in (ds[i] for i in range(len(ds)))}
    assert sorted(levels.values()) == [0, 0, 2, max(levels.values())] and max(levels.values()) > 2
    noisy_key = max(levels, key=levels.get)
    with caplog.at_level(logging.WARNING):
        run_test(cfg_for(files, data), monkeypatch)
    warned = [r.getMessage() for r in caplog.records if "not two-valued" in r.getMessage()]
    assert len(warned) == 1
    assert "class disc: 1 of 2 masks" in warned[0] and noisy_key in warned[0] and "> 0" in warned[0]


def test_two_valued_masks_give_no_warning(files, data, monkeypatch, caplog):  # noqa: F811
    with caplog.at_level(logging.WARNING):
        run_test(cfg_for(files, data), monkeypatch)
    assert not [r for r in caplog.records if "not two-valued" in r.getMessage()]
