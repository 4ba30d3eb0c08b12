"""Autoencoder finetuning with LPIPS: weight files in the official key layouts load strictly through the CLI,
the perceptual term takes part in the loss with gradients, and wrong files fail naming the file."""

import pytest
import torch

from vlmdiff.cli import finetune_autoencoder
from tests.conftest import TINY_CONFIG
from vlmdiff.ae_finetune import LPIPS, LPIPS_CHANNELS, VGG16_CFG, RandomCrops
from vlmdiff.checkpoint import load_state_dict
from vlmdiff.data.synthetic import generate
from vlmdiff.errors import cli_main


def vgg16_features_state_dict(seed: int = 0) -> dict:
    """Random weights under torchvision's ``vgg16()`` keys: ``features.<i>.weight/bias`` at the conv indices."""
    g = torch.Generator().manual_seed(seed)
    sd, i, c = {}, 0, 3
    for v in VGG16_CFG:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
        sd[f"features.{i}.bias"] = torch.zeros(v)
        i, c = i + 2, v
    sd["classifier.6.bias"] = torch.zeros(1000)  # the classifier is in the file and is ignored
    return sd


def lpips_lin_state_dict(seed: int = 1) -> dict:
    """Random LPIPS v0.1 heads: ``lin<k>.model.1.weight`` of shape (1, C, 1, 1), non-negative as trained."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(LPIPS_CHANNELS)}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    vgg, lin = d / "vgg16.pth", d / "lpips_vgg.pth"
    torch.save(vgg16_features_state_dict(), vgg)
    torch.save(lpips_lin_state_dict(), lin)
    return vgg, lin


def test_lpips_loads_official_layouts_and_is_differentiable(weight_files):
    vgg, lin = weight_files
    lpips = LPIPS(vgg, lin)
    expected = {k: v for k, v in load_state_dict(vgg).items() if k.startswith("features.")}
    assert set(lpips.net.state_dict()) == set(expected)
    assert torch.equal(lpips.net.features[28].weight, expected["features.28.weight"])
    assert torch.equal(lpips.lins["lin4"].model[1].weight, load_state_dict(lin)["lin4.model.1.weight"])
    assert not any(p.requires_grad for p in lpips.parameters())
    x = torch.randn(2, 3, 32, 32)
    y = (x + 0.5 * torch.randn_like(x)).requires_grad_(True)
    d = lpips(x, y)
    assert d.shape == (2, 1, 1, 1) and (d > 0).all()
    assert torch.allclose(lpips(x, x), torch.zeros(2, 1, 1, 1), atol=1e-6)
    d.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    lpips.train()  # what Lightning does to every submodule at fit start: the heads' dropout stays off
    assert not lpips.training and torch.equal(lpips(x, y.detach()), lpips(x, y.detach()))


def test_finetune_cli_trains_with_the_perceptual_term(weight_files, tmp_path, monkeypatch):
    vgg, lin = weight_files
    data = generate(tmp_path / "data", classes=["disc"], image_size=32, n_train=2, n_test_good=1, n_test_defect=1)
    calls = []
    forward = LPIPS.forward

    def recording_forward(self, x, y):
        out = forward(self, x, y)
        calls.append(out)
        return out

    monkeypatch.setattr(LPIPS, "forward", recording_forward)
    assert finetune_autoencoder.main([
        "--resume_path", "", "--model_config", str(TINY_CONFIG), "--data_set", "mvtec", "--data_path", str(data),
        "--output_dir", str(tmp_path), "--image_size", "32", "--batch_size", "2", "--accumulate", "1",
        "--max_steps", "2", "--num_workers", "0", "--accelerator", "cpu", "--lpips_vgg", str(vgg),
        "--lpips_lin", str(lin), "progress_bar=false"]) == 0
    assert calls and all(c.shape == (2, 1, 1, 1) and c.requires_grad and (c > 0).all() for c in calls)
    assert (tmp_path / "autoencoder" / "autoencoder.ckpt").is_file()


@pytest.mark.parametrize("which", ["swapped", "misshaped", "missing"])
def test_wrong_lpips_files_name_the_file(weight_files, tmp_path, capsys, which):
    vgg, lin = weight_files
    bad = tmp_path / "bad.pth"
    if which == "swapped":
        vgg_arg, lin_arg = str(vgg), str(vgg)  # VGG weights given as the linear heads
        named = str(vgg)
    elif which == "misshaped":
        torch.save({k: v.flatten(1) for k, v in lpips_lin_state_dict().items()}, bad)  # (1, C) instead of (1, C, 1, 1)
        vgg_arg, lin_arg, named = str(vgg), str(bad), str(bad)
    else:
        vgg_arg, lin_arg, named = str(tmp_path / "absent.pth"), str(lin), str(tmp_path / "absent.pth")
    with pytest.raises((ValueError, FileNotFoundError), match=named.replace("\\", "\\\\")):
        LPIPS(vgg_arg, lin_arg)
    data = generate(tmp_path / "data", classes=("disc",), image_size=64, n_train=1, n_test_good=1, n_test_defect=1)
    assert cli_main(finetune_autoencoder.main, ["--resume_path", "", "--model_config", str(TINY_CONFIG), "--data_path",
                                                str(data), "--output_dir", str(tmp_path / "out"), "--lpips_vgg",
                                                vgg_arg, "--lpips_lin", lin_arg, "image_size=64"]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_random_crops_are_seeded_and_checked():
    images = [{"jpg": torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(3, 8, 8)}]
    a = RandomCrops(images, 4, generator=torch.Generator().manual_seed(3))
    b = RandomCrops(images, 4, generator=torch.Generator().manual_seed(3))
    crops = [a[0]["jpg"] for _ in range(5)]
    assert all(c.shape == (3, 4, 4) for c in crops)
    assert all(torch.equal(c, b[0]["jpg"]) for c in crops)
    with pytest.raises(ValueError, match="crop size 9"):
        RandomCrops(images, 9)[0]


def test_finetune_cli_continues_from_its_last_epoch(tmp_path, caplog):
    data = generate(tmp_path / "data", classes=["disc"], image_size=32, n_train=4, n_test_good=1, n_test_defect=1)
    args = ["--resume_path", "", "--model_config", str(TINY_CONFIG), "--data_set", "mvtec", "--data_path", str(data),
            "--output_dir", str(tmp_path), "--image_size", "32", "--batch_size", "2", "--accumulate", "1",
            "--num_workers", "0", "--accelerator", "cpu", "progress_bar=false"]
    last = tmp_path / "autoencoder" / "checkpoints" / "last.ckpt"
    assert finetune_autoencoder.main([*args, "--max_epochs", "1"]) == 0
    first = torch.load(last, map_location="cpu", weights_only=False)
    assert first["global_step"] == 4  # 2 updates x 2 optimisers
    with caplog.at_level("INFO", logger="finetune_autoencoder"):
        assert finetune_autoencoder.main([*args, "--max_epochs", "3"]) == 0
    assert "resuming from" in caplog.text
    second = torch.load(last, map_location="cpu", weights_only=False)
    assert second["global_step"] == 12 and second["epoch"] == 3
    ae = load_state_dict(tmp_path / "autoencoder" / "autoencoder.ckpt")
    saved = {k.removeprefix("autoencoder."): v for k, v in second["state_dict"].items() if k.startswith("autoencoder.")}
    assert saved.keys() == ae.keys() and all(torch.equal(ae[k], saved[k]) for k in ae)
