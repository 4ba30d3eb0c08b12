"""Metrics against the peer evaluators' values (golden ``metrics/``) and hand-known answers."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.conftest import GOLDEN
from vlmdiff.metrics import METRICS, MetricAccumulator, aupro_exact, aupro_paper, evaluate

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


# ----------------------------------------------------------------------------- streaming evaluation
def brute_force_pro(amaps, gt, thresholds):
    """(FPR, PRO) at each threshold, regions relabelled per image as the reference does."""
    from skimage.measure import label
    regions = [(i, label(m, connectivity=2) == r) for i, m in enumerate(gt) for r in range(1, label(m).max() + 1)]
    fpr, pro = [], []
    for th in thresholds:
        pred = amaps > th
        pro.append(np.mean([pred[i][reg].sum() / reg.sum() for i, reg in regions]))
        fpr.append((pred & ~gt).sum() / (~gt).sum())
    return np.array(fpr), np.array(pro)


def random_case(seed, n=10, size=64, levels=None):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(n // 2):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(1, 12, 2)
            masks[i, y:y + h, x:x + w] = True
    amaps = (rng.random((n, size, size)) + 0.4 * masks * rng.random()).astype(np.float32)
    if levels:
        amaps = np.round(amaps * levels) / levels  # many ties between normal and anomalous pixels
    return amaps.astype(np.float32), masks


@pytest.mark.parametrize("levels", [None, 7])
def test_aupro_equals_brute_force(levels):
    amaps, gt = random_case(1, levels=levels)
    lo, hi = amaps.min(), amaps.max()
    fpr, pro = brute_force_pro(amaps, gt, np.arange(lo, hi, (hi - lo) / 200))
    keep = fpr < 0.3
    from sklearn.metrics import auc
    assert aupro_paper(amaps, gt) == pytest.approx(auc(fpr[keep] / fpr[keep].max(), pro[keep]), abs=1e-12)
    distinct = np.unique(amaps)[::-1]
    fpr, pro = brute_force_pro(amaps, gt, np.r_[np.inf, distinct[1:]])  # "> next lower value" = "≥ value"
    fpr, pro = np.r_[fpr, 1.0], np.r_[pro, 1.0]
    k = np.searchsorted(fpr, 0.3, side="right")
    x = np.r_[fpr[:k], 0.3]
    y = np.r_[pro[:k], np.interp(0.3, fpr[k - 1:k + 1], pro[k - 1:k + 1])]
    assert aupro_exact(amaps, gt) == pytest.approx(np.trapezoid(y, x) / 0.3, abs=1e-12)


@pytest.mark.parametrize("levels", [None, 5])
def test_pixel_curves_equal_sklearn_with_ties(levels):
    from sklearn.metrics import precision_recall_curve
    amaps, gt = random_case(2, levels=levels)
    r = evaluate(amaps, gt, ["c"] * len(amaps), mode="exact")["c"]
    assert r["AUROC_P"] == pytest.approx(roc_auc_score(gt.ravel(), amaps.ravel()), abs=1e-12)
    assert r["AP_P"] == pytest.approx(average_precision_score(gt.ravel(), amaps.ravel()), abs=1e-12)
    p, rec, _ = precision_recall_curve(gt.ravel(), amaps.ravel())
    with np.errstate(invalid="ignore"):
        assert r["F1max_P"] == pytest.approx(np.nanmax(2 * p * rec / (p + rec)), abs=1e-12)


@pytest.mark.parametrize("mode", ["paper", "exact"])
def test_streaming_in_small_chunks_equals_in_memory(mode):
    """Interleaved classes, chunks of 7 images in shuffled order, a flush every ~2 images' pixels."""
    z = np.load(GOLDEN / "metrics" / "pub_basic_64.npz")
    whole = evaluate(z["amaps"], z["masks"], z["clsnames"], mode=mode)
    order = np.random.default_rng(0).permutation(len(z["amaps"]))
    chunks = [order[i:i + 7] for i in range(0, len(order), 7)]
    acc = MetricAccumulator(mode, chunk_pixels=2 * 64 * 64)
    for idx in chunks:
        acc.update(z["amaps"][idx], z["masks"][idx], z["clsnames"][idx])
    for idx in chunks[::-1]:  # any order in the second pass
        acc.update_pixels(z["amaps"][idx], z["clsnames"][idx])
    streamed = acc.compute()
    for cls in whole:
        for key in METRICS:
            assert streamed[cls][key] == pytest.approx(whole[cls][key], abs=1e-12, nan_ok=True), (cls, key)


def test_torch_backend_equals_numpy():
    z = np.load(GOLDEN / "metrics" / "pub_ties_64.npz")
    for mode in ("paper", "exact"):
        a = evaluate(z["amaps"], z["masks"], z["clsnames"], mode=mode)
        b = evaluate(z["amaps"], z["masks"], z["clsnames"], mode=mode, device="cpu")
        for cls in a:
            for key in METRICS:
                assert b[cls][key] == pytest.approx(a[cls][key], abs=1e-12, nan_ok=True), (mode, cls, key)


def test_a_chunk_missing_from_the_second_pass_is_an_error():
    amaps, gt = random_case(3)
    acc = MetricAccumulator("exact")
    acc.update(amaps, gt, ["c"] * len(amaps))
    acc.update_pixels(amaps[:-1], ["c"] * (len(amaps) - 1))
    with pytest.raises(RuntimeError, match="second pass saw"):
        acc.compute()
    with pytest.raises(KeyError, match="only in the second pass"):
        acc.update_pixels(amaps[:1], ["d"])
    with pytest.raises(RuntimeError, match="second pass has started"):
        acc.update(amaps, gt, ["c"] * len(amaps))


def test_memory_holds_anomalous_pixels_not_normal_ones():
    amaps, gt = random_case(4, n=40, size=96)
    acc = MetricAccumulator("paper", chunk_pixels=96 * 96 * 4)
    for i in range(0, 40, 4):
        acc.update(amaps[i:i + 4], gt[i:i + 4], ["c"] * 4)
    state = acc.classes["c"]
    assert sum(v.size for v in state.pos_values) == gt.sum() < amaps.size // 10
    for i in range(0, 40, 4):
        acc.update_pixels(amaps[i:i + 4], ["c"] * 4)
        assert state._buffered < 96 * 96 * 4  # flushed whenever the buffer fills


def test_interleaved_classes_share_one_buffer_budget():
    amaps, gt = random_case(5, n=24, size=64)
    names = np.array(["a", "b", "c"] * 8)
    acc = MetricAccumulator("exact", chunk_pixels=64 * 64 * 5)
    acc.update(amaps, gt, names)
    for i in range(24):
        acc.update_pixels(amaps[i:i + 1], names[i:i + 1])
        assert sum(c._buffered for c in acc.classes.values()) <= 64 * 64 * 5
    streamed, whole = acc.compute(), evaluate(amaps, gt, names, mode="exact")
    assert all(streamed[c][k] == pytest.approx(whole[c][k], abs=1e-12) for c in "abc" for k in METRICS)


def test_non_finite_maps_are_refused():
    amaps, gt = random_case(6)
    amaps[2, 5, 5] = np.nan
    with pytest.raises(ValueError, match="class 'c'.*NaN or infinite"):
        evaluate(amaps, gt, ["c"] * len(amaps), mode="exact")
