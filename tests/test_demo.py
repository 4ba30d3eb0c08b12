"""The CPU demo end to end at a reduced size: both test runs, summary.json, the report; and on a user's folder."""

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from vlmdiff.cli.demo import main as demo_main
from vlmdiff import testing
from vlmdiff.data.synthetic import generate
from vlmdiff.metrics import METRICS, evaluate

SMALL = ["--ae_steps", "4", "--epochs", "2", "--ddim_steps", "2", "--threads", "1"]


def finite_tables(tables: dict, classes: set, keys) -> None:
    for mode in ("paper", "exact"):
        assert set(tables[mode]) == classes | {"mean"}, mode
        for cls, values in tables[mode].items():
            assert all(math.isfinite(values[k]) and 0 <= values[k] <= 1 for k in keys), (mode, cls, values)


def test_demo_runs_end_to_end(tmp_path, capsys):
    work = tmp_path / "demo"
    assert demo_main(["--work_dir", str(work), "--classes", "disc", "weave", "--n_train", "8", "--n_test_good", "3",
                      "--n_test_defect", "5", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "trained / untrained" in out and "| **mean** |" in out and "wall time:" in out
    summary = json.loads((work / "summary.json").read_text())
    for key in ("l1_samples", "l1_autoencoder", "l1_untrained_samples", "wall_s"):
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    assert set(summary["stages_s"]) >= {"autoencoder finetuning", "training", "testing", "testing the untrained start"}
    assert summary["wall_s"] >= sum(summary["stages_s"].values()) - 1e-6
    finite_tables(summary["metrics"], {"disc", "weave"}, METRICS)
    finite_tables(summary["untrained_metrics"], {"disc", "weave"}, METRICS)
    run = work / "test"
    res = testing.load_results(run)
    exact = evaluate(res["maps"], res["gt"], res["clsnames"], mode="exact")
    assert exact["mean"] == pytest.approx(summary["metrics"]["exact"]["mean"])  # the summary is the run's
    report = (run / "report" / "index.html").read_text()
    assert 'id="results"' in report and "curves_disc.png" in report
    for label in ("input, ground truth outlined", "diffusion reconstruction", "anomaly heatmap"):
        assert label in report, label
    assert "effnet_lite0_s16" in report and "last.ckpt" in report  # scorer and checkpoint stated on the page
    assert Image.open(work / "overview.png").size[1] > Image.open(work / "overview.png").size[0] / 2  # two rows
    heatmaps = sorted((run / "visuals").rglob("*-heatmap.png"))
    assert len(heatmaps) == 16 and Image.open(heatmaps[0]).size == (128, 128)


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """A small MVTec-like folder as a user would bring: one class, masks for the defective test images."""
    root = tmp_path_factory.mktemp("own") / "mine"
    generate(root, classes=["disc"], n_train=4, n_test_good=2, n_test_defect=3, seed=3)
    return root


@pytest.mark.parametrize("masks", [True, False], ids=["masks", "no_masks"])
def test_demo_on_your_own_folder(own_folder, tmp_path, masks):
    data = tmp_path / "data"
    shutil.copytree(own_folder, data)
    if not masks:
        shutil.rmtree(data / "disc" / "ground_truth")
    work = tmp_path / "run"
    assert demo_main(["--work_dir", str(work), "--data_path", str(data), *SMALL]) == 0
    summary = json.loads((work / "summary.json").read_text())
    image_keys = [k for k in METRICS if k.endswith("_I")]
    finite_tables(summary["metrics"], {"disc"}, METRICS if masks else image_keys)
    finite_tables(summary["untrained_metrics"], {"disc"}, METRICS if masks else image_keys)
    if not masks:
        pixel = [summary["metrics"]["paper"]["mean"].get(k) for k in METRICS if not k.endswith("_I")]
        assert all(v is None or not math.isfinite(v) for v in pixel)  # never a number made up from no masks
    assert not (work / "data" / "synthetic").exists()  # the user's images, not the benchmark
    res = testing.load_results(work / "test")
    assert sorted(set(res["filenames"].tolist())) == sorted(
        p.relative_to(data).as_posix() for p in (data / "disc" / "test").rglob("*.png"))
    assert np.isfinite(res["maps"]).all()
