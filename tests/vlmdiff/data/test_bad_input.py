"""Bad input gives a clear error naming the file (or a documented conversion); nothing is skipped."""

import shutil

import numpy as np
import pytest
from PIL import Image

from vlmdiff.data import build_dataset
from vlmdiff.data.images import load_rgb


@pytest.fixture()
def mvtec(layouts, tmp_path):
    root = tmp_path / "mvtec"
    shutil.copytree(layouts["mvtec"], root)
    return root


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset("mvtec", tmp_path / "nowhere", "train")


def test_missing_class(mvtec):
    with pytest.raises(FileNotFoundError, match="screw.*available"):
        build_dataset("mvtec", mvtec, "train", classes=["screw"])


def test_empty_class(mvtec):
    for p in (mvtec / "cable" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match="cable"):
        build_dataset("mvtec", mvtec, "train")


def test_missing_mask_for_defect_image(mvtec):
    (mvtec / "bottle" / "ground_truth" / "broken" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="001_mask.png"):
        build_dataset("mvtec", mvtec, "test")


def test_truncated_image(mvtec):
    path = mvtec / "bottle" / "train" / "good" / "001.png"
    path.write_bytes(path.read_bytes()[:200])
    ds = build_dataset("mvtec", mvtec, "train", classes=["bottle"])
    with pytest.raises(ValueError, match="001.png"):
        ds[1]


def test_unreadable_image(mvtec):
    (mvtec / "bottle" / "train" / "good" / "002.png").write_text("not an image")
    ds = build_dataset("mvtec", mvtec, "train", classes=["bottle"])
    with pytest.raises(ValueError, match="002.png.*cannot decode"):
        ds[2]


def test_mask_size_differs_from_image(mvtec):
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(mvtec / "bottle" / "ground_truth" / "broken" / "000_mask.png")
    ds = build_dataset("mvtec", mvtec, "test", classes=["bottle"])
    idx = [r.filename for r in ds.records].index("bottle/test/broken/000.png")
    with pytest.raises(ValueError, match="000_mask.png.*differs"):
        ds[idx]


@pytest.mark.parametrize("mode,value", [("L", 128), ("RGBA", (10, 20, 30, 0)), ("I;16", 65535)])
def test_non_rgb_images_are_converted(tmp_path, mode, value):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.new(mode, (4, 4), value).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (4, 4)
    expected = {"L": (128, 128, 128), "RGBA": (10, 20, 30), "I;16": (255, 255, 255)}[mode]
    assert tuple(np.asarray(img)[0, 0]) == expected


def test_defect_images_in_training_split_are_refused(mvtec):
    shutil.copytree(mvtec / "bottle" / "test" / "broken", mvtec / "bottle" / "train" / "broken")
    with pytest.raises(ValueError, match="train/broken"):
        build_dataset("mvtec", mvtec, "train")


def test_cifar_batches_cannot_run_code(tmp_path):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(ValueError, match="test_batch.*refusing"):
        build_dataset("cifar10", tmp_path, "test")


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))
