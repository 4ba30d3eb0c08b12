"""Training (``train.py``, ``vlmdiff train``): ``Config`` and ``run(cfg)``.

    from vlmdiff.pipelines import train
    train.run(train.Config(data_path="data/mvtec", max_epochs=1))

Imports torch only inside :func:`run`, so the command line's ``--help`` answers without it.
"""

from __future__ import annotations

import logging

from vlmdiff.run_config import TrainConfig as Config
from vlmdiff.run_config import save_run_config

__all__ = ["Config", "run"]


def run(cfg: Config) -> int:
    """Train (or resume) the run of ``cfg``; 0 when done."""
    from utils.seed import seed_everything  # here: --help and --print_config answer without torch
    from vlmdiff.data import build_dataset, caption_source
    from vlmdiff.training import fit, last_checkpoint
    from vlmdiff.validate import validate_train_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validate_train_config(cfg, resume_from=last_checkpoint(cfg))
    seed_everything(cfg.seed)
    dataset = build_dataset(cfg.data_set, cfg.data_path, "train", image_size=cfg.image_size, classes=cfg.classes,
                            captions=caption_source(cfg, "train"), coco_part=cfg.coco_part)
    save_run_config(cfg, cfg.run_dir / "train_config.yaml")
    last = fit(cfg, dataset)
    print(f"last checkpoint: {last}")
    return 0
