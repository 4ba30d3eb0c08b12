"""Tiny fake datasets written in the real on-disk layouts (session-scoped)."""

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def rgb(seed: int, size=(40, 30)) -> np.ndarray:
    """A random RGB image, ``size`` = (W, H)."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def square_mask(size=(40, 30)) -> np.ndarray:
    m = np.zeros((size[1], size[0]), np.uint8)
    m[10:20, 10:20] = 255
    return m


@pytest.fixture(scope="session")
def layouts(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("layouts")
    # MVTec: 2 classes; bottle: 3 train, 2 good + 2 broken test; cable: 2 train, 1 good + 1 cut test
    mv = base / "mvtec"
    for cls, n_train, n_good, defects in [("bottle", 3, 2, {"broken": 2}), ("cable", 2, 1, {"cut": 1})]:
        for i in range(n_train):
            save(mv / cls / "train" / "good" / f"{i:03d}.png", rgb(i))
        for i in range(n_good):
            save(mv / cls / "test" / "good" / f"{i:03d}.png", rgb(100 + i))
        for d, n in defects.items():
            for i in range(n):
                save(mv / cls / "test" / d / f"{i:03d}.png", rgb(200 + i))
                save(mv / cls / "ground_truth" / d / f"{i:03d}_mask.png", square_mask())
    # custom: MVTec-like, no ground_truth folder at all
    cu = base / "custom"
    save(cu / "widget" / "train" / "good" / "a.jpg", rgb(1))
    save(cu / "widget" / "test" / "good" / "b.jpg", rgb(2))
    save(cu / "widget" / "test" / "dent" / "c.jpg", rgb(3))
    # VisA with split_csv/1cls.csv
    va = base / "visa"
    rows = []
    for cls in ("candle", "pcb1"):
        for i, (split, label) in enumerate([("train", "normal"), ("train", "normal"), ("test", "normal"), ("test", "anomaly")]):
            img = f"{cls}/Data/Images/{'Anomaly' if label == 'anomaly' else 'Normal'}/{i:03d}.JPG"
            save(va / img, rgb(i))
            mask = ""
            if label == "anomaly":
                mask = f"{cls}/Data/Masks/Anomaly/{i:03d}.png"
                save(va / mask, square_mask())
            rows.append({"object": cls, "split": split, "label": label, "image": img, "mask": mask})
    (va / "split_csv").mkdir(parents=True)
    with open(va / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["object", "split", "label", "image", "mask"])
        w.writeheader()
        w.writerows(rows)
    # Real-IAD: <data>/real_iad/<cls>/..., <data>/real_iad_jsons/realiad_jsons/<cls>.json
    ri = base / "realiad_data" / "real_iad"
    jd = base / "realiad_data" / "real_iad_jsons" / "realiad_jsons"
    jd.mkdir(parents=True)
    for cls in ("audiojack", "zipper"):
        train = [{"category": cls, "anomaly_class": "OK", "image_path": f"OK/S0001/{cls}_000{i}_OK_C{i}.jpg",
                  "mask_path": None} for i in (1, 2)]
        test = [{"category": cls, "anomaly_class": "OK", "image_path": f"OK/S0002/{cls}_0003_OK_C1.jpg", "mask_path": None},
                {"category": cls, "anomaly_class": "AK", "image_path": f"NG/AK/S0003/{cls}_0004_NG_C1.jpg",
                 "mask_path": f"NG/AK/S0003/{cls}_0004_NG_C1.png"}]
        for e in train + test:
            save(ri / cls / e["image_path"], rgb(5))
            if e["mask_path"]:
                save(ri / cls / e["mask_path"], square_mask())
        (jd / f"{cls}.json").write_text(json.dumps({"meta": {"normal_class": "OK"}, "train": train, "test": test}))
    # COCO-AD split 1
    co = base / "coco"
    items_train = [{"img_path": "train2017/000000000009.jpg", "mask_path": "", "cls_name": "coco", "specie_name": "", "anomaly": 0}]
    items_test = [{"img_path": "val2017/000000000139.jpg", "mask_path": "", "cls_name": "coco", "specie_name": "", "anomaly": 0},
                  {"img_path": "val2017/000000000285.jpg", "mask_path": "val2017_mask_ad_20_1/000000000285.png",
                   "cls_name": "coco", "specie_name": "", "anomaly": 1}]
    for it in items_train + items_test:
        save(co / it["img_path"], rgb(7))
        if it["mask_path"]:
            save(co / it["mask_path"], np.repeat(square_mask()[..., None], 3, -1))
    (co / "meta_20_1.json").write_text(json.dumps({"train": {"coco": items_train}, "test": {"coco": items_test}}))
    # CIFAR-10 python batches: 10 training images per batch file, 20 test images
    cf = base / "cifar" / "cifar-10-batches-py"
    cf.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", 10) for i in range(1, 6)] + [("test_batch", 20)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(10)) * (n // 10)}
        with open(cf / name, "wb") as fh:
            pickle.dump(batch, fh)
    return {"mvtec": mv, "custom": cu, "visa": va, "realiad": ri, "coco": co, "cifar": base / "cifar"}
