"""The full-size model (configs/vlmdiff.yaml) has exactly the reference's state-dict layout."""

import json

import pytest
import torch

from tests.conftest import FIXTURES, FULL_CONFIG
from vlmdiff.model import create_model

DTYPES = {"float32": torch.float32, "int64": torch.int64}


@pytest.fixture(scope="module")
def manifest():
    return json.loads((FIXTURES / "vlmdiff_state_dict_manifest.json").read_text())


@pytest.fixture(scope="module")
def full_model():
    with torch.device("meta"):
        return create_model(FULL_CONFIG)


def test_keys_shapes_dtypes_and_order_equal_the_manifest(full_model, manifest):
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in full_model.state_dict().items()]
    expected = manifest["entries"]
    assert len(ours) == manifest["num_entries"] == len(expected)
    assert {k for k, *_ in ours} == {k for k, *_ in expected}
    assert ours == expected  # same shapes, dtypes and state-dict order
    assert sum(v.numel() for v in full_model.state_dict().values()) == manifest["total_numel"]


def test_trainable_set_equals_the_reference_optimizer(full_model, manifest):
    names = {id(p): n for n, p in full_model.named_parameters()}
    trainable = [names[id(p)] for p in full_model.trainable_parameters()]
    assert trainable == manifest["optimizer"]["parameters"]
    assert sum(p.numel() for p in full_model.trainable_parameters()) == manifest["optimizer"]["numel"]
    requires_grad = {n for n, p in full_model.named_parameters() if p.requires_grad}
    assert requires_grad == set(trainable)
