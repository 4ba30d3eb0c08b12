#!/usr/bin/env python
"""Test a trained VLMDiff model: reconstruct every test image, score it, and report the seven metrics.

Defaults follow the reference protocol (DDIM 10 steps, guidance 9, t = 999, DINO ViT-S/8 scoring when its
weights are given with --scorer_weights), seeded. Resumes an interrupted run of the same --exp_name.
Several processes (torchrun --nproc_per_node N test.py ...) split the batches; process 0 reports.

    python test.py --config configs/runs/test_mvtec.yaml --resume_path runs/mvtec_vlmdiff/checkpoints/last.ckpt \\
        --data_path data/mvtec --scorer_weights models/dino_deitsmall8_pretrain.pth
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from vlmdiff.cli.builder import ConfigCommandLine
from vlmdiff.features import EXTRACTORS
from vlmdiff.run_config import TestConfig, save_run_config

if TYPE_CHECKING:
    import torch

DINO_SCORERS = tuple(name for name in EXTRACTORS if name.startswith(("v1", "v2")))  # the DINO networks


def command_line(prog=None) -> ConfigCommandLine:
    """Every TestConfig setting a flag (``vlmdiff.cli.builder``), plus the options of evaluating and predicting."""
    cli = ConfigCommandLine(TestConfig, prog=prog, description=__doc__)
    cli.add_argument("--use_dino", action="store_true",
                     help="the reference's flag: score with --dino_version (the same as --scorer <dino_version>)")
    cli.add_argument("--dino_version", choices=DINO_SCORERS, default="v1s8",
                     help="the reference's flag: the DINO network of --use_dino (default: %(default)s)")
    cli.add_argument("--run_eval_only", action="store_true", help="only compute metrics of stored results")
    cli.add_argument("--predict", metavar="FOLDER", help="score the unlabeled images under FOLDER instead of testing")
    cli.add_argument("--threshold", metavar="RUN|FILE|NUMBER",
                     help="--predict: a test run's folder or its thresholds.json (default: this --exp_name's): its "
                     "F1-optimal threshold and its settings (model, checkpoint, scorer, image size, protocol); or a "
                     "number, used with the settings given")
    cli.add_argument("--force_settings", action="store_true",
                     help="--predict: allow settings that differ from those the threshold was fitted with")
    cli.add_argument("--skip_bad_images", action="store_true",
                     help="leave out (and list in skipped.txt) the images that cannot be read, of the test split or "
                     "of the --predict folder")
    cli.add_argument("--threshold_class", metavar="CLASS",
                     help="--predict: use this class's threshold instead of the all-class one")
    cli.add_argument("--predict_out", metavar="FOLDER", help="--predict: output folder (default <run>/predict)")
    return cli


def resolve(cli: ConfigCommandLine, args) -> TestConfig:
    flags = cli.flags(args)
    if args.use_dino and args.scorer is None:
        flags["scorer"] = args.dino_version
    return cli.resolve(args, flags)


def load_model(cfg: TestConfig, device: torch.device):
    from vlmdiff.features import build_extractor
    from vlmdiff.model import create_model

    model = create_model(cfg.model_config, params={"only_mid_control": cfg.only_mid_control})  # the run config's
    model.load_checkpoint(cfg.resume_path)
    return model.to(device).eval(), build_extractor(cfg.scorer, cfg.scorer_weights).to(device)


def predict(args, cfg: TestConfig) -> int:
    from vlmdiff.predict import run_predict

    return run_predict(args, cfg, load_model)


def main(argv=None, prog=None) -> int:
    cli = command_line(prog)
    args = cli.parse_args(argv)
    cfg = resolve(cli, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.predict:
        return predict(args, cfg)
    return run(cfg, eval_only=args.run_eval_only, skip_bad_images=args.skip_bad_images)


def run(cfg: TestConfig, *, eval_only: bool = False, skip_bad_images: bool = False) -> int:
    """Test the model of ``cfg`` (or resume the run), then report; ``eval_only``: only the metrics of the stored
    results; ``skip_bad_images``: leave unreadable images out. 0 when done (:mod:`vlmdiff.pipelines.test`)."""
    import torch  # after the settings: --help and --print_config answer without torch

    from utils.seed import seed_everything
    from vlmdiff.data import build_dataset, caption_source
    from vlmdiff.report import markdown_table
    from vlmdiff.testing import distributed_context, evaluate_run, prepare_run_dir, run_batches
    from vlmdiff.validate import check_split_images, resolve_device, validate_test_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validate_test_config(cfg, eval_only=eval_only)
    bad = None if eval_only else check_split_images(cfg, "test", skip=bool(skip_bad_images))
    rank, world = distributed_context()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = distributed_context()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    if rank == 0:
        prepare_run_dir(cfg, skipped=bad)
        save_run_config(cfg, cfg.run_dir / "test_config.yaml")
    if world > 1:
        torch.distributed.barrier()
    if not eval_only:
        seed_everything(cfg.seed)
        dataset = build_dataset(cfg.data_set, cfg.data_path, "test", image_size=cfg.image_size, classes=cfg.classes,
                                captions=caption_source(cfg, "test"), coco_part=cfg.coco_part, exclude=[p for p, _ in bad])
        model, extractor = load_model(cfg, device)
        run_batches(model, extractor, dataset, cfg, rank=rank, world_size=world)
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        results = evaluate_run(cfg, asdict(cfg), device=device if device.type == "cuda" else None)
        print(markdown_table(results))
        print(f"report: {cfg.run_dir / 'report' / 'index.html'}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
