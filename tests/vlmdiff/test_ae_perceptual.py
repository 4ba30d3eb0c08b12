"""The LPIPS stand-in of the autoencoder finetuning: an LPIPS-like distance on the shipped EfficientNet-Lite0
weights, frozen, differentiable in the reconstruction, taking part in the finetuning loss; and its setting."""

import pytest
import torch

from tests.conftest import TINY_CONFIG
from vlmdiff import ae_finetune
from vlmdiff.ae_finetune import EFFNET_PERCEPTUAL_TAPS, EffnetPerceptual, build_perceptual
from vlmdiff.checkpoint import load_state_dict
from vlmdiff.cli import finetune_autoencoder
from vlmdiff.data.synthetic import generate
from vlmdiff.errors import cli_main
from vlmdiff.features import EFFNET_LEVELS, effnet_input, shipped_effnet_weights


@pytest.fixture(scope="module")
def term():
    return EffnetPerceptual()


def pair(seed: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, size, size, generator=g)
    return x, x + 0.5 * torch.randn(x.shape, generator=g)


def test_the_shipped_weights_load_and_the_scorers_block_is_not_a_tap(term):
    shipped = load_state_dict(shipped_effnet_weights())
    assert torch.equal(term.net._conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(term.net._blocks[7]._project_conv.weight, shipped["_blocks.7._project_conv.weight"])
    assert not set(EFFNET_PERCEPTUAL_TAPS) & set(EFFNET_LEVELS["effnet_lite0_s16"])


def test_distance_is_zero_for_identical_inputs_and_follows_the_formula(term):
    x, y = pair()
    assert torch.equal(term(x, x), torch.zeros(2, 1, 1, 1))
    d = term(x, y)
    assert d.shape == (2, 1, 1, 1) and (d > 0).all()
    fx, fy = term.net.block_outputs(effnet_input(x)), term.net.block_outputs(effnet_input(y))
    expected = 0
    for k in (0, 2, 4, 7):
        a = fx[k] / (fx[k].norm(dim=1, keepdim=True) + 1e-10)
        b = fy[k] / (fy[k].norm(dim=1, keepdim=True) + 1e-10)
        expected = expected + ((a - b) ** 2).sum(dim=1).mean(dim=(1, 2))
    assert torch.allclose(d.flatten(), expected, rtol=1e-5)
    assert (term(x, x + 0.1 * (y - x)) < d).all()  # nearer images, smaller distance


def test_gradient_reaches_the_reconstruction_only_and_eval_mode_stays(term):
    x, y = pair(1)
    y.requires_grad_(True)
    term(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in term.parameters())
    before = term(x, y.detach())
    term.train()  # what Lightning does to every submodule at fit start: BatchNorm keeps its running statistics
    assert not any(m.training for m in term.modules())
    assert torch.equal(term(x, y.detach()), before)


def test_build_perceptual_draws_nothing_from_the_global_generator():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert isinstance(build_perceptual("effnet_lite0"), EffnetPerceptual)
    assert torch.equal(torch.rand(3), expected)
    assert build_perceptual("none") is None and build_perceptual("lpips") is None


def ae_args(tmp_path, data, *extra):
    return ["--resume_path", "", "--model_config", str(TINY_CONFIG), "--data_set", "mvtec", "--data_path", str(data),
            "--output_dir", str(tmp_path), "--image_size", "32", "--batch_size", "2", "--accumulate", "1",
            "--max_steps", "2", "--num_workers", "0", "--accelerator", "cpu", "progress_bar=false", *extra]


def test_finetuning_with_the_stand_in_adds_it_to_the_loss(tmp_path, monkeypatch):
    data = generate(tmp_path / "data", classes=["disc"], image_size=32, n_train=2, n_test_good=1, n_test_defect=1)
    nll, terms = {}, []
    terms_of = ae_finetune.reconstruction_terms
    forward = EffnetPerceptual.forward

    def recording_forward(self, x, y):
        out = forward(self, x, y)
        terms.append(out.detach())
        return out

    def recording_terms(x, *args, kind):
        out = terms_of(x, *args)
        nll.setdefault(kind, []).append((x.shape, out[1].detach()))
        return out

    monkeypatch.setattr(EffnetPerceptual, "forward", recording_forward)
    for kind in ("none", "effnet_lite0"):
        monkeypatch.setattr(ae_finetune, "reconstruction_terms", lambda *a, kind=kind: recording_terms(*a, kind=kind))
        assert finetune_autoencoder.main(ae_args(tmp_path, data, "--exp_name", kind, "--perceptual", kind)) == 0
    assert len(nll["none"]) == len(nll["effnet_lite0"]) == len(terms) == 2
    assert all(t.shape == (2, 1, 1, 1) and (t > 0).all() for t in terms)
    # same seed, same start and batch: the first step's NLL differs by the term, summed over C, H and W
    (b, c, h, w), plain = nll["none"][0]
    with_term = nll["effnet_lite0"][0][1]
    assert with_term.item() == pytest.approx(plain.item() + c * h * w * terms[0].sum().item() / b, rel=1e-5)
    ae = {kind: load_state_dict(tmp_path / kind / "autoencoder.ckpt") for kind in nll}
    assert any(not torch.equal(ae["none"][k], ae["effnet_lite0"][k]) for k in ae["none"])
    # continuing the run with another term is refused naming the setting, before any work
    assert (tmp_path / "none" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(ValueError, match=r"ae_config.yaml: this run was trained with perceptual term none, not "
                                         r"effnet_lite0 \(perceptual\)"):
        finetune_autoencoder.main(ae_args(tmp_path, data, "--exp_name", "none", "--perceptual", "effnet_lite0",
                                          "--max_steps", "4"))


@pytest.mark.parametrize("kind", ["effnet_lite0", "none"])
def test_the_stand_in_with_lpips_files_is_one_line_error(tmp_path, capsys, kind):
    data = generate(tmp_path / "data", classes=["disc"], image_size=32, n_train=1, n_test_good=1, n_test_defect=1)
    vgg, lin = tmp_path / "vgg16.pth", tmp_path / "lpips_vgg.pth"
    vgg.write_bytes(b"x")
    lin.write_bytes(b"x")
    out = tmp_path / "out"
    argv = ae_args(out, data, "--perceptual", kind, "--lpips_vgg", str(vgg), "--lpips_lin", str(lin))
    assert cli_main(finetune_autoencoder.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"perceptual: {kind} replaces LPIPS" in err and "lpips_vgg" in err and err.count("\n") == 0
    assert not out.exists()
