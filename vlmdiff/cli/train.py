#!/usr/bin/env python
"""Train VLMDiff (the semantic-guided network and the UNet decoder) on a dataset's normal images.

Starting the same --exp_name again resumes from its last checkpoint. Multi-GPU / multi-node through
Lightning DDP (--devices, --num_nodes, --strategy ddp), e.g. under torchrun or SLURM.

    python train.py --resume_path models/vlmdiff_mvtec.safetensors --data_set mvtec --data_path data/mvtec \\
        --use_captions --caption_folder mvtec_captions_internvl_pd --exp_name mvtec_vlmdiff
"""

from __future__ import annotations

import logging
import sys

from vlmdiff.cli.builder import ConfigCommandLine
from vlmdiff.run_config import TrainConfig, save_run_config


def command_line(prog=None) -> ConfigCommandLine:
    """Every TrainConfig setting a flag (``vlmdiff.cli.builder``)."""
    return ConfigCommandLine(TrainConfig, prog=prog, description=__doc__)


def main(argv=None, prog=None) -> int:
    cli = command_line(prog)
    cfg = cli.resolve(cli.parse_args(argv))
    return run(cfg)


def run(cfg: TrainConfig) -> int:
    """Train (or resume) the run of ``cfg``; 0 when done (the stage's library entry:
    :mod:`vlmdiff.pipelines.train`)."""
    from utils.seed import seed_everything  # after the settings: --help and --print_config answer without torch
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


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
