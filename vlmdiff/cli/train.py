#!/usr/bin/env python
"""Train VLMDiff (the semantic-guided network and the UNet decoder) on a dataset's normal images.

Starting the same --exp_name again resumes from its last checkpoint. Multi-GPU / multi-node through
Lightning DDP (--devices, --num_nodes, --strategy ddp), e.g. under torchrun or SLURM.

    python train.py --init_checkpoint models/vlmdiff_mvtec.safetensors --data_set mvtec --data_path data/mvtec \\
        --use_captions --caption_folder mvtec_captions_internvl_pd --exp_name mvtec_vlmdiff
"""

from __future__ import annotations

import sys

from vlmdiff.cli.builder import stage_command
from vlmdiff.pipelines import train as stage

# every TrainConfig setting a flag; main resolves them and runs vlmdiff.pipelines.train.run
command_line, main = stage_command(stage, __doc__)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
