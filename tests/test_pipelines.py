"""Smoke tests of the pipeline CLIs through main([...]) on the tiny model and tiny synthetic data."""

import json

import numpy as np
import pytest
import torch

from vlmdiff.cli import test as test_cli
from vlmdiff.cli import train as train_cli
from tests.conftest import TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff import testing
from vlmdiff.checkpoint import load_state_dict
from vlmdiff.data.synthetic import generate
from vlmdiff.model import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny data (128 px, 2 classes) and a tiny training-start checkpoint."""
    tmp = tmp_path_factory.mktemp("pipe")
    data = generate(tmp / "data", classes=("disc", "weave"), image_size=128, n_train=4, n_test_good=2, n_test_defect=3)
    seed_everything(0)
    model = create_model(TINY_CONFIG)
    torch.nn.init.normal_(model.model.diffusion_model.out[2].weight, std=0.02)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "init.safetensors"))
    return tmp, data


def train_args(tmp, data, exp, epochs):
    return ["--resume_path", str(tmp / "init.safetensors"), "--model_config", str(TINY_CONFIG), "--data_set", "mvtec",
            "--data_path", str(data), "--exp_name", exp, "--output_dir", str(tmp / "runs"), "--batch_size", "4",
            "--accumulate_grad_batches", "1", "--max_epochs", str(epochs), "--every_n_epochs", "1",
            "--num_workers", "0", "--accelerator", "cpu", "--learning_rate", "1e-4", "image_size=128",
            "progress_bar=false"]


def test_train_resume_equals_uninterrupted(setup):
    tmp, data = setup
    assert train_cli.main(train_args(tmp, data, "full", 2)) == 0
    assert train_cli.main(train_args(tmp, data, "cut", 1)) == 0  # "killed" after epoch 1
    assert train_cli.main(train_args(tmp, data, "cut", 2)) == 0  # started again: resumes from last.ckpt
    runs = tmp / "runs"
    full, cut = (load_state_dict(runs / n / "checkpoints" / "last.ckpt") for n in ("full", "cut"))
    assert set(full) == set(cut)
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    assert (runs / "full" / "checkpoints" / "model_epoch=001.ckpt").is_file()
    assert (runs / "full" / "train_config.yaml").is_file() and (runs / "full" / "csv" / "metrics.csv").is_file()


def test_resume_with_another_checkpoint_interval_updates_last(setup):
    """Lightning cannot restore the checkpoint callback's state when the interval changed; last.ckpt must still
    be overwritten (not left stale beside a last-v1.ckpt)."""
    tmp, data = setup
    if not (tmp / "runs" / "full" / "checkpoints" / "last.ckpt").is_file():
        assert train_cli.main(train_args(tmp, data, "full", 2)) == 0
    assert train_cli.main(train_args(tmp, data, "interval", 1)) == 0
    assert train_cli.main([*train_args(tmp, data, "interval", 2), "--every_n_epochs", "2"]) == 0
    ckpts = tmp / "runs" / "interval" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "model_epoch=000.ckpt", "model_epoch=001.ckpt"]
    full, resumed = (load_state_dict(d / "last.ckpt") for d in (tmp / "runs" / "full" / "checkpoints", ckpts))
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def eval_args(tmp, data, exp, *extra):
    ckpt = tmp / "runs" / "full" / "checkpoints" / "last.ckpt"
    return ["--resume_path", str(ckpt), "--model_config", str(TINY_CONFIG), "--data_set", "mvtec",
            "--data_path", str(data), "--exp_name", exp, "--output_dir", str(tmp / "runs"), "--scorer", "effnet_lite0",
            "--batch_size", "4", "--device", "cpu", "image_size=128", "num_workers=0", "ddim_steps=2", *extra]


def test_test_cli_resume_and_no_mixing(setup, monkeypatch, capsys):
    tmp, data = setup
    if not (tmp / "runs" / "full" / "checkpoints" / "last.ckpt").is_file():
        train_cli.main(train_args(tmp, data, "full", 1))
    assert test_cli.main(eval_args(tmp, data, "whole", "--save_visuals")) == 0
    printed = capsys.readouterr().out
    assert "| **mean** |" in printed
    real = testing.score_batch
    calls = {"n": 0}

    def dies_on_second_batch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(testing, "score_batch", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        test_cli.main(eval_args(tmp, data, "resumed"))
    monkeypatch.setattr(testing, "score_batch", real)
    assert len(list((tmp / "runs" / "resumed" / "scores").glob("*.npz"))) == 1
    assert test_cli.main(eval_args(tmp, data, "resumed")) == 0
    a, b = (testing.load_results(tmp / "runs" / n) for n in ("whole", "resumed"))
    np.testing.assert_array_equal(a["maps"], b["maps"])
    assert json.loads((tmp / "runs" / "whole" / "results.json").read_text())["results"] == \
        json.loads((tmp / "runs" / "resumed" / "results.json").read_text())["results"]
    with pytest.raises(ValueError, match="other settings"):
        test_cli.main(eval_args(tmp, data, "resumed", "ddim_steps=3"))
    report = (tmp / "runs" / "whole" / "report" / "index.html").read_text()
    assert 'id="results"' in report and "-heatmap_class.png" in report and "-input_gt.png" in report


def test_test_run_in_bf16_and_whole_batches_reports_its_speed(setup):
    tmp, data = setup
    if not (tmp / "runs" / "full" / "checkpoints" / "last.ckpt").is_file():
        train_cli.main(train_args(tmp, data, "full", 1))
    assert test_cli.main(eval_args(tmp, data, "fp32")) == 0
    assert test_cli.main(eval_args(tmp, data, "bf16", "precision=bf16", "batch_invariant=false",
                                   "channels_last=true")) == 0
    speed = json.loads((tmp / "runs" / "bf16" / "speed_0.json").read_text())
    assert speed["precision"] == "bf16" and speed["images"] > 0 and speed["images_per_s"] > 0
    a, b = testing.load_results(tmp / "runs" / "fp32"), testing.load_results(tmp / "runs" / "bf16")
    assert a["keys"].tolist() == b["keys"].tolist()
    diff = np.abs(a["maps"] - b["maps"]).max()
    assert 0 < diff < 0.1 * a["maps"].max()  # reduced precision: close to the fp32 maps, not equal
    with pytest.raises(ValueError, match="other settings"):  # precision is a setting that changes results
        test_cli.main(eval_args(tmp, data, "bf16", "precision=fp32"))


def test_predict_scores_a_folder_with_the_stored_threshold(setup):
    tmp, data = setup
    run = tmp / "runs" / "whole"
    if not (tmp / "runs" / "full" / "checkpoints" / "last.ckpt").is_file():
        train_cli.main(train_args(tmp, data, "full", 1))
    if not (run / "thresholds.json").is_file():
        test_cli.main(eval_args(tmp, data, "whole", "--save_visuals"))
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert set(thresholds["per_class"]) == {"disc", "weave"}
    folder = data / "disc" / "test"
    assert test_cli.main(eval_args(tmp, data, "whole", "--predict", str(folder))) == 0
    rows = json.loads((run / "predict" / "predictions.json").read_text())["images"]
    assert len(rows) == 5 and all(np.isfinite(r["score"]) for r in rows)
    assert (run / "predict" / "heatmaps" / "good__000.png").is_file()
    assert (run / "predict" / "predictions.csv").read_text().startswith("file,score,anomalous")


def test_every_stage_is_a_config_and_a_run_function(tmp_path):
    """vlmdiff.pipelines.<stage>: the stage's run config (Config) and the function its command line runs (run)."""
    import importlib
    from dataclasses import is_dataclass

    from vlmdiff import pipelines, run_config
    from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD

    schemas = {"caption": run_config.CaptionerConfig, "finetune_autoencoder": run_config.AEConfig,
               "assemble": run_config.BuildConfig, "train": run_config.TrainConfig, "test": run_config.TestConfig,
               "predict": run_config.TestConfig, "demo": run_config.DemoConfig}
    assert set(pipelines.STAGES) == set(schemas)
    for stage, schema in schemas.items():
        module = importlib.import_module(f"vlmdiff.pipelines.{stage}")
        assert module.Config is schema and is_dataclass(module.Config) and callable(module.run), stage
        assert module.run.__module__ == module.__name__, stage  # the stage's code lives in its module
    # the command lines are wrappers: each runs its stage module's run, none has a run of its own
    commands = {"captioner": "caption", "finetune_autoencoder": "finetune_autoencoder", "build_model": "assemble",
                "train": "train", "test": "test", "demo": "demo"}
    for command, stage in commands.items():
        cli_module = importlib.import_module(f"vlmdiff.cli.{command}")
        assert cli_module.stage is importlib.import_module(f"vlmdiff.pipelines.{stage}"), command
        assert not hasattr(cli_module, "run"), command
    from vlmdiff.pipelines import assemble

    out = tmp_path / "start.safetensors"
    assert assemble.run(assemble.Config(sd=str(BUNDLED_TINY_SD), model_config=str(TINY_CONFIG), out=str(out))) == 0
    assert set(load_state_dict(out)) == set(create_model(TINY_CONFIG).state_dict())
