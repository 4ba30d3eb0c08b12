"""Faster test path: bf16/fp16 autocast, channels-last, the cached empty-caption tokens."""

import pytest
import torch

from tests.conftest import TINY_CONFIG, assert_close
from vlmdiff.features import build_extractor
from vlmdiff.precision import extract_features
from vlmdiff.model import VLMDiff, create_model, load_weights
from vlmdiff.scoring import anomaly_map


def tiny_model(state_dict) -> VLMDiff:
    m = create_model(TINY_CONFIG).eval()
    load_weights(m, state_dict, strict=True)
    m.only_mid_control = True
    return m


@pytest.fixture(scope="module")
def model(tiny_state_dict) -> VLMDiff:
    return tiny_model(tiny_state_dict)


def run(model, g, **kw):
    return model.reconstruct(g["test.images"], posterior_noise=g["test.posterior_eps"], noise=g["test.q_noise"], **kw)


@pytest.fixture(scope="module")
def fp32_run(model, golden):
    return run(model, golden("test_path"))


def test_bf16_autocasts_the_networks_and_keeps_the_ddim_update_in_fp32(model, golden, fp32_run):
    g = golden("test_path")
    seen, steps = [], []
    hook = model.model.diffusion_model.out.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
    try:
        out = run(model, g, precision="bf16", callback=lambda *a: steps.append(a))
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    for index, step, x, e_u, e_c, eps, pred_x0, x_prev in steps:
        assert x.dtype == eps.dtype == pred_x0.dtype == x_prev.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out.values())
    # the posterior is sampled in float32 from bf16 moments: z differs from fp32's by bf16 rounding only
    assert_close(out["z"], fp32_run["z"], rel=2e-2, name="z")
    assert not torch.equal(out["samples"], fp32_run["samples"])  # bf16 really ran


def test_bf16_maps_are_within_the_measured_tolerance_of_fp32(model, golden, fp32_run):
    """Measured on CPU (tiny model, EfficientNet-Lite0 maps of max 1.82): max |Δmap| = 0.019."""
    g = golden("test_path")
    extractor = build_extractor("effnet_lite0")
    images = g["test.images"]
    out = run(model, g, precision="bf16")
    maps32 = anomaly_map(extract_features(extractor, images), extract_features(extractor, fp32_run["samples"]), 128)
    feats = [extract_features(extractor, x, "bf16") for x in (images, out["samples"])]
    assert all(f.dtype == torch.float32 for f in feats[0])
    maps16 = anomaly_map(*feats, 128)
    assert abs(maps16 - maps32).max() <= 0.04
    assert abs(maps16 - maps32).max() > 0
    assert_close(out["samples"], fp32_run["samples"], rel=2e-2, name="samples")


def test_fp16_runs_and_stays_close_to_fp32(model, golden):
    g = golden("test_path")
    kw = dict(posterior_noise=g["test.posterior_eps"][:1], noise=g["test.q_noise"][:1], ddim_steps=1)
    a = model.reconstruct(g["test.images"][:1], **kw)["samples"]
    b = model.reconstruct(g["test.images"][:1], precision="fp16", **kw)["samples"]
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert_close(b, a, rel=1e-2, name="fp16 samples")


def test_unknown_precision_is_refused(model, golden):
    with pytest.raises(ValueError, match=r"precision='int8' is unknown; valid: \['fp32', 'bf16', 'fp16'\]"):
        model.reconstruct(golden("test_path")["test.images"][:1], precision="int8")


def test_channels_last_gives_the_fp32_result(tiny_state_dict, golden):
    g = golden("test_path")
    m = tiny_model(tiny_state_dict)
    kw = dict(posterior_noise=g["test.posterior_eps"][:1], noise=g["test.q_noise"][:1], ddim_steps=2)
    plain = m.reconstruct(g["test.images"][:1], **kw)
    out = m.reconstruct(g["test.images"][:1], channels_last=True, **kw)
    conv = m.model.diffusion_model.input_blocks[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for key in ("z", "samples_latent", "samples"):
        assert_close(out[key], plain[key], rel=1e-4, name=key)


def test_empty_caption_tokens_are_computed_once_and_recomputed_after_new_weights(tiny_state_dict, golden):
    m = tiny_model(tiny_state_dict)
    calls = []
    m.cond_stage_model.register_forward_hook(lambda mod, i, o: calls.append(len(i[0])))
    images = golden("test_path")["test.images"]
    for _ in range(2):
        m.reconstruct(images, ddim_steps=1, generator=torch.Generator().manual_seed(0))
    assert calls == [2]  # one batch of two empty captions, for both calls
    first = m.empty_conditioning(2)
    with torch.no_grad():
        m.cond_stage_model.transformer.text_model.final_layer_norm.bias.add_(0.5)  # new text-encoder weights
    again = m.empty_conditioning(2)
    assert calls == [2, 2]
    assert torch.allclose(again, first + 0.5, atol=1e-5)
    assert torch.equal(again, m.get_learned_conditioning(["", ""]))
    assert m.empty_conditioning(1).shape[0] == 1 and calls[-1] == 1  # keyed by batch size too
