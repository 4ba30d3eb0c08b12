"""Feature extractors: official checkpoint layouts load strictly; the shipped EfficientNet weights are real."""

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from vlmdiff.features import EXTRACTORS, build_extractor, build_network

SHAPES_AT_64 = {"v1s8": [(384, 8, 8)], "v1s16": [(384, 4, 4)], "v1b8": [(768, 8, 8)], "v1b16": [(768, 4, 4)],
                "v2s14": [(384, 16, 16)], "v1r50": [(512, 8, 8), (1024, 4, 4), (2048, 2, 2)],
                "resnet50": [(256, 16, 16), (512, 8, 8), (1024, 4, 4)], "effnet_lite0": [(40, 8, 8), (112, 4, 4)],
                "effnet_lite0_s16": [(112, 4, 4)]}


@pytest.mark.parametrize("name", EXTRACTORS)
def test_official_layout_loads_strictly(name, tmp_path):
    torch.manual_seed(0)
    network, _ = build_network(name)
    path = tmp_path / f"{name}.pth"
    torch.save(network.state_dict(), path)
    extractor = build_extractor(name, path)
    x = torch.randn(1, 3, 64, 64)
    feats = extractor(x)
    assert [tuple(f.shape[1:]) for f in feats] == SHAPES_AT_64[name]
    assert not any(p.requires_grad for p in extractor.parameters())


def test_dino_training_checkpoint_is_unwrapped(tmp_path):
    network, _ = build_network("v1s16")
    sd = {f"module.backbone.{k}": v for k, v in network.state_dict().items()}
    sd["module.head.mlp.0.weight"] = torch.zeros(2, 2)
    torch.save({"teacher": sd, "epoch": 100}, tmp_path / "checkpoint.pth")
    build_extractor("v1s16", tmp_path / "checkpoint.pth")


def test_wrong_checkpoint_names_the_file(tmp_path):
    network, _ = build_network("v1s16")
    torch.save(network.state_dict(), tmp_path / "vits16.pth")
    with pytest.raises(ValueError, match=r"vits16.pth \(as v1b8\): does not fit"):
        build_extractor("v1b8", tmp_path / "vits16.pth")
    with pytest.raises(ValueError, match="needs a local weights file"):
        build_extractor("v1s8")


def test_position_embeddings_interpolate_for_256_inputs():
    vit, _ = build_network("v1s8")
    assert vit.interpolate_pos_encoding(28, 28) is vit.pos_embed
    pos = vit.interpolate_pos_encoding(32, 32)
    assert pos.shape == (1, 1 + 32 * 32, 384) and torch.equal(pos[:, 0], vit.pos_embed[:, 0])


def test_v2_reinterpret_resize_reinterprets_memory():
    x = torch.arange(3 * 256 * 256, dtype=torch.float32).reshape(1, 3, 256, 256)
    reinterpreted = build_extractor("v2s14", random_init=True, v2_reinterpret_resize=True)
    fixed = build_extractor("v2s14", random_init=True)
    assert reinterpreted(x)[0].shape == fixed(x)[0].shape == (1, 384, 16, 16)


def test_effnet_stride16_scorer_is_the_deeper_level_of_the_two_level_one():
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(build_extractor("effnet_lite0_s16")(x)[0], build_extractor("effnet_lite0")(x)[1])


def test_shipped_effnet_weights_recognise_a_cat():
    extractor = build_extractor("effnet_lite0")
    img = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224), Image.BILINEAR), np.float32) / 255
    x = torch.from_numpy(img).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        top5 = extractor.network.logits(x).topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286)  # ImageNet cats: tabby, tiger cat, Persian, Siamese, Egyptian
