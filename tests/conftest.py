"""Shared fixtures: paths to recorded reference data."""

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield
