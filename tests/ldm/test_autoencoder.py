"""KL autoencoder against the reference's recorded tiny model (golden ``ae.safetensors``)."""

import pytest
import torch

from ldm.models.autoencoder import AutoencoderKL
from ldm.modules.distributions import DiagonalGaussianDistribution
from tests.conftest import assert_close, sub_state_dict


@pytest.fixture(scope="module")
def ae(tiny_params, tiny_state_dict):
    model = AutoencoderKL(**tiny_params["first_stage_config"]["params"]).eval()
    model.load_state_dict(sub_state_dict(tiny_state_dict, "first_stage_model."), strict=True)
    return model


def test_encoder_and_posterior(ae, golden):
    g = golden("ae")
    with torch.no_grad():
        moments = ae.quant_conv(ae.encoder(g["ae.input_images"]))
        posterior = ae.encode(g["ae.input_images"])
    assert_close(moments, g["ae.moments"], name="moments")
    assert_close(posterior.mean, g["ae.posterior_mean"], name="mean")
    assert_close(posterior.logvar, g["ae.posterior_logvar"], name="logvar")
    assert_close(posterior.std, g["ae.posterior_std"], name="std")


def test_decoder(ae, golden):
    g = golden("ae")
    with torch.no_grad():
        assert_close(ae.decode(g["ae.decoder_input_latent"]), g["ae.decode"], name="decode")
        assert_close(ae.decode(g["ae.decoder_input_latent"] / 0.18215), g["ae.decode_first_stage"],
                     name="decode_first_stage")


def test_posterior_clamps_logvar_and_samples_with_given_noise():
    moments = torch.cat([torch.zeros(1, 4, 2, 2), torch.full((1, 4, 2, 2), 50.0)], dim=1)
    post = DiagonalGaussianDistribution(moments)
    assert post.logvar.max().item() == 20.0
    noise = torch.ones(1, 4, 2, 2)
    assert torch.allclose(post.sample(noise), post.std)
    assert post.kl().shape == (1,)


def test_unknown_ddconfig_key_is_refused(tiny_params):
    params = tiny_params["first_stage_config"]["params"]
    with pytest.raises(ValueError, match="unknown ddconfig"):
        AutoencoderKL(embed_dim=4, ddconfig={**params["ddconfig"], "chmult": [1]})
