"""The demo's diagnostics: the scorer's ceiling and floor, and where the UNet listens to controls."""

import math

import pytest
import torch

from vlmdiff.config import TINY_CONFIG
from vlmdiff.data.synthetic import generate
from vlmdiff.demo import control_sensitivity, reconstruction_bounds
from vlmdiff.features import build_extractor
from vlmdiff.model import create_model


class Posterior:
    def __init__(self, x):
        self.x = x

    def mode(self):
        return self.x


class Lossless:
    """An autoencoder that round-trips images exactly: the ceiling is the defect-free image itself."""

    device, scale_factor = torch.device("cpu"), 1.0

    def encode_first_stage(self, x):
        return Posterior(x)

    def decode_first_stage(self, z):
        return z


def test_bounds_separate_a_perfect_reconstruction_from_a_copy(tmp_path):
    data = generate(tmp_path / "d", classes=("disc", "weave"), image_size=64, n_train=1, n_test_good=2,
                    n_test_defect=5)
    bounds = reconstruction_bounds(Lossless(), build_extractor("effnet_lite0"), data, image_size=64)
    assert set(bounds) == {"ceiling", "copy"} and set(bounds["ceiling"]) == {"disc", "weave", "mean"}
    assert bounds["ceiling"]["mean"]["AUROC_I"] == 1.0 and bounds["ceiling"]["mean"]["AUROC_P"] > 0.8
    # a copy leaves nothing to see: its maps are rounding noise (which still follows the image, so its ranks
    # are not quite random; measured 0.7 / 0.68): far below the ceiling
    copy, ceiling = bounds["copy"]["mean"], bounds["ceiling"]["mean"]
    assert copy["AUROC_I"] <= 0.8 and copy["AUROC_P"] < ceiling["AUROC_P"] - 0.1


def test_control_sensitivity_reports_every_level_and_scales_with_the_control():
    torch.manual_seed(0)
    model = create_model(TINY_CONFIG).eval()
    for p in model.model.diffusion_model.parameters():  # SD's decoder is not zero-initialised; give it weights
        if p.dim() > 1 and not p.abs().sum():
            torch.nn.init.normal_(p, std=0.02)
    images = torch.randn(2, 3, 128, 128)
    got = control_sensitivity(model, images)
    assert list(got) == ["middle block", "skips 16x16", "skips 8x8", "skips 4x4", "skips 2x2"]
    assert all(math.isfinite(v) and v > 0 for v in got.values())
    assert control_sensitivity(model, images, magnitude=0.0) == pytest.approx(dict.fromkeys(got, 0.0))
