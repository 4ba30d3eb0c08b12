#!/usr/bin/env python
"""Test a trained VLMDiff model: reconstruct every test image, score it, and report the seven metrics.

Defaults follow the reference protocol (DDIM 10 steps, guidance 9, t = 999, DINO ViT-S/8 scoring when its
weights are given with --scorer_weights), seeded. Resumes an interrupted run of the same --exp_name.
Several processes (torchrun --nproc_per_node N test.py ...) split the batches; process 0 reports.

    python test.py --config configs/runs/test_mvtec.yaml --checkpoint runs/mvtec_vlmdiff/checkpoints/last.ckpt \\
        --data_path data/mvtec --scorer_weights models/dino_deitsmall8_pretrain.pth
"""

from __future__ import annotations

import logging
import sys

from vlmdiff.cli.builder import ConfigCommandLine
from vlmdiff.features import EXTRACTORS
from vlmdiff.pipelines import test as stage

DINO_SCORERS = tuple(name for name in EXTRACTORS if name.startswith(("v1", "v2")))  # the DINO networks


def command_line(prog=None) -> ConfigCommandLine:
    """Every TestConfig setting a flag (``vlmdiff.cli.builder``), plus the options of evaluating and predicting."""
    cli = ConfigCommandLine(stage.Config, prog=prog, description=__doc__)
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


def resolve(cli: ConfigCommandLine, args) -> stage.Config:
    flags = cli.flags(args)
    if args.use_dino and args.scorer is None:
        flags["scorer"] = args.dino_version
    return cli.resolve(args, flags)


def predict(args, cfg: stage.Config) -> int:
    """``--predict FOLDER``: :func:`vlmdiff.predict.run_predict` with the model of :mod:`vlmdiff.pipelines.test`."""
    from vlmdiff.predict import run_predict

    return run_predict(args, cfg, stage.load_model)


def main(argv=None, prog=None) -> int:
    """The settings of the command line, then :func:`vlmdiff.pipelines.test.run` (or the prediction)."""
    cli = command_line(prog)
    args = cli.parse_args(argv)
    cfg = resolve(cli, args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.predict:
        return predict(args, cfg)
    return stage.run(cfg, eval_only=args.run_eval_only, skip_bad_images=args.skip_bad_images)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
