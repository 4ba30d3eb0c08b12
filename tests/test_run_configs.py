"""The paper's run configurations (configs/runs) load into their schemas and encode its protocol."""

import json
from pathlib import Path

import pytest

from vlmdiff.cli import test as test_cli
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
    assert dict(test_cli.caption_source(cfg)) == {"000000000139": "a room"}
    cfg.caption_folder = "_blip"
    with pytest.raises(FileNotFoundError, match="captions_val2017_blip.json"):
        test_cli.caption_source(cfg)
