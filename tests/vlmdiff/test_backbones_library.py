"""The facts behind docs/design.md D22: the ResNet-50 scorers are torchvision's network, the DINO ViTs stay own.

Weights are random, saved in each backbone's official layout; torchvision's side is built by torchvision
alone (its ``resnet50``, its feature extractor, its ``interpolate_embeddings``).
"""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.vision_transformer import interpolate_embeddings

from scripts.compare_backbones import dino_to_torchvision, tv_vit_patches
from vlmdiff.features import build_extractor, build_network

STAGES = {"v1r50": ["layer2", "layer3", "layer4"], "resnet50": ["layer1", "layer2", "layer3"]}


def random_resnet50(with_fc: bool) -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    for m in net.modules():  # BatchNorm statistics away from the identity, so a mix-up shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    if not with_fc:  # DINO's dino_resnet50_pretrain.pth: torchvision's keys without the classifier
        net.fc = nn.Identity()
    return net.eval()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_resnet_scorers_equal_torchvision_resnet50(name, tmp_path):
    reference = random_resnet50(with_fc=name == "resnet50")
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    assert build_network(name)[0].state_dict().keys() == reference.state_dict().keys()
    extractor = build_extractor(name, path)  # strict key check
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = list(create_feature_extractor(reference, STAGES[name])(x).values())
        got = extractor(x)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
        assert e.abs().max() > 0.1


def tv_vit_s16(sd: dict, size: int) -> nn.Module:
    net = torchvision.models.VisionTransformer(size, 16, 12, 6, 384, 1536)
    net.heads = nn.Identity()
    net.load_state_dict(sd, strict=True)
    return net.eval()


def test_dino_vit_equals_torchvision_vit_only_at_its_training_size(tmp_path):
    torch.manual_seed(0)
    own_net, _ = build_network("v1s16")
    torch.save(own_net.state_dict(), tmp_path / "dino_deitsmall16_pretrain.pth")
    own = build_extractor("v1s16", tmp_path / "dino_deitsmall16_pretrain.pth")
    official = own_net.state_dict()

    with pytest.raises(RuntimeError, match="Missing key"):  # the official file needs every key renamed
        tv_vit_s16(official, 224)
    sd = dino_to_torchvision(official)
    x224, x256 = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        lib = tv_vit_s16(sd, 224)
        torch.testing.assert_close(own(x224)[0], tv_vit_patches(lib, x224)[0], atol=1e-5, rtol=0)
        with pytest.raises(Exception, match="Wrong image height"):  # one input size per model
            lib(x256)
        # at the pipeline's 256² torchvision resizes position embeddings by its own rule (size-based,
        # align_corners=True), not by DINO's: the scored maps differ
        lib256 = tv_vit_s16(interpolate_embeddings(256, 16, dict(sd)), 256)
        diff = (own(x256)[0] - tv_vit_patches(lib256, x256)[0]).abs().max()
    assert diff > 1e-3
