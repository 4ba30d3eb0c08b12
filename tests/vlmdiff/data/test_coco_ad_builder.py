"""COCO-AD builder on a miniature COCO 2017 written by the test; expected values worked out by hand below."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vlmdiff.data import build_dataset
from vlmdiff.data import coco_ad
from vlmdiff.data.coco_ad import build_coco_ad, category_labels, held_out_categories
from vlmdiff.data.layouts import coco_records

from scripts.make_coco_ad import main

# The 80 COCO 2017 categories with their real, non-contiguous ids (12, 26, 29, 30, 45, 66, 68, 69, 71, 83
# are unused); the test writes them to the annotation files in shuffled order.
CATEGORIES = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
]
HELD_OUT_TABLE = {
    0: "person, bicycle, car, motorcycle, airplane, bus, train, truck, boat, traffic light, fire hydrant, "
       "stop sign, parking meter, bench, bird, cat, dog, horse, sheep, cow",
    1: "elephant, bear, zebra, giraffe, backpack, umbrella, handbag, tie, suitcase, frisbee, skis, snowboard, "
       "sports ball, kite, baseball bat, baseball glove, skateboard, surfboard, tennis racket, bottle",
    2: "wine glass, cup, fork, knife, spoon, bowl, banana, apple, sandwich, orange, broccoli, carrot, hot dog, "
       "pizza, donut, cake, chair, couch, potted plant, bed",
    3: "dining table, toilet, tv, laptop, mouse, remote, keyboard, cell phone, microwave, oven, toaster, sink, "
       "refrigerator, book, clock, vase, scissors, teddy bear, hair drier, toothbrush",
}
# Category id -> label, counted by hand along the list above (label = rank of the id).
LABELS_BY_HAND = {1: 0, 13: 11, 17: 15, 22: 20, 28: 25, 44: 39, 46: 40, 51: 45, 65: 59, 67: 60, 70: 61, 90: 79}
ID = {name: i for i, name in CATEGORIES}


def rect(x0, y0, x1, y1):
    """Polygon of an axis-aligned rectangle; pycocotools fills the pixels whose centre lies inside it,
    i.e. rows y0:y1 and columns x0:x1."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def column_runs(mask: np.ndarray) -> list:
    """Uncompressed COCO RLE counts: run lengths over the column-major pixel order, starting with zeros."""
    flat, counts, value, run = mask.flatten(order="F"), [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    return counts + [run]


# val 285 (W=20, H=14): an elephant given as a compressed RLE, a crowd of beds as an uncompressed RLE
ELEPHANT = np.zeros((14, 20), np.uint8)
ELEPHANT[np.arange(10), np.arange(10) + 3] = 1  # a diagonal stroke
ELEPHANT[10:13, 0:4] = 1
BEDS = np.zeros((14, 20), np.uint8)
BEDS[2:6, 12:17] = 1


def pixels(shape, *boxes):
    """Expected mask: the union of rectangles given as (x0, y0, x1, y1)."""
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def make_coco(root: Path) -> Path:
    """A miniature COCO 2017: 6 train and 4 val images, one of each without annotations."""
    rng = np.random.default_rng(0)
    images = {"train2017": {9: (20, 14), 25: (18, 12), 30: (16, 16), 34: (12, 10), 36: (14, 18), 42: (10, 10)},
              "val2017": {139: (24, 16), 285: (20, 14), 632: (12, 12), 724: (16, 20)}}
    for subset, sizes in images.items():
        (root / subset).mkdir(parents=True)
        for img_id, (w, h) in sizes.items():
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / subset / f"{img_id:012d}.jpg")
    elephant_rle = mask_utils.encode(np.asfortranarray(ELEPHANT))
    # (image, category, segmentation, iscrowd), in file order; the annotation index lists images in order of
    # their first annotation: train 30, 9, 42, 25, 36; val 285, 724, 139
    anns = {
        "train2017": [(30, "toothbrush", [rect(1, 1, 5, 5)], 0), (9, "umbrella", [rect(1, 1, 4, 4)], 0),
                      (42, "person", [rect(0, 0, 3, 3)], 0), (9, "bowl", [rect(5, 5, 9, 9)], 0),
                      (42, "elephant", [rect(4, 4, 6, 6)], 0), (42, "wine glass", [rect(6, 6, 8, 8)], 0),
                      (42, "dining table", [rect(1, 6, 3, 9)], 0), (25, "person", [rect(2, 2, 6, 6)], 0),
                      (36, "toilet", [rect(3, 3, 7, 7)], 0), (30, "stop sign", [rect(8, 8, 12, 12)], 0)],
        "val2017": [(285, "elephant", {"size": [14, 20], "counts": elephant_rle["counts"].decode()}, 0),
                    (724, "dining table", [rect(1, 1, 5, 5)], 0),
                    (139, "person", [rect(2, 3, 8, 7)], 0),
                    (724, "toothbrush", [rect(3, 3, 9, 12)], 0),
                    (139, "cat", [rect(10, 1, 12, 4), rect(14, 10, 20, 12)], 0),  # two parts
                    (724, "bottle", [rect(12, 15, 15, 19)], 0),
                    (139, "bowl", [rect(6, 5, 11, 15)], 0),  # overlaps the person
                    (285, "bed", {"size": [14, 20], "counts": column_runs(BEDS)}, 1)],
    }
    cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in CATEGORIES]
    random.Random(0).shuffle(cats)
    (root / "annotations").mkdir()
    for subset in images:
        data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h}
                           for i, (w, h) in images[subset].items()],
                "annotations": [{"id": 1000 * n + img, "image_id": img, "category_id": ID[cat], "segmentation": seg,
                                 "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1]}
                                for n, (img, cat, seg, crowd) in enumerate(anns[subset])],
                "categories": cats}
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(data))
    return root


