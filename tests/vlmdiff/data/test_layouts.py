"""Every reader on a tiny fake dataset in its real layout: counts, labels, masks, names, tensors."""

import numpy as np
import pytest
import torch

from vlmdiff.data import build_dataset
from vlmdiff.data.images import IMAGENET_MEAN, IMAGENET_STD


def labels(ds):
    return [ds[i]["label"] for i in range(len(ds))]


def test_mvtec(layouts):
    train = build_dataset("mvtec", layouts["mvtec"], "train", image_size=32)
    test = build_dataset("mvtec", layouts["mvtec"], "test", image_size=32)
    assert len(train) == 5 and set(labels(train)) == {0}
    assert len(test) == 6 and labels(test).count(1) == 3
    assert test.clsnames == ["bottle", "cable"]
    item = next(test[i] for i in range(len(test)) if test[i]["label"] == 1)
    assert item["filename"] == "bottle/test/broken/000.png" and item["clsname"] == "bottle"
    assert item["jpg"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert torch.equal(item["jpg"], item["hint"]) and item["txt"] == ""
    assert 0 < item["mask"].mean() < 1 and item["mask"].max() == 1.0  # soft resized square
    good = next(test[i] for i in range(len(test)) if test[i]["label"] == 0)
    assert good["mask"].sum() == 0


def test_normalisation_matches_hand_computation(layouts, tmp_path):
    from PIL import Image

    path = layouts["mvtec"] / "bottle" / "train" / "good" / "000.png"
    ds = build_dataset("mvtec", layouts["mvtec"], "train", image_size=16, classes=["bottle"])
    arr = np.asarray(Image.open(path).convert("RGB").resize((16, 16), Image.BILINEAR), np.float32) / 255
    expected = (arr - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(ds[0]["jpg"].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_custom_folder_without_masks(layouts):
    test = build_dataset("custom", layouts["custom"], "test", image_size=16)
    assert len(test) == 2 and sorted(labels(test)) == [0, 1]
    assert not test.has_masks and all(test[i]["has_mask"] is False for i in range(2))


def test_visa(layouts):
    train = build_dataset("visa", layouts["visa"], "train", image_size=16)
    test = build_dataset("visa", layouts["visa"], "test", image_size=16, classes=["pcb1"])
    assert len(train) == 4 and set(labels(train)) == {0}
    assert len(test) == 2 and sorted(labels(test)) == [0, 1] and test.clsnames == ["pcb1"]
    assert test[1]["filename"] == "pcb1/Data/Images/Anomaly/003.JPG" and test[1]["mask"].max() > 0


def test_realiad(layouts):
    train = build_dataset("realiad", layouts["realiad"], "train", image_size=16)
    test = build_dataset("realiad", layouts["realiad"], "test", image_size=16)
    assert len(train) == 4 and len(test) == 4 and labels(test).count(1) == 2
    assert train.clsnames == ["audiojack", "zipper"]
    assert test[1]["filename"] == str(layouts["realiad"] / "audiojack" / "NG/AK/S0003/audiojack_0004_NG_C1.jpg")


def test_coco(layouts):
    train = build_dataset("coco", layouts["coco"], "train", image_size=16, coco_part=1)
    test = build_dataset("coco", layouts["coco"], "test", image_size=16, coco_part=1)
    assert len(train) == 1 and len(test) == 2 and test.clsnames == ["coco"]
    assert test[1]["label"] == 1 and test[1]["mask"].max() == 1.0  # 3-channel 255 mask
    with pytest.raises(FileNotFoundError, match="meta_20_3.json"):
        build_dataset("coco", layouts["coco"], "test", coco_part=3)


def test_cifar_one_vs_rest(layouts):
    train = build_dataset("cifar10", layouts["cifar"], "train", image_size=16)
    test = build_dataset("cifar10", layouts["cifar"], "test", image_size=16)
    assert len(train) == 25  # classes 0..4 of 50 training images
    assert len(test) == 20 and sum(labels(test)) == 10 and not test.has_masks
    assert test[0]["jpg"].shape == (3, 16, 16)


def test_unknown_dataset_lists_valid_names(layouts):
    with pytest.raises(ValueError, match="realiad"):
        build_dataset("mvtec2", layouts["mvtec"], "train")
