"""build_model.py: the reference's key-copy rule on a small synthetic SD checkpoint, and its errors."""

import sys
import types

import pytest
import torch
from safetensors.torch import load_file

from vlmdiff.cli import build_model
from tests.conftest import TINY_CONFIG
from utils.seed import seed_everything
from vlmdiff.model import create_model

POS_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


def save_lightning1_ckpt(obj, path):
    """torch.save ``obj`` with a Lightning-1.x ModelCheckpoint class pickled inside, as SD-1.5 files have."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    mods[names[-1]].ModelCheckpoint = cls
    sys.modules.update(mods)
    try:
        torch.save({**obj, "callbacks": {cls: {"best_model_score": None}}, "global_step": 840000}, path)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """An SD-like .ckpt (UNet, CLIP, VAE, no position_ids) and a finetuned-AE-like .ckpt with loss keys."""
    tmp = tmp_path_factory.mktemp("build")
    seed_everything(123)
    donor = create_model(TINY_CONFIG)
    for p in donor.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sd = {k: v for k, v in donor.state_dict().items()
          if k.startswith(("model.diffusion_model.", "cond_stage_model.", "first_stage_model.")) and k != POS_IDS}
    save_lightning1_ckpt({"state_dict": sd}, tmp / "sd.ckpt")
    ae = {k[len("first_stage_model."):]: torch.randn_like(v) for k, v in sd.items() if k.startswith("first_stage_model.")}
    ae["loss.logvar"] = torch.zeros(())
    torch.save({"state_dict": ae, "epoch": 3}, tmp / "ae.ckpt")
    return tmp, sd, ae


def test_assembled_model_follows_the_copy_rule(sources, capsys):
    tmp, sd, ae = sources
    out = tmp / "vlmdiff.safetensors"
    rc = build_model.main(["--sd", str(tmp / "sd.ckpt"), "--ae", str(tmp / "ae.ckpt"), "--model_config", str(TINY_CONFIG),
                           "--out", str(out), "--seed", "5", "--also_ckpt"])
    assert rc == 0
    printed = capsys.readouterr().out
    built = load_file(str(out))
    n_ctrl = sum(k.startswith("control_model.") and ("model.diffusion_" + k[len("control_"):]) in sd for k in built)
    assert f"{len(ae) - 1} from the autoencoder" in printed
    assert f"{len([k for k in sd if not k.startswith('first_stage_model.')]) + n_ctrl} keys copied from Stable" in printed
    for k, v in built.items():
        src = "model.diffusion_" + k[len("control_"):] if k.startswith("control_") else k
        if k.startswith("first_stage_model."):
            assert torch.equal(v, ae[k[len("first_stage_model."):]]), k
        elif src in sd:
            assert torch.equal(v, sd[src]), k
    assert torch.equal(built["control_model.input_blocks.4.1.proj_in.weight"],
                       sd["model.diffusion_model.input_blocks.4.1.proj_in.weight"])
    seed_everything(5)
    fresh = create_model(TINY_CONFIG).state_dict()
    for k in ("control_model.input_hint_block.0.weight", "control_model.zero_convs.3.0.weight",
              "control_model.down22.0.weight", "alphas_cumprod", POS_IDS):
        assert torch.equal(built[k], fresh[k]), f"{k} should keep its initialisation"
    assert torch.count_nonzero(built["control_model.middle_block_out.0.weight"]) == 0
    assert (tmp / "vlmdiff.ckpt").is_file()


def run_error(argv, capsys):
    rc = build_model.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    return err


def test_missing_file(sources, capsys, tmp_path):
    tmp, *_ = sources
    err = run_error(["--sd", str(tmp / "nope.ckpt"), "--model_config", str(TINY_CONFIG), "--out", str(tmp_path / "o.safetensors")], capsys)
    assert "nope.ckpt" in err and "not found" in err


def test_wrong_shapes(sources, capsys, tmp_path):
    tmp, sd, _ = sources
    bad = dict(sd)
    bad["model.diffusion_model.input_blocks.1.0.in_layers.2.weight"] = torch.zeros(8, 8, 3, 3)
    torch.save({"state_dict": bad}, tmp_path / "bad.ckpt")
    err = run_error(["--sd", str(tmp_path / "bad.ckpt"), "--model_config", str(TINY_CONFIG), "--out", str(tmp_path / "o.safetensors")], capsys)
    assert "bad.ckpt" in err and "input_blocks.1.0.in_layers.2.weight" in err and "shape" in err


def test_missing_keys(sources, capsys, tmp_path):
    tmp, sd, _ = sources
    bad = {k: v for k, v in sd.items() if not k.startswith("model.diffusion_model.output_blocks.3.")}
    torch.save({"state_dict": bad}, tmp_path / "partial.ckpt")
    err = run_error(["--sd", str(tmp_path / "partial.ckpt"), "--model_config", str(TINY_CONFIG), "--out", str(tmp_path / "o.safetensors")], capsys)
    assert "partial.ckpt" in err and "missing" in err and "output_blocks.3" in err
    ae_bad = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.decoder.")}
    torch.save(ae_bad, tmp_path / "ae_partial.pt")
    err = run_error(["--sd", str(tmp / "sd.ckpt"), "--ae", str(tmp_path / "ae_partial.pt"), "--model_config", str(TINY_CONFIG),
                     "--out", str(tmp_path / "o.safetensors")], capsys)
    assert "ae_partial.pt" in err and "encoder" in err


def test_a_run_config_file_and_model_overrides(sources, tmp_path):
    """--config is the run config (as for every stage); the model config is --model_config, changed with
    model_overrides."""
    tmp, *_ = sources
    run = tmp_path / "build.yaml"
    run.write_text(f"sd: {tmp / 'sd.ckpt'}\nae: {tmp / 'ae.ckpt'}\nmodel_config: {TINY_CONFIG}\n"
                   f"out: {tmp_path / 'a.safetensors'}\nseed: 5\n")
    assert build_model.main(["--config", str(run)]) == 0
    assert build_model.main(["--config", str(run), f"out={tmp_path / 'b.safetensors'}", "--seed", "6",
                             "--model_overrides", "model.params.timesteps=500"]) == 0
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a["alphas_cumprod"].shape == (1000,) and b["alphas_cumprod"].shape == (500,)
    assert not torch.equal(a["control_model.input_hint_block.0.weight"], b["control_model.input_hint_block.0.weight"])
    assert torch.equal(a["first_stage_model.decoder.conv_in.weight"], b["first_stage_model.decoder.conv_in.weight"])


def test_a_model_config_given_as_the_run_config_names_model_config(tmp_path, capsys):
    from vlmdiff.errors import cli_main

    status = cli_main(build_model.main, ["--sd", "sd.ckpt", "--config", str(TINY_CONFIG),
                                         "--out", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: {TINY_CONFIG}: a model config") and "--model_config" in err[0]
    assert not (tmp_path / "o.safetensors").exists()


def test_sd_is_required(tmp_path, capsys):
    from vlmdiff.errors import cli_main

    assert cli_main(build_model.main, ["--out", str(tmp_path / "o.safetensors")]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: --sd is required: Stable Diffusion 1.x checkpoint "
                                                    "(.ckpt or .safetensors)"]
