"""Shared fixtures: recorded reference data and the tiny model's configuration."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"
FULL_CONFIG = ROOT / "configs" / "vlmdiff.yaml"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4, name: str = "") -> None:
    """``max|Δ| ≤ rel · max(1, max|ref|)``: the golden README's acceptance for float32 reimplementations."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    expected = expected.to(actual.dtype)
    bound = rel * max(1.0, expected.abs().max().item())
    err = (actual - expected).abs().max().item()
    assert err <= bound, f"{name}: max|diff| {err:.3g} > {bound:.3g}"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def golden():
    """``golden("unet")`` → the tensors of ``unet.safetensors``."""
    cache = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = load_file(str(GOLDEN / f"{name}.safetensors"))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_state_dict() -> dict:
    """The recorded tiny reference model's weights, parameters cast to float32."""
    sd = load_file(str(GOLDEN / "tiny_state_dict.safetensors"))
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


@pytest.fixture(scope="session")
def tiny_params():
    """``model.params`` of configs/tiny.yaml as a plain dict."""
    return OmegaConf.to_container(OmegaConf.load(TINY_CONFIG).model.params, resolve=True)


def sub_state_dict(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield
