#!/usr/bin/env python
"""Train VLMDiff (the semantic-guided network and the UNet decoder) on a dataset's normal images.

Starting the same --exp_name again resumes from its last checkpoint. Multi-GPU / multi-node through
Lightning DDP (--devices, --num_nodes, --strategy ddp), e.g. under torchrun or SLURM.

    python train.py --init_checkpoint models/vlmdiff_mvtec.safetensors --data_set mvtec --data_path data/mvtec \\
        --use_captions --caption_folder mvtec_captions_internvl_pd --exp_name mvtec_vlmdiff
"""

from __future__ import annotations

import sys

from vlmdiff.cli.builder import ConfigCommandLine
from vlmdiff.pipelines.train import Config, run


def command_line(prog=None) -> ConfigCommandLine:
    """Every TrainConfig setting a flag (``vlmdiff.cli.builder``)."""
    return ConfigCommandLine(Config, prog=prog, description=__doc__)


def main(argv=None, prog=None) -> int:
    """The settings of the command line, then :func:`vlmdiff.pipelines.train.run`."""
    cli = command_line(prog)
    cfg = cli.resolve(cli.parse_args(argv))
    return run(cfg)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
