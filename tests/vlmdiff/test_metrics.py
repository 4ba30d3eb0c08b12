"""Metrics against the peer evaluators' values (golden ``metrics/``) and hand-known answers."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.conftest import GOLDEN
from vlmdiff.metrics import METRICS, aupro_exact, aupro_paper, evaluate

CASES = ["pub_basic_64", "pub_ties_64", "pub_real_256", "pub_degenerate_64"]
NAMES = {"I-AUROC": "AUROC_I", "I-AP": "AP_I", "I-F1max": "F1max_I", "P-AUROC": "AUROC_P", "P-AP": "AP_P",
         "P-F1max": "F1max_P", "AUPRO": "AUPRO"}
EXPECTED = json.loads((GOLDEN / "metrics" / "expected.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode,peer", [("paper", "vlmdiff"), ("exact", "exact")])
def test_golden_cases(case, mode, peer):
    z = np.load(GOLDEN / "metrics" / f"{case}.npz")
    ours = evaluate(z["amaps"], z["masks"], z["clsnames"], mode=mode)
    expected = EXPECTED[case]["results"][peer]
    for cls, values in expected["per_class"].items():
        for name, value in values.items():
            if name not in NAMES:
                continue
            if value is None:  # the reference raises here (constant map): we give NaN
                assert np.isnan(ours[cls][NAMES[name]])
            else:
                assert ours[cls][NAMES[name]] == pytest.approx(value, abs=1e-6), (cls, name)
    for name, value in expected["mean"].items():
        if name in NAMES and value is not None:
            assert ours["mean"][NAMES[name]] == pytest.approx(value, abs=1e-6), ("mean", name)


def perfect_case(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n // 2):
        y, x = rng.integers(4, size - 12, 2)
        masks[i, y:y + 8, x:x + 8] = 1
    amaps = masks * 2.0 + rng.random((n, size, size)) * 0.5
    return amaps, masks


@pytest.mark.parametrize("mode", ["paper", "exact"])
def test_perfect_detector(mode):
    amaps, masks = perfect_case(size=128)
    r = evaluate(amaps, masks, ["c"] * len(amaps), mode=mode)["c"]
    for key in ("AUROC_P", "AP_P", "F1max_P", "AUPRO", "AUROC_I", "AP_I", "F1max_I"):
        assert r[key] == pytest.approx(1.0), key


def test_constant_map():
    _, masks = perfect_case()
    amaps = np.full(masks.shape, 0.5)
    r = evaluate(amaps, masks, ["c"] * len(amaps), mode="exact")["c"]
    p = masks.mean()
    assert r["AUROC_P"] == 0.5 and r["AP_P"] == pytest.approx(p)
    assert r["F1max_P"] == pytest.approx(2 * p / (1 + p))
    assert r["AUPRO"] == pytest.approx(0.15)  # the diagonal up to FPR 0.3, divided by 0.3


def test_aupro_closed_form():
    """One region whose overlap equals the FPR at every threshold: PRO(f) = f, so AU-PRO = 0.15 exactly."""
    amap = np.tile(np.arange(10, dtype=np.float64), (10, 1))  # column value = x
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 1  # top half anomalous, same column values as the normal bottom half
    assert aupro_exact(amap[None], mask[None].astype(bool)) == pytest.approx(0.15)


def test_pixel_metrics_equal_sklearn_on_random_data():
    rng = np.random.default_rng(3)
    masks = rng.random((4, 16, 16)) > 0.8
    amaps = np.round(rng.random((4, 16, 16)) + masks * 0.3, 2)  # rounded: many ties
    r = evaluate(amaps, masks, ["c"] * 4, mode="exact")["c"]
    assert r["AUROC_P"] == pytest.approx(roc_auc_score(masks.ravel(), amaps.ravel()), abs=1e-12)
    assert r["AP_P"] == pytest.approx(average_precision_score(masks.ravel(), amaps.ravel()), abs=1e-12)


def test_paper_mode_flips_auroc_below_half():
    amaps, masks = perfect_case(size=128)
    r_paper = evaluate(-amaps, masks, ["c"] * len(amaps), mode="paper")["c"]
    r_exact = evaluate(-amaps, masks, ["c"] * len(amaps), mode="exact")["c"]
    assert r_exact["AUROC_P"] == pytest.approx(0.0) and r_paper["AUROC_P"] == pytest.approx(1.0)


def test_paper_aupro_uses_a_coarse_grid():
    z = np.load(GOLDEN / "metrics" / "pub_ties_64.npz")
    idx = z["clsnames"] == "outlier"
    exact, paper = aupro_exact(z["amaps"][idx], z["masks"][idx] > 0), aupro_paper(z["amaps"][idx], z["masks"][idx] > 0)
    assert exact - paper > 0.3  # one outlier pixel collapses the 200 uniform thresholds


def test_labels_only_gives_image_metrics():
    amaps, masks = perfect_case(size=64)
    labels = masks.reshape(len(masks), -1).any(1)
    r = evaluate(amaps, None, ["c"] * len(amaps), mode="exact", labels=labels)
    assert r["c"]["AUROC_I"] == pytest.approx(1.0) and np.isnan(r["c"]["AUROC_P"])
    assert set(r["mean"]) == set(METRICS)


def test_small_maps_need_the_plain_max_score():
    with pytest.raises(ValueError, match="57x57"):
        evaluate(np.zeros((2, 32, 32)), np.zeros((2, 32, 32)), ["a", "b"], mode="paper")


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="masks"):
        evaluate(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), ["a", "b"])
    with pytest.raises(ValueError, match="mode"):
        evaluate(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), ["a", "b"], mode="fast")
