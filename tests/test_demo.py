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


def old_stage_configs(cfg, work, data, data_set, classes):
    """The stages' settings as the demo gave them before, as command lines of the stage scripts."""
    from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER
    from vlmdiff.cli import build_model, finetune_autoencoder
    from vlmdiff.cli import test as test_cli
    from vlmdiff.cli import train as train_cli
    from vlmdiff.config import DEMO_CONFIG
    from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD

    TINY = cfg.model_config or DEMO_CONFIG
    captions = work / "data" / "demo_captions_template_pd"
    cls_override = [f"classes=[{','.join(classes)}]"] if classes else []
    common = ["--data_set", data_set, "--data_path", str(data), "--output_dir", str(work)]
    ae = ["--resume_path", str(BUNDLED_TINY_AUTOENCODER), "--model_config", str(TINY), *common, "--exp_name",
          "autoencoder", "--image_size", str(cfg.image_size), "--crop_size", str(cfg.ae_crop), "--batch_size",
          str(cfg.ae_batch_size), "--accumulate", "1", "--learning_rate", str(cfg.ae_learning_rate), "--perceptual",
          cfg.ae_perceptual, "--max_steps",
          str(cfg.ae_steps), "--max_epochs", "-1", "--num_workers", "0", "--accelerator", "cpu",
          "progress_bar=false", *cls_override]
    assembled = work / "vlmdiff_tiny_start.safetensors"
    build = ["--sd", str(BUNDLED_TINY_SD), "--ae", str(work / "autoencoder" / "autoencoder.ckpt"), "--model_config",
             str(TINY), "--out", str(assembled), "--seed", str(cfg.seed)]
    routing = f"only_mid_control={str(cfg.only_mid_control).lower()}"
    train = ["--resume_path", str(assembled), "--model_config", str(TINY), *common, "--exp_name", "train",
             *(["--use_captions", "--caption_folder", str(captions)] if cfg.captions == "template" else []),
             "--batch_size", str(cfg.batch_size), "--accumulate_grad_batches", "1", "--learning_rate",
             str(cfg.learning_rate), "--max_epochs", str(cfg.epochs), "--every_n_epochs", str(cfg.epochs),
             "--num_workers", "0", "--accelerator", "cpu", "--seed", str(cfg.seed), f"image_size={cfg.image_size}",
             "progress_bar=false", "gradient_checkpointing=false", "cache_conditioning=true", routing, *cls_override]
    test_common = ["--model_config", str(TINY), *common, "--scorer", cfg.scorer, "--batch_size",
                   str(cfg.test_batch_size), "--device", "cpu", f"image_size={cfg.image_size}", "num_workers=0",
                   f"ddim_steps={cfg.ddim_steps}", f"seed={cfg.seed}", "overwrite=true", routing, *cls_override]
    tests = [["--resume_path", str(work / "train" / "checkpoints" / "last.ckpt"), "--exp_name", "test",
              "--save_visuals", *test_common],
             ["--resume_path", str(assembled), "--exp_name", "test_untrained", *test_common]]

    def resolve(module, argv):
        cli = module.command_line()
        args = cli.parse_args(argv)
        return test_cli.resolve(cli, args) if module is test_cli else cli.resolve(args)

    return [resolve(finetune_autoencoder, ae), resolve(build_model, build), resolve(train_cli, train),
            *(resolve(test_cli, argv) for argv in tests)]


@pytest.mark.parametrize("extra", [[], ["--captions", "none", "--only_mid_control", "false", "--seed", "3",
                                        "--learning_rate", "3e-3", "--classes", "weave", "--ae_perceptual",
                                        "none"]])
def test_the_demo_runs_each_stage_with_the_settings_it_always_gave(tmp_path, monkeypatch, extra):
    """The demo calls the stages' library functions with the settings its stage command lines had."""
    from vlmdiff.cli import demo as demo_cli
    from vlmdiff.pipelines import assemble, finetune_autoencoder, test, train

    given = []
    for module in (finetune_autoencoder, assemble, train):
        monkeypatch.setattr(module, "run", lambda cfg: given.append(cfg) or 0)
    monkeypatch.setattr(test, "run", lambda cfg: given.append(cfg) or int(len(given) == 5))  # stop after both
    work = tmp_path / "demo"
    argv = ["--work_dir", str(work), "--classes", "disc", "weave", "--n_train", "2", "--n_test_good", "1",
            "--n_test_defect", "1", "--threads", "1", *extra]
    assert demo_main(argv) == 1
    cli = demo_cli.command_line()
    cfg = cli.resolve(cli.parse_args(argv))
    assert given == old_stage_configs(cfg, work, work / "data" / "synthetic", "mvtec", cfg.classes)


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


@pytest.mark.parametrize("flag, message", [("--sgn", "checkpoint file not found (--sgn)"),
                                           ("--sgn", "not part of an SGN start"),
                                           ("--sd", "Stable Diffusion key(s) missing"),
                                           ("--model_config", "(--model_config)")])
def test_a_bad_start_file_is_refused_before_any_work(tmp_path, capsys, flag, message):
    """The demo checks a given --sd / --sgn / --model_config (from headers) before it generates data or trains
    anything."""
    from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER
    from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD

    bad = {"checkpoint file not found (--sgn)": tmp_path / "none.safetensors",
           "not part of an SGN start": BUNDLED_TINY_SD,  # a whole SD file is not an SGN start
           "Stable Diffusion key(s) missing": BUNDLED_TINY_AUTOENCODER,
           "(--model_config)": tmp_path / "none.yaml"}[message]
    from vlmdiff.errors import cli_main

    work = tmp_path / "demo"
    assert cli_main(demo_main, ["--work_dir", str(work), flag, str(bad), "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(bad) in err and err.count("\n") == 0
    assert not work.exists()
