"""Anomaly map and image score against the reference's ``cal_anomaly_map`` (golden ``anomaly.safetensors``)."""

import numpy as np
import pytest
import torch

from vlmdiff.scoring import anomaly_map, image_scores, level_maps

CASES = {"resnet3": 3, "dino1": 1, "batch2": 2}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode", ["a", "mul"])
def test_anomaly_map_equals_reference(golden, case, mode):
    g = golden("anomaly")
    fs = [g[f"amap.{case}.fs{j}"] for j in range(CASES[case])]
    ft = [g[f"amap.{case}.ft{j}"] for j in range(CASES[case])]
    levels = level_maps(fs, ft, 64)
    for j, m in enumerate(levels):
        np.testing.assert_allclose(m[0].numpy(), g[f"amap.{case}.{mode}.a_map{j}"].numpy(), atol=1e-6)
    raw = anomaly_map(fs, ft, 64, sigma=0, mode=mode)
    np.testing.assert_allclose(raw[0], g[f"amap.{case}.{mode}.anomaly_map"].numpy(), atol=1e-6)
    if mode == "a":
        smooth = anomaly_map(fs, ft, 64, sigma=5.0)
        np.testing.assert_allclose(smooth[0], g[f"amap.{case}.a.gaussian_sigma5"].numpy(), atol=1e-6)
        assert smooth.dtype == np.float64


def test_every_batch_item_gets_its_own_map(golden):
    """The reference keeps item 0 only; here item 1 equals a batch-1 computation of item 1."""
    g = golden("anomaly")
    fs, ft = [g["amap.batch2.fs0"], g["amap.batch2.fs1"]], [g["amap.batch2.ft0"], g["amap.batch2.ft1"]]
    both = anomaly_map(fs, ft, 64)
    second = anomaly_map([f[1:] for f in fs], [f[1:] for f in ft], 64)
    np.testing.assert_allclose(both[1], second[0], atol=1e-12)
    assert not np.allclose(both[0], both[1])


def test_pooled_image_score_attenuates_the_border():
    centre, corner = np.zeros((1, 256, 256)), np.zeros((1, 256, 256))
    centre[0, 120:136, 120:136] = 1
    corner[0, :16, :16] = 1
    assert image_scores(centre)[0] == pytest.approx(0.604, abs=1e-3)  # golden metrics README
    assert image_scores(corner)[0] == pytest.approx(0.0007, abs=1e-4)
    assert image_scores(corner, "max")[0] == 1.0


def test_pooled_score_equals_eight_average_pools():
    x = torch.rand(3, 80, 80, dtype=torch.float64)
    y = x[:, None]
    for _ in range(8):
        y = torch.nn.functional.avg_pool2d(y, 8, stride=1)
    np.testing.assert_allclose(image_scores(x.numpy()), y.flatten(1).max(1).values.numpy(), rtol=1e-12)


def test_the_pooled_score_needs_maps_of_57_pixels_a_side():
    from vlmdiff.scoring import POOLED_MIN_SIDE, image_score_method

    assert POOLED_MIN_SIDE == 57
    assert image_score_method("pooled", (3, 57, 57)) == "pooled"
    assert image_score_method("pooled", (3, 56, 200)) == image_score_method("pooled", (200, 56)) == "max"
    assert image_score_method("max", (3, 256, 256)) == "max"
    with pytest.raises(ValueError, match="at least 57x57"):
        image_scores(np.zeros((1, 56, 56)), "pooled")