# Per split: train image ids, then (val image id, anomalous) in index order, worked out from the held-out
# labels (split k: 20k..20k+19) of each image's categories.
EXPECTED = {
    0: ([9, 36], [(285, 0), (724, 0), (139, 1)]),
    1: ([30, 25, 36], [(285, 1), (724, 1), (139, 0)]),
    2: ([30, 25, 36], [(285, 1), (724, 0), (139, 1)]),
    3: ([9, 25], [(285, 0), (724, 1), (139, 0)]),
}
MASKS = {  # (split, val image) -> expected mask
    (0, 139): pixels((16, 24), (2, 3, 8, 7), (10, 1, 12, 4), (14, 10, 20, 12)),
    (1, 285): ELEPHANT.astype(bool),
    (1, 724): pixels((20, 16), (12, 15, 15, 19)),
    (2, 285): BEDS.astype(bool),
    (2, 139): pixels((16, 24), (6, 5, 11, 15)),
    (3, 724): pixels((20, 16), (1, 1, 5, 5), (3, 3, 9, 12)),
}


def tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def coco(tmp_path):
    return make_coco(tmp_path / "COCO")


def test_labels_and_held_out_table():
    cats = [{"id": i, "name": n} for i, n in reversed(CATEGORIES)]
    labels = category_labels(cats)
    assert sorted(labels.values()) == list(range(80))
    assert {i: labels[i] for i in LABELS_BY_HAND} == LABELS_BY_HAND
    for k, names in HELD_OUT_TABLE.items():
        assert held_out_categories(cats, k) == names.split(", ")


