"""Caption files: the reference's structure, a round trip by image path, and mismatches."""

import json

import pytest

from vlmdiff.data import build_dataset, read_caption_files, read_coco_captions
from vlmdiff.data.captions import folder_name, write_caption_files, write_coco_captions


def test_round_trip_attaches_captions_by_path(layouts, tmp_path):
    ds = build_dataset("mvtec", layouts["mvtec"], "train", image_size=16)
    names = [ds.records[i].filename for i in range(len(ds))]
    items = [(n, f"caption of {n}") for n in reversed(names)]  # order differs from the loader's
    folder = tmp_path / folder_name("mvtec", "internvl", "pd")
    caps, labs = write_caption_files(folder, "train", "mvtec", "internvl", items, start=0, end=10000)
    assert caps.name == "train_captions_mvtec_internvl_0_10000.json"
    assert labs.name == "train_labels_mvtec_internvl_0_10000.json"
    assert json.loads(caps.read_text()) == [c for _, c in items]  # JSON list of strings
    assert json.loads(labs.read_text()) == [n for n, _ in items]  # JSON list of filenames
    captioned = build_dataset("mvtec", layouts["mvtec"], "train", image_size=16, captions=read_caption_files(folder, "train"))
    for i in range(len(captioned)):
        assert captioned[i]["txt"] == f"caption of {captioned[i]['filename']}"


def test_shards_are_merged(tmp_path):
    write_caption_files(tmp_path, "test", "visa", "blip", [("a.png", "A")], start=0, end=1)
    write_caption_files(tmp_path, "test", "visa", "blip", [("b.png", "B")], start=1, end=2)
    assert read_caption_files(tmp_path, "test") == {"a.png": "A", "b.png": "B"}


def test_missing_caption_names_file_and_image(layouts, tmp_path):
    write_caption_files(tmp_path, "train", "mvtec", "internvl", [("bottle/train/good/000.png", "x")])
    with pytest.raises(ValueError) as err:
        build_dataset("mvtec", layouts["mvtec"], "train", captions=read_caption_files(tmp_path, "train"))
    assert str(tmp_path) in str(err.value) and "bottle/train/good/001.png" in str(err.value)


def test_mismatched_lengths_are_refused(tmp_path):
    (tmp_path / "train_captions_x_y.json").write_text('["a", "b"]')
    (tmp_path / "train_labels_x_y.json").write_text('["a.png"]')
    with pytest.raises(ValueError, match="train_captions_x_y.json"):
        read_caption_files(tmp_path, "train")


def test_coco_captions_concatenate_and_match_by_image_id(layouts, tmp_path):
    path = tmp_path / "annotations" / "captions_val2017_internvl.json"
    write_coco_captions(path, [("139", "A room."), ("285", "A bear."), ("139", " With a TV.")])
    caps = read_coco_captions(path)
    assert caps["000000000139"] == "A room. With a TV."
    ds = build_dataset("coco", layouts["coco"], "test", image_size=16, coco_part=1, captions=caps)
    assert [ds[i]["txt"] for i in range(2)] == ["A room. With a TV.", "A bear."]


def test_captions_follow_a_moved_dataset_root(tmp_path):
    write_caption_files(tmp_path, "train", "mvtec", "internvl", [("/old/root/bottle/train/good/000.png", "x")])
    from vlmdiff.data.captions import match_captions

    assert match_captions(["bottle/train/good/000.png"], read_caption_files(tmp_path, "train")) == ["x"]
