"""Semantic-guided network and controlled UNet against the reference (golden ``unet.safetensors``)."""

import pytest
import torch

from tests.conftest import assert_close, sub_state_dict
from vlmdiff.sgn import ControlledUnetModel, SemanticGuidedNetwork


@pytest.fixture(scope="module")
def networks(tiny_params, tiny_state_dict):
    sgn = SemanticGuidedNetwork(**tiny_params["control_stage_config"]["params"]).eval()
    sgn.load_state_dict(sub_state_dict(tiny_state_dict, "control_model."), strict=True)
    unet = ControlledUnetModel(**tiny_params["unet_config"]["params"]).eval()
    unet.load_state_dict(sub_state_dict(tiny_state_dict, "model.diffusion_model."), strict=True)
    return sgn, unet


@pytest.fixture(scope="module")
def controls(networks, golden):
    g = golden("unet")
    with torch.no_grad():
        return networks[0](g["unet.x_noisy"], g["unet.hint"], g["unet.t"], g["unet.context"])


def test_hint_block(networks, golden):
    g = golden("unet")
    with torch.no_grad():
        hint = networks[0].input_hint_block(g["unet.hint"])
    assert_close(hint, g["sgn.guided_hint"], name="guided_hint")


def test_sgn_outputs_including_sff(controls, golden):
    g = golden("unet")
    assert len(controls) == 13
    for i, out in enumerate(controls):
        assert_close(out, g[f"sgn.out{i:02d}"], name=f"sgn.out{i:02d}")


def test_sff_fuses_with_silu_of_sum(networks, golden):
    g = golden("unet")
    outs = [g[f"sgn.pre_sff_zero_conv{i:02d}"] if i >= 6 else torch.zeros(1) for i in range(12)]
    with torch.no_grad():
        fused = networks[0].sff(outs)
    for i in (9, 10, 11):
        assert_close(fused[i], g[f"sgn.out{i:02d}"], name=f"sff {i}")


def test_sff_widths_follow_channel_mult(networks):
    sgn = networks[0]
    assert sgn.down11[0].weight.shape == (64, 32, 3, 3)
    assert sgn.down33[0].weight.shape == (64, 64, 3, 3)
    assert sgn.down11[0].bias is None


@pytest.mark.parametrize("only_mid", [True, False])
def test_controlled_unet(networks, controls, golden, only_mid):
    g = golden("unet")
    with torch.no_grad():
        eps = networks[1](g["unet.x_noisy"], g["unet.t"], g["unet.context"], control=list(controls),
                          only_mid_control=only_mid)
    key = "unet.eps_control_only_mid_true" if only_mid else "unet.eps_control_only_mid_false"
    assert_close(eps, g[key], name=key)


def test_only_mid_control_ignores_shallow_controls(networks, controls, golden):
    """With only_mid_control=True, controls 0..8 never reach the UNet (docs/design.md R1)."""
    g = golden("unet")
    altered = [c + 100.0 if i < 9 else c for i, c in enumerate(controls)]
    with torch.no_grad():
        a = networks[1](g["unet.x_noisy"], g["unet.t"], g["unet.context"], control=list(controls), only_mid_control=True)
        b = networks[1](g["unet.x_noisy"], g["unet.t"], g["unet.context"], control=altered, only_mid_control=True)
    assert torch.equal(a, b)


def test_sgn_refuses_a_layout_the_sff_cannot_wire(tiny_params):
    params = dict(tiny_params["control_stage_config"]["params"], channel_mult=[1, 2, 2])
    with pytest.raises(ValueError, match="SFF"):
        SemanticGuidedNetwork(**params)
