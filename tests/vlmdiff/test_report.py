"""Tables, pictures and the HTML report from a small synthetic result set."""

import csv
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from vlmdiff.metrics import evaluate
from vlmdiff.report import (heatmap_overlay, markdown_table, outline_mask, to_uint8_rgb, write_class_plots,
                            write_gallery_images, write_html_report, write_tables, write_visuals)


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.cells = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self.tables += tag == "table"

    def handle_data(self, data):
        self.cells.append(data.strip())


@pytest.fixture(scope="module")
def result_set():
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 64, 64), np.uint8)
    masks[4:, 20:30, 20:30] = 1
    amaps = rng.random((8, 64, 64)) * 0.3 + masks
    names = np.array(["a"] * 4 + ["b"] * 4)[rng.permutation(8)]
    return amaps, masks, names


def test_tables(result_set, tmp_path):
    amaps, masks, names = result_set
    results = evaluate(amaps, masks, names, mode="exact")
    paths = write_tables(results, tmp_path, {"exp_name": "x"})
    md = paths["md"].read_text()
    assert "mAU-ROC_I" in md and "| **mean** |" in md
    rows = list(csv.reader(paths["csv"].open()))
    assert rows[0][0] == "class" and [r[0] for r in rows[1:]] == ["a", "b", "mean"]
    data = json.loads(paths["json"].read_text())
    assert data["config"] == {"exp_name": "x"} and set(data["results"]) == {"a", "b", "mean"}
    assert markdown_table(results).count("\n") == 5


def test_a_new_metric_needs_no_header_entry(monkeypatch, tmp_path):
    from vlmdiff import report

    monkeypatch.setattr(report, "METRICS", (*report.METRICS, "NEW"))
    results = {"a": {**dict.fromkeys(report.METRICS, 0.5)}, "mean": {**dict.fromkeys(report.METRICS, 0.5)}}
    assert "| NEW |" in report.markdown_table(results) and "50.0" in report.markdown_table(results)
    report.write_html_report(tmp_path / "index.html", results, plots=[], gallery=[], config={})
    assert "<th>NEW</th>" in (tmp_path / "index.html").read_text()


def test_visual_colours_and_no_wraparound(tmp_path):
    rgb = np.zeros((3, 16, 16))
    rgb[0] = 1.0  # pure red input
    amap = np.zeros((16, 16))
    amap[:8] = 2.5  # above 1: the reference's uint8 cast would wrap
    files = write_visuals(tmp_path, "img", input_rgb=rgb, samples_rgb=rgb, amap=amap)
    red = np.asarray(Image.open(files["input"]).convert("RGB"))[8, 8]
    assert red[0] > 200 and red[2] < 50  # written in the right channel order
    features = np.asarray(Image.open(files["features"]).convert("L"))
    assert features[:8].min() > 240 and features[8:].max() < 15  # clipped, not wrapped
    over = heatmap_overlay(to_uint8_rgb(rgb), amap)
    assert over[0, 0, 0] > over[0, 0, 2]  # high scores blend towards red (JET), low towards blue
    assert over[15, 0, 2] > 0


def test_html_report_contains_table_plots_and_gallery(result_set, tmp_path):
    amaps, masks, names = result_set
    results = evaluate(amaps, masks, names, mode="exact")
    plots = [write_class_plots(tmp_path / "report", c, amaps[names == c].max(axis=(1, 2)),
                               masks[names == c].any(axis=(1, 2)))["curves"] for c in ("a", "b")]
    vis = write_visuals(tmp_path / "visuals", "x", input_rgb=np.ones((3, 16, 16)) * 0.5,
                        samples_rgb=np.ones((3, 16, 16)) * 0.4, amap=amaps[0][:16, :16])
    page = write_html_report(tmp_path / "report" / "index.html", results, plots=plots,
                             gallery=[{"caption": "a detected", "images": [vis["input"], vis["heatmap"]],
                                       "labels": ["input, ground truth outlined", "anomaly heatmap"]}],
                             about={"scorer": "dino_vits8", "checkpoint": "runs/x/last.ckpt"})
    parser = Collector()
    parser.feed(page.read_text())
    assert "input, ground truth outlined" in parser.cells and "anomaly heatmap" in parser.cells
    assert "scorer" in parser.cells and "runs/x/last.ckpt" in parser.cells
    assert parser.tables == 1 and "mAU-PRO_R" in parser.cells and "mean" in parser.cells
    assert len(parser.images) == 4
    for src in parser.images:
        assert (page.parent / src).is_file(), src
    assert Image.open(plots[0]).size[0] > 300


def test_ground_truth_outline_follows_the_mask_boundary():
    rgb = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 10:24] = 1
    out = outline_mask(rgb, mask)
    green = out[..., 1] == 255
    ring = mask.astype(bool) & ~np.pad(mask[1:-1, 1:-1].astype(bool) & mask[:-2, 1:-1].astype(bool)
                                        & mask[2:, 1:-1].astype(bool) & mask[1:-1, :-2].astype(bool)
                                        & mask[1:-1, 2:].astype(bool), 1)
    assert np.array_equal(green, ring)  # exactly the mask's boundary pixels, nothing inside or outside
    assert rgb.max() == 0  # the input is not drawn on
    assert np.array_equal(outline_mask(rgb, np.zeros((32, 32))), rgb)


def test_class_colour_scale_keeps_a_normal_image_cool(tmp_path):
    rgb = np.full((3, 32, 32), 0.5)
    normal = np.full((32, 32), 0.10)
    normal[4:8, 4:8] = 0.12  # its own maximum: hot on a per-image scale
    anomalous = np.full((32, 32), 0.10)
    anomalous[10:20, 10:20] = 0.9
    lo, hi = min(normal.min(), anomalous.min()), max(normal.max(), anomalous.max())
    files = {k: write_gallery_images(tmp_path, k, input_rgb=rgb, amap=m, mask=None, vmin=lo, vmax=hi)
             for k, m in (("normal", normal), ("anomalous", anomalous))}
    own_scale = heatmap_overlay(to_uint8_rgb(rgb), normal)
    cool = np.asarray(Image.open(files["normal"]["heatmap_class"]).convert("RGB")).astype(int)
    hot = np.asarray(Image.open(files["anomalous"]["heatmap_class"]).convert("RGB")).astype(int)
    assert own_scale[5, 5, 0] > own_scale[5, 5, 2]  # the per-image scale paints the normal image's bump red
    assert cool[5, 5, 0] < cool[5, 5, 2]  # the class scale keeps it blue
    assert hot[15, 15, 0] > hot[15, 15, 2]  # and the real anomaly red
