"""The bundled tiny latent diffusion model (the demo's stand-in for SD-1.5) and its pretraining script."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vlmdiff.cli import build_model
from scripts.pretrain_tiny_diffusion import main as pretrain_main
from scripts.pretrain_tiny_sgn import main as pretrain_sgn_main
from vlmdiff.assemble import SGN_START_PREFIXES
from utils.seed import seed_everything
from vlmdiff.checkpoint import load_state_dict
from vlmdiff.config import DEMO_CONFIG as TINY_CONFIG  # the model the bundled file is pretrained for
from vlmdiff.data.photos import PhotoCrops, load_photos
from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD, SD_PREFIXES, denoising_error, encode_bank, load_sd_layout
from vlmdiff.model import create_model


@pytest.fixture(scope="module")
def held_out():
    """Latent moments of photograph crops the pretraining never drew (another seed), encoded by the file's AE."""
    model = create_model(TINY_CONFIG)
    load_sd_layout(model, load_state_dict(BUNDLED_TINY_SD))
    photos = [p for p in load_photos() if min(p.shape[:2]) >= 128]
    return encode_bank(model, PhotoCrops(128, 24, seed=12345, photos=photos), progress=False)


def test_bundled_file_has_the_sd_layout_and_loads_strictly():
    state = load_state_dict(BUNDLED_TINY_SD)
    assert state and all(k.startswith(SD_PREFIXES) for k in state)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    model = create_model(TINY_CONFIG)
    expected = {k for k in model.state_dict() if k.startswith(SD_PREFIXES) and not k.endswith("position_ids")}
    assert expected == {k for k in state if not k.endswith("position_ids")}
    with safe_open(str(BUNDLED_TINY_SD), "pt") as fh:
        assert "held_out_noise_mse" in fh.metadata()


def test_bundled_unet_denoises_held_out_photographs_better_than_random_weights(held_out):
    seed_everything(0)
    random_model = create_model(TINY_CONFIG)
    trained = create_model(TINY_CONFIG)
    load_sd_layout(trained, load_state_dict(BUNDLED_TINY_SD))
    random_model.first_stage_model.load_state_dict(trained.first_stage_model.state_dict())
    torch.nn.init.normal_(random_model.model.diffusion_model.out[2].weight, std=0.02)  # not the zero init
    err_trained, err_random = denoising_error(trained, held_out), denoising_error(random_model, held_out)
    for t in err_trained:  # measured: 0.16, 0.053, 0.016, 0.006 against about 1.02 at t = 100, 400, 700, 999
        assert err_trained[t] < 0.3 * err_random[t], (t, err_trained, err_random)
    assert sum(err_trained.values()) / len(err_trained) < 0.1


def test_build_model_assembles_from_the_bundled_file_as_from_sd(tmp_path):
    out = tmp_path / "start.safetensors"
    assert build_model.main(["--sd", str(BUNDLED_TINY_SD), "--model_config", str(TINY_CONFIG), "--out", str(out)]) == 0
    start, sd = load_state_dict(out), load_state_dict(BUNDLED_TINY_SD)
    unet = "model.diffusion_model."
    for key, value in sd.items():
        assert torch.equal(start[key].to(value.dtype), value), key
    for key in (k for k in sd if k.startswith(unet + "input_blocks.")):  # the SGN starts as the UNet encoder
        assert torch.equal(start["control_model." + key[len(unet):]].to(sd[key].dtype), sd[key]), key


def test_pretraining_script_lowers_the_held_out_error_and_writes_a_loadable_file(tmp_path):
    out = tmp_path / "sd.safetensors"
    assert pretrain_main(["--out", str(out), "--steps", "12", "--batch_size", "4", "--n_crops", "16", "--n_eval", "8",
                          "--learning_rate", "2e-3", "--no_progress"]) == 0
    model = create_model(TINY_CONFIG)
    load_sd_layout(model, load_state_dict(out))
    with safe_open(str(out), "pt") as fh:
        history = json.loads(fh.metadata()["held_out_noise_mse"])
    first, last = history[0][1], history[-1][1]
    assert sum(last.values()) < sum(first.values())
    assert pretrain_main(["--out", str(tmp_path / "x.pt")]) == 2


def test_sgn_pretraining_script_writes_an_sgn_start_that_build_model_consumes(tmp_path, capsys):
    sgn = tmp_path / "sgn.safetensors"
    assert pretrain_sgn_main(["--out", str(sgn), "--steps", "12", "--batch_size", "2", "--n_crops", "8",
                              "--n_eval", "4", "--learning_rate", "2e-3", "--no_progress"]) == 0
    state = load_state_dict(sgn)
    assert state and all(k.startswith(SGN_START_PREFIXES) for k in state)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    with safe_open(str(sgn), "pt") as fh:
        meta = fh.metadata()
    assert meta["routing"] == "only_mid_control" and meta["min_timestep"] == "500"
    history = json.loads(meta["held_out_noise_mse"])
    assert history[0][0] == 0 and history[-1][0] == 12 and len(history[-1][1]) == 3

    start = tmp_path / "start.safetensors"
    assert build_model.main(["--sd", str(BUNDLED_TINY_SD), "--sgn", str(sgn), "--model_config", str(TINY_CONFIG),
                             "--out", str(start)]) == 0
    assembled, sd = load_state_dict(start), load_state_dict(BUNDLED_TINY_SD)
    for key, value in state.items():  # the SGN and the UNet decoder come from the SGN file
        assert torch.equal(assembled[key].to(value.dtype), value), key
    encoder = [k for k in sd if k.startswith("model.diffusion_model.input_blocks.")]
    assert encoder and all(torch.equal(assembled[k].to(sd[k].dtype), sd[k]) for k in encoder)  # the rest from SD
    decoder = [k for k in state if k in sd]
    assert decoder and any(not torch.equal(assembled[k].half(), sd[k]) for k in decoder)  # the decoder was trained


def test_build_model_refuses_a_file_that_is_not_an_sgn_start_before_writing(tmp_path, capsys):
    out = tmp_path / "start.safetensors"
    args = ["--sd", str(BUNDLED_TINY_SD), "--model_config", str(TINY_CONFIG), "--out", str(out)]
    assert build_model.main([*args, "--sgn", str(BUNDLED_TINY_SD)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(BUNDLED_TINY_SD) in err and "not part of an SGN start" in err
    partial = tmp_path / "partial.safetensors"
    save_file({"control_model.zero_convs.0.0.weight": torch.zeros(32, 32, 1, 1)}, str(partial))
    assert build_model.main([*args, "--sgn", str(partial)]) == 2
    assert "SGN key(s) missing" in capsys.readouterr().err
    assert build_model.main([*args, "--sgn", str(tmp_path / "none.safetensors")]) == 2
    assert "--sgn" in capsys.readouterr().err
    assert not out.exists()
