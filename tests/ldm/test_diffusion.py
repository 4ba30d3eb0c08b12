"""Noise schedule, q_sample and DDIM against the reference (golden ``q_sample``/``test_path``)."""

import numpy as np
import pytest
import torch

from ldm.models.ddim import ddim_step, ddim_timesteps, make_ddim_schedule
from ldm.modules.diffusion import SCHEDULE_BUFFERS, make_beta_schedule, q_sample, schedule_buffers
from tests.conftest import assert_close


@pytest.fixture(scope="module")
def buffers():
    return schedule_buffers(make_beta_schedule("linear", 1000, linear_start=0.00085, linear_end=0.012))


def test_schedule_buffers_equal_the_reference(buffers, tiny_state_dict):
    for name in SCHEDULE_BUFFERS:
        assert buffers[name].dtype == torch.float32
        torch.testing.assert_close(buffers[name], tiny_state_dict[name], rtol=0, atol=0, msg=name)


def test_schedule_reference_values(buffers):
    ac = buffers["alphas_cumprod"]
    assert buffers["betas"][0].item() == pytest.approx(0.00085, rel=1e-6)
    assert buffers["betas"][999].item() == pytest.approx(0.012, rel=1e-6)
    for t, value in [(0, 0.99915), (1, 0.998296), (101, 0.892981), (901, 0.0140049), (999, 0.0046601)]:
        assert ac[t].item() == pytest.approx(value, abs=2e-6)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match="linear_beta"):
        make_beta_schedule("cosine", 10)


def test_q_sample(golden, buffers):
    g = golden("q_sample")
    x_t = q_sample(g["q.x0"], g["q.t"], g["q.noise"], buffers["sqrt_alphas_cumprod"],
                   buffers["sqrt_one_minus_alphas_cumprod"])
    assert_close(x_t, g["q.x_t"], rel=1e-6, name="q_sample")


def test_ddim_schedule(golden, buffers):
    g = golden("test_path")
    s = make_ddim_schedule(buffers["alphas_cumprod"], 10)
    assert np.array_equal(s.timesteps, g["test.schedule.ddim_timesteps"].numpy())
    assert torch.equal(s.alphas, g["test.schedule.ddim_alphas"])
    np.testing.assert_array_equal(s.alphas_prev, g["test.schedule.ddim_alphas_prev"].numpy())
    np.testing.assert_array_equal(s.sigmas, g["test.schedule.ddim_sigmas"].numpy())
    assert torch.equal(s.sqrt_one_minus_alphas, g["test.schedule.ddim_sqrt_one_minus_alphas"])
    assert list(ddim_timesteps(10)[::-1]) == g["test.ddim_timesteps_visited"].tolist()


def test_every_ddim_step_of_the_reference(golden, buffers):
    g = golden("test_path")
    s = make_ddim_schedule(buffers["alphas_cumprod"], 10)
    for k, index in enumerate(g["test.ddim_index_visited"].tolist()):
        eps = g["test.step_eps_uncond"][k] + 9.0 * (g["test.step_eps_cond"][k] - g["test.step_eps_uncond"][k])
        assert_close(eps, g["test.step_eps_cfg"][k], rel=1e-6, name=f"cfg {k}")
        x_prev, pred_x0 = ddim_step(g["test.step_x"][k], g["test.step_eps_cfg"][k], s, index)
        assert_close(pred_x0, g["test.step_pred_x0"][k], rel=1e-6, name=f"pred_x0 {k}")
        assert_close(x_prev, g["test.step_x_prev"][k], rel=1e-6, name=f"x_prev {k}")


def test_step_counts_that_do_not_divide_the_schedule():
    assert ddim_timesteps(3).tolist() == [1, 334, 667]
    assert ddim_timesteps(10).tolist() == list(range(1, 1000, 100))
