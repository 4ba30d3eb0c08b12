"""The training cache of the frozen parts' outputs: same training, rebuilt when what it depends on changes."""

import csv

import pytest
import torch

from vlmdiff.cli import train as train_cli
from tests.conftest import TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff.checkpoint import load_state_dict
from vlmdiff.conditioning_cache import cache_key, cached_dataset
from vlmdiff.data import build_dataset
from vlmdiff.data.synthetic import generate
from vlmdiff.model import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    data = generate(tmp / "data", classes=("disc", "weave"), image_size=128, n_train=4, n_test_good=1, n_test_defect=1)
    seed_everything(0)
    model = create_model(TINY_CONFIG)
    torch.nn.init.normal_(model.model.diffusion_model.out[2].weight, std=0.02)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "init.safetensors"))
    return tmp, data


def _train(tmp, data, exp, *extra):
    args = ["--resume_path", str(tmp / "init.safetensors"), "--model_config", str(TINY_CONFIG), "--data_set", "mvtec",
            "--data_path", str(data), "--exp_name", exp, "--output_dir", str(tmp / "runs"), "--batch_size", "4",
            "--accumulate_grad_batches", "1", "--max_epochs", "2", "--every_n_epochs", "2", "--num_workers", "0",
            "--accelerator", "cpu", "--learning_rate", "1e-4", "image_size=128", "progress_bar=false",
            "log_every_n_steps=1", *extra]
    assert train_cli.main(args) == 0
    with open(tmp / "runs" / exp / "csv" / "metrics.csv") as fh:
        losses = [float(r["train/loss_step"]) for r in csv.DictReader(fh) if r.get("train/loss_step")]
    return load_state_dict(tmp / "runs" / exp / "checkpoints" / "last.ckpt"), losses


def test_cached_training_equals_uncached(setup):
    tmp, data = setup
    plain, plain_losses = _train(tmp, data, "plain")
    cached, cached_losses = _train(tmp, data, "cached", "cache_conditioning=true")
    assert (tmp / "runs" / "cached" / "cache" / "conditioning.pt").is_file()
    assert len(plain_losses) == 4 and len(cached_losses) == 4
    assert max(abs(a - b) for a, b in zip(plain_losses, cached_losses)) <= 1e-5
    assert plain_losses != cached_losses[::-1]  # the curve moves: the comparison can fail
    for k in plain:
        assert torch.allclose(plain[k].float(), cached[k].float(), atol=1e-5), k


def test_cache_is_rebuilt_when_its_inputs_change(setup, caplog):
    tmp, data = setup
    model = create_model(TINY_CONFIG)
    ds = build_dataset("mvtec", data, "train", image_size=128)
    path = tmp / "c" / "conditioning.pt"
    first = cached_dataset(model, ds, path, image_size=128, progress=False)
    assert set(first[0]) >= {"jpg", "moments", "context"}
    posterior = model.encode_first_stage(ds[0]["jpg"][None])
    assert torch.allclose(first[0]["moments"], torch.cat([posterior.mean, posterior.logvar], 1)[0], atol=1e-5)
    key = cache_key(model, ds, 128)
    with torch.no_grad():
        model.first_stage_model.encoder.conv_in.weight.mul_(1.5)
    assert cache_key(model, ds, 128) != key
    assert cache_key(model, build_dataset("mvtec", data, "train", image_size=128, classes=["disc"]), 128) != key
    with caplog.at_level("INFO"):
        second = cached_dataset(model, ds, path, image_size=128, progress=False)
    assert "rebuilding" in caplog.text
    assert not torch.equal(second[0]["moments"], first[0]["moments"])
