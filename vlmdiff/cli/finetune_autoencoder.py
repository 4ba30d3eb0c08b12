#!/usr/bin/env python
"""Finetune the KL-f8 autoencoder on a dataset's normal training images (L1 + LPIPS + KL, discriminator
after --disc_start), and write the checkpoint build_model.py consumes (--ae). Starting the same
--exp_name again continues from its last completed epoch (<output_dir>/<exp_name>/checkpoints/last.ckpt).

    python finetune_autoencoder.py --init_autoencoder models/autoencoders.ckpt --data_set mvtec \\
        --data_path data/mvtec --lpips_vgg models/vgg16.pth --lpips_lin models/lpips_vgg.pth --max_epochs 20
"""

from __future__ import annotations

import sys

from vlmdiff.cli.builder import ConfigCommandLine
from vlmdiff.pipelines.finetune_autoencoder import Config, run


def command_line(prog=None) -> ConfigCommandLine:
    """Every AEConfig setting a flag (``vlmdiff.cli.builder``)."""
    return ConfigCommandLine(Config, prog=prog, description=__doc__)


def main(argv=None, prog=None) -> int:
    """The settings of the command line, then :func:`vlmdiff.pipelines.finetune_autoencoder.run`."""
    cli = command_line(prog)
    cfg = cli.resolve(cli.parse_args(argv))
    return run(cfg)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
