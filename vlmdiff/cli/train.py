#!/usr/bin/env python
"""Train VLMDiff (the semantic-guided network and the UNet decoder) on a dataset's normal images.

Starting the same --exp_name again resumes from its last checkpoint. Multi-GPU / multi-node through
Lightning DDP (--devices, --num_nodes, --strategy ddp), e.g. under torchrun or SLURM.

    python train.py --resume_path models/vlmdiff_mvtec.safetensors --data_set mvtec --data_path data/mvtec \\
        --use_captions --caption_folder mvtec_captions_internvl_pd --exp_name mvtec_vlmdiff
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vlmdiff.data import read_caption_files, read_coco_captions
from vlmdiff.run_config import resolve_run_config, save_run_config

if TYPE_CHECKING:
    from vlmdiff.training import TrainConfig


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="run config YAML (TrainConfig fields)")
    p.add_argument("--resume_path", help="assembled training-start checkpoint (build_model.py)")
    p.add_argument("--model_config", help="model config (default configs/vlmdiff.yaml)")
    p.add_argument("--data_set", choices=["mvtec", "visa", "realiad", "coco", "custom"])
    p.add_argument("--data_path", help="dataset root")
    p.add_argument("--coco_part", type=int)
    p.add_argument("--exp_name", help="run name: outputs go to <output_dir>/<exp_name>")
    p.add_argument("--output_dir")
    p.add_argument("--use_captions", action="store_true", default=None)
    p.add_argument("--caption_folder", help="caption folder (a sibling of the dataset root, or a path)")
    p.add_argument("--caption_model", help="COCO caption-file suffix (_internvl, _blip, ... or '' for human captions)")
    p.add_argument("--batch_size", type=int)
    p.add_argument("--accumulate_grad_batches", type=int)
    p.add_argument("--learning_rate", type=float)
    p.add_argument("--max_epochs", type=int)
    p.add_argument("--max_steps", type=int)
    p.add_argument("--every_n_epochs", type=int)
    p.add_argument("--num_workers", type=int)
    p.add_argument("--accelerator")
    p.add_argument("--devices")
    p.add_argument("--num_nodes", type=int)
    p.add_argument("--strategy")
    p.add_argument("--precision", help="32-true (default) or bf16-mixed")
    p.add_argument("--optimizer", choices=["adamw", "adamw8bit"], help="adamw (default; fused on CUDA) or "
                   "adamw8bit (needs bitsandbytes and CUDA)")
    p.add_argument("--seed", type=int)
    p.add_argument("overrides", nargs="*", help="key=value overrides of TrainConfig fields")
    return p.parse_args(argv)


def caption_source(cfg: TrainConfig):
    if not cfg.use_captions:
        return None
    root = Path(cfg.data_path)
    if cfg.data_set == "coco":
        return read_coco_captions(root / "annotations" / f"captions_train2017{cfg.caption_model}.json")
    folder = Path(cfg.caption_folder)
    return read_caption_files(folder if folder.is_dir() else root.parent / cfg.caption_folder, "train")


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    from utils.seed import seed_everything  # after the arguments: --help answers without torch
    from vlmdiff.data import build_dataset
    from vlmdiff.training import TrainConfig, fit, last_checkpoint
    from vlmdiff.validate import validate_train_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "overrides")}
    if isinstance(flags.get("devices"), str) and flags["devices"].isdigit():
        flags["devices"] = int(flags["devices"])
    cfg = resolve_run_config(TrainConfig, config_file=args.config, flags=flags, overrides=args.overrides)
    validate_train_config(cfg, resume_from=last_checkpoint(cfg))
    seed_everything(cfg.seed)
    dataset = build_dataset(cfg.data_set, cfg.data_path, "train", image_size=cfg.image_size, classes=cfg.classes,
                            captions=caption_source(cfg), coco_part=cfg.coco_part)
    save_run_config(cfg, cfg.run_dir / "train_config.yaml")
    last = fit(cfg, dataset)
    print(f"last checkpoint: {last}")
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
