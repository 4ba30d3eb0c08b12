"""The paper's run configurations (configs/runs) load into their schemas and encode its protocol."""

import json
from pathlib import Path

import pytest

from vlmdiff.cli import train as train_cli
from vlmdiff.data import caption_source
from vlmdiff.data.captions import write_caption_files
from vlmdiff.run_config import resolve_run_config
from vlmdiff import testing
from vlmdiff.training import TrainConfig

RUNS = Path(__file__).resolve().parents[1] / "configs" / "runs"
DATASETS = ["mvtec", "visa", "realiad", "coco"]


@pytest.mark.parametrize("data_set", DATASETS)
def test_run_configs_follow_the_paper(data_set):
    train = resolve_run_config(TrainConfig, config_file=RUNS / f"train_{data_set}.yaml")
    test = resolve_run_config(testing.TestConfig, config_file=RUNS / f"test_{data_set}.yaml")
    assert train.data_set == test.data_set == data_set
    assert train.use_captions  # captions at training on every data set
    assert test.use_captions == (data_set == "coco")  # at test only on COCO-AD
    assert (test.ddim_steps, test.guidance_scale, test.start_timestep, test.sigma) == (10, 9.0, 999, 5.0)
    assert test.scorer == "v1s8" and test.metrics_mode == "paper"
    assert train.schedule() == ((300, 25) if data_set in ("mvtec", "visa") else (100, 20))


def test_coco_test_captions_come_from_the_annotation_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    ann = {"annotations": [{"id": 0, "image_id": 139, "caption": "a room"}]}
    (tmp_path / "annotations" / "captions_val2017_internvl.json").write_text(json.dumps(ann))
    cfg = resolve_run_config(testing.TestConfig, config_file=RUNS / "test_coco.yaml", overrides=[f"data_path={tmp_path}"])
    assert dict(caption_source(cfg, "test")) == {"000000000139": "a room"}
    cfg.caption_folder = "_blip"
    with pytest.raises(FileNotFoundError, match="captions_val2017_blip.json"):
        caption_source(cfg, "test")


def _coco_captions(root, split_file, caption):
    (root / "annotations").mkdir(exist_ok=True)
    ann = {"annotations": [{"id": 0, "image_id": 139, "caption": caption}]}
    (root / "annotations" / split_file).write_text(json.dumps(ann))


def test_one_caption_setting_for_training_and_testing(tmp_path):
    """caption_folder names the captions in both stages (caption_model, the reference's training name, is an
    alias: flag, file key or key=value); for COCO-AD a suffix, training's null meaning _internvl."""
    _coco_captions(tmp_path, "captions_train2017_internvl.json", "internvl")
    _coco_captions(tmp_path, "captions_train2017_blip.json", "blip")
    _coco_captions(tmp_path, "captions_train2017.json", "human")
    coco = [f"data_path={tmp_path}", "data_set=coco", "use_captions=true"]
    cli = train_cli.command_line()
    for argv, expected in [([], "internvl"), (["--caption_model", "_blip"], "blip"), (["caption_model=_blip"], "blip"),
                           (["--caption_folder", "_blip"], "blip"), (["caption_folder=''"], "human")]:
        cfg = cli.resolve(cli.parse_args([*coco, *argv]))
        assert dict(caption_source(cfg, "train")) == {"000000000139": expected}, argv
    run = tmp_path / "old.yaml"
    run.write_text("caption_model: _blip\n")  # a run config written with the reference's name
    assert resolve_run_config(TrainConfig, config_file=run).caption_folder == "_blip"
    run.write_text("caption_model: _blip\ncaption_folder: _internvl\n")
    with pytest.raises(ValueError, match="caption_model and caption_folder are the same setting"):
        resolve_run_config(TrainConfig, config_file=run)
    assert resolve_run_config(testing.TestConfig, overrides=["caption_model=_x"]).caption_folder == "_x"


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_caption_folder_is_a_path_or_a_sibling_of_the_root(split, tmp_path, monkeypatch):
    root = tmp_path / "data" / "mvtec"
    root.mkdir(parents=True)
    write_caption_files(tmp_path / "data" / "caps", split, "mvtec", "vlm", [("a/b.png", "sibling")])
    write_caption_files(tmp_path / "elsewhere" / "caps", split, "mvtec", "vlm", [("a/b.png", "path")])
    schema = TrainConfig if split == "train" else testing.TestConfig
    cfg = schema(data_set="mvtec", data_path=str(root), use_captions=True, caption_folder="caps")
    monkeypatch.chdir(tmp_path)
    assert list(caption_source(cfg, split).values()) == ["sibling"]
    cfg.caption_folder = str(tmp_path / "elsewhere" / "caps")
    assert list(caption_source(cfg, split).values()) == ["path"]
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg.caption_folder = "caps"  # an existing folder relative to the working directory
    assert list(caption_source(cfg, split).values()) == ["path"]
    cfg.caption_folder = ""
    with pytest.raises(ValueError, match="caption_folder: not set"):
        caption_source(cfg, split)
    cfg.use_captions = False
    assert caption_source(cfg, split) is None
