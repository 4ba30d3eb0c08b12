"""UNet blocks against the reference's recorded tiny-model outputs (golden ``unet.safetensors``)."""

import pytest
import torch

from ldm.modules.unet import UNetConfig, UNetModel, timestep_embedding
from tests.conftest import assert_close, sub_state_dict


@pytest.fixture(scope="module")
def unet(tiny_params, tiny_state_dict):
    model = UNetModel(**tiny_params["unet_config"]["params"]).eval()
    model.load_state_dict(sub_state_dict(tiny_state_dict, "model.diffusion_model."), strict=True)
    return model


def test_timestep_embedding_is_cos_first(golden):
    g = golden("unet")
    emb = timestep_embedding(g["unet.t"], 32)
    assert_close(emb, g["unet.timestep_embedding"], rel=1e-6, name="timestep_embedding")
    assert torch.allclose(emb[:, 0], torch.cos(g["unet.t"].float()))  # frequency 1: cos(t) first


def test_plain_unet_matches_reference(unet, golden):
    g = golden("unet")
    with torch.no_grad():
        eps = unet(g["unet.x_noisy"], g["unet.t"], g["unet.context"])
    assert_close(eps, g["unet.eps_no_control"], name="eps_no_control")


def test_unet_group_norm_eps_differ_between_resblock_and_transformer(unet):
    block = unet.input_blocks[1]
    assert block[0].in_layers[0].eps == 1e-5
    assert block[1].norm.eps == 1e-6


def test_unknown_or_unsupported_unet_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown UNet parameter"):
        UNetConfig.from_params(in_channels=4, model_channels=32, num_heds=4)
    with pytest.raises(ValueError, match="use_scale_shift_norm"):
        UNetConfig.from_params(in_channels=4, model_channels=32, use_scale_shift_norm=True)


def test_gradient_checkpointing_does_not_change_gradients(tiny_params):
    torch.manual_seed(0)
    params = dict(tiny_params["unet_config"]["params"], use_checkpoint=False)
    model = UNetModel(**params).train()
    for p in model.parameters():  # zero-initialised layers would hide most of the graph
        torch.nn.init.normal_(p, std=0.05)
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 5, 64)
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_gradient_checkpointing(enabled)
        model(x, t, ctx).square().sum().backward()
        grads.append(model.input_blocks[1][0].in_layers[2].weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_norm_num_groups_reaches_every_group_norm_of_unet_and_sgn(tiny_params):
    from vlmdiff.sgn import SemanticGuidedNetwork

    params = dict(tiny_params["unet_config"]["params"], norm_num_groups=8)
    for net in (UNetModel(**params), SemanticGuidedNetwork(**dict(tiny_params["control_stage_config"]["params"],
                                                                  norm_num_groups=8))):
        norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
        assert norms and {m.num_groups for m in norms} == {8}
    default = UNetModel(**tiny_params["unet_config"]["params"])
    assert {m.num_groups for m in default.modules() if isinstance(m, torch.nn.GroupNorm)} == {32}


def test_norm_num_groups_must_divide_every_width():
    with pytest.raises(ValueError, match=r"norm_num_groups=12 must divide every width \(.*\[32, 64\]"):
        UNetConfig.from_params(in_channels=4, model_channels=32, channel_mult=(1, 1, 2, 2), norm_num_groups=12)


@pytest.mark.parametrize("groups, keeps_channel_means", [(32, False), (8, True)])
def test_one_channel_groups_erase_each_channels_mean(tiny_params, groups, keeps_channel_means):
    """Why the demo's model has 8 groups: the output head of a 32-channel UNet with 32 groups normalises each
    channel on its own, so shifting one channel of its input by a constant changes nothing (an image-wide colour
    cannot pass); with 4 channels per group it does."""
    torch.manual_seed(0)
    model = UNetModel(**dict(tiny_params["unet_config"]["params"], norm_num_groups=groups)).eval()
    for p in model.out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    h = torch.randn(2, 32, 16, 16)
    shifted = h.clone()
    shifted[:, 3] += 2.0
    with torch.no_grad():
        moved = (model.out(shifted) - model.out(h)).abs().max().item()
    assert (moved > 1e-2) == keeps_channel_means, moved


def test_the_demo_config_is_tiny_yaml_with_8_groups():
    """``configs/tiny_demo.yaml`` names ``tiny.yaml`` as its ``base``: everything else is that file's."""
    from omegaconf import OmegaConf

    from vlmdiff.config import DEMO_CONFIG, TINY_CONFIG, load_config

    tiny, demo = (OmegaConf.to_container(load_config(p)) for p in (TINY_CONFIG, DEMO_CONFIG))
    assert "base" not in demo
    for section in ("unet_config", "control_stage_config"):
        assert demo["model"]["params"][section]["params"].pop("norm_num_groups") == 8
    assert demo == tiny
