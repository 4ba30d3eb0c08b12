"""The assembled VLMDiff system against the reference's recorded tiny model (apply_model, test path)."""

import pytest
import torch

from tests.conftest import TINY_CONFIG, assert_close
from vlmdiff.model import VLMDiff, create_model, load_weights


@pytest.fixture(scope="module")
def model(tiny_state_dict) -> VLMDiff:
    m = create_model(TINY_CONFIG).eval()
    load_weights(m, tiny_state_dict, strict=True)
    return m


@pytest.mark.parametrize("only_mid", [False, True])
def test_apply_model(model, golden, only_mid):
    g = golden("unet")
    model.only_mid_control = only_mid
    cond = {"c_crossattn": [g["unet.context"]], "c_concat": [g["unet.hint"]]}
    with torch.no_grad():
        eps = model.apply_model(g["unet.x_noisy"], g["unet.t"], cond)
    key = f"vlmdiff.apply_model_only_mid_{str(only_mid).lower()}"
    assert_close(eps, g[key], name=key)


def test_model_q_sample(model, golden):
    g = golden("q_sample")
    assert_close(model.q_sample(g["q.x0"], g["q.t"], g["q.noise"]), g["q.x_t"], rel=1e-6)


def run_test_path(model, g, index=slice(None), captions=None):
    model.only_mid_control = True
    steps = []
    out = model.reconstruct(g["test.images"][index], captions=captions, posterior_noise=g["test.posterior_eps"][index],
                            noise=g["test.q_noise"][index], return_ae_reconstruction=True,
                            callback=lambda *a: steps.append(a))
    return out, steps


def test_reconstruct_reproduces_every_step_of_the_reference(model, golden):
    """Batch of 2 (the reference can only run batch 1); sample 0 guided by a caption, sample 1 by ""."""
    g = golden("test_path")
    captions = ["a hexagonal metal nut with a scratch on its surface", ""]
    out, steps = run_test_path(model, g, captions=captions)
    assert_close(out["z"], g["test.z"], name="z")
    assert_close(out["x_T"], g["test.x_T"], name="x_T")
    assert [s[1] for s in steps] == g["test.ddim_timesteps_visited"].tolist()
    for k, (index, step, x, e_u, e_c, eps, pred_x0, x_prev) in enumerate(steps):
        assert index == g["test.ddim_index_visited"][k].item()
        for name, value in [("x", x), ("eps_uncond", e_u), ("eps_cond", e_c), ("eps_cfg", eps),
                            ("pred_x0", pred_x0), ("x_prev", x_prev)]:
            assert_close(value, g[f"test.step_{name}"][k], rel=1e-3, name=f"step {k} {name}")
    assert_close(out["samples_latent"], g["test.samples_latent"], rel=1e-3, name="samples_latent")
    assert_close(out["samples"], g["test.samples"], rel=1e-3, name="samples")
    assert_close(out["reconstruction"], g["test.reconstruction"], rel=1e-4, name="reconstruction")


def test_empty_caption_skips_the_duplicate_guidance_pass(model, golden):
    """Sample 1 alone with "": one model pass per step (no guidance batch), same result as the reference."""
    g = golden("test_path")
    out, steps = run_test_path(model, g, index=slice(1, 2), captions=[""])
    assert all(s[3] is None for s in steps)  # no unconditional branch was run
    assert_close(out["samples"], g["test.samples"][1:], rel=1e-3, name="samples")


def test_guidance_scale_has_no_effect_without_captions(model, golden):
    g = golden("test_path")
    kw = dict(posterior_noise=g["test.posterior_eps"], noise=g["test.q_noise"])
    a = model.reconstruct(g["test.images"], guidance_scale=9.0, **kw)["samples"]
    b = model.reconstruct(g["test.images"], guidance_scale=1.0, **kw)["samples"]
    assert torch.equal(a, b)


def test_matched_start_mode_runs_only_the_steps_below_the_start(model, golden):
    g = golden("test_path")
    steps = []
    model.reconstruct(g["test.images"][:1], start_timestep=500, start_mode="matched",
                      callback=lambda *a: steps.append(a[1]), generator=torch.Generator().manual_seed(0))
    assert steps == [401, 301, 201, 101, 1]
    with pytest.raises(ValueError, match="start_mode"):
        model.reconstruct(g["test.images"][:1], start_mode="strict")


def test_reconstruct_is_seeded_by_its_generator(model, golden):
    g = golden("test_path")
    runs = [model.reconstruct(g["test.images"][:1], ddim_steps=2, generator=torch.Generator().manual_seed(7))
            for _ in range(2)]
    assert torch.equal(runs[0]["samples"], runs[1]["samples"])