def test_meta_masks_and_reader(coco, monkeypatch):
    calls = []
    real = coco_ad.instance_mask
    monkeypatch.setattr(coco_ad, "instance_mask", lambda *a: calls.append(a) or real(*a))
    summaries = build_coco_ad(coco, progress=False)
    assert len(calls) == 8  # each val instance decoded once for the four splits
    assert sorted(p.name for p in coco.iterdir()) == sorted(
        ["annotations", "train2017", "val2017"] + [f"meta_20_{k}.json" for k in range(4)]
        + [f"val2017_mask_ad_20_{k}" for k in range(4)])
    for s in summaries:
        train_ids, test = EXPECTED[s.split]
        assert (s.train, s.test_normal, s.test_anomalous) == (len(train_ids), sum(1 - a for _, a in test),
                                                              sum(a for _, a in test))
        assert s.held_out == HELD_OUT_TABLE[s.split].split(", ")
        mask_dir = f"val2017_mask_ad_20_{s.split}"
        expected = {
            "train": {"coco": [{"img_path": f"train2017/{i:012d}.jpg", "mask_path": "", "cls_name": "coco",
                                "specie_name": "", "anomaly": 0} for i in train_ids]},
            "test": {"coco": [{"img_path": f"val2017/{i:012d}.jpg",
                               "mask_path": f"{mask_dir}/{i:012d}.png" if a else "", "cls_name": "coco",
                               "specie_name": "", "anomaly": a} for i, a in test]},
        }
        meta = json.loads((coco / f"meta_20_{s.split}.json").read_text())
        assert meta == expected
        assert all(list(it) == ["img_path", "mask_path", "cls_name", "specie_name", "anomaly"]
                   for part in meta.values() for it in part["coco"])
        assert sorted(p.name for p in (coco / mask_dir).iterdir()) == sorted(
            f"{i:012d}.png" for i, a in test if a)
        for i, a in test:
            if a:
                with Image.open(coco / mask_dir / f"{i:012d}.png") as im:
                    assert im.mode == "RGB"
                    arr = np.asarray(im)
                want = MASKS[(s.split, i)]
                assert arr.shape == want.shape + (3,)
                assert np.array_equal(arr, np.repeat(np.where(want, 255, 0)[..., None], 3, 2).astype(np.uint8))

        # the project's reader, unchanged
        for part in ("train", "test"):
            records = coco_records(coco, part, coco_part=s.split)
            assert [r.filename for r in records] == [it["img_path"] for it in expected[part]["coco"]]
            assert [r.label for r in records] == [it["anomaly"] for it in expected[part]["coco"]]
        ds = build_dataset("coco", coco, "test", image_size=32, coco_part=s.split)
        for n, (_, a) in enumerate(test):
            item = ds[n]
            assert item["label"] == a and (item["mask"].max() > 0) == bool(a)


def test_kill_and_resume_is_byte_identical(tmp_path):
    clean = make_coco(tmp_path / "clean")
    build_coco_ad(clean, progress=False)
    reference = tree(clean)

    run = make_coco(tmp_path / "run")
    written = []

    def die_after_three(path):
        written.append(path)
        if len(written) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_coco_ad(run, progress=False, on_mask_written=die_after_three)
    assert not list(run.glob("meta_20_*.json"))  # the meta files come last
    kept = {p: p.stat().st_mtime_ns for p in run.glob("val2017_mask_ad_20_*/*.png")}
    assert 3 <= len(kept) < len(MASKS)
    stray = run / "val2017_mask_ad_20_2" / ".000000000139.png.x1y2z3.tmp"  # a write cut short by a kill
    stray.write_bytes(b"\x89PNG half")

    summaries = build_coco_ad(run, progress=False)
    assert sum(s.masks_written for s in summaries) == len(MASKS) - len(kept)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # not rewritten
    assert not stray.exists()
    assert tree(run) == reference

    parallel = make_coco(tmp_path / "parallel")
    build_coco_ad(parallel, workers=2, progress=False)
    assert tree(parallel) == reference


def test_cli_builds_chosen_splits(coco, capsys):
    assert main(["--coco_root", str(coco), "--splits", "1", "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "elephant, bear, zebra" in out
    assert [line.split() for line in out.splitlines() if line.strip().startswith("1 ")] == [["1", "3", "1", "2", "2"]]
    assert sorted(p.name for p in coco.glob("meta_*")) == ["meta_20_1.json"]


def _break_val_annotations(root):
    (root / "annotations" / "instances_val2017.json").unlink()
    return root / "annotations" / "instances_val2017.json"


def _break_train_folder(root):
    for p in (root / "train2017").iterdir():
        p.unlink()
    (root / "train2017").rmdir()
    return root / "train2017"


def _corrupt_train_annotations(root):
    path = root / "annotations" / "instances_train2017.json"
    path.write_text(path.read_text()[:-40])
    return path


def _drop_val_image(root):
    (root / "val2017" / "000000000724.jpg").unlink()
    return root / "val2017" / "000000000724.jpg"


def _bad_val_segmentation(root):
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"] = {"size": [3, 3], "counts": "PP1"}  # not the image's size
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("breaker", [_break_val_annotations, _break_train_folder, _corrupt_train_annotations,
                                     _drop_val_image, _bad_val_segmentation])
def test_bad_inputs_fail_before_writing(coco, capsys, breaker):
    named = breaker(coco)
    assert main(["--coco_root", str(coco), "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(named) in err
    assert not list(coco.glob("meta_*")) and not list(coco.glob("val2017_mask_*"))
