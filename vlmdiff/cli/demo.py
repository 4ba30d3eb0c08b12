#!/usr/bin/env python
"""The whole VLMDiff pipeline on a CPU in minutes, on the bundled synthetic benchmark or on your own images:

data → captions (template captioner: a class-name sentence, not a VLM) → finetune the bundled tiny
autoencoder → assemble the training start from the bundled tiny latent diffusion model, as from SD-1.5 →
train the semantic-guided network and the UNet decoder → test the trained model AND its untrained start
with the same protocol → print both tables, the reconstruction distances, and write the HTML report and
<work_dir>/summary.json.

    python scripts/demo.py                                  # the synthetic benchmark, under runs/demo
    python scripts/demo.py --data_path my_images/ --work_dir runs/mine
        # my_images/<class>/train/good/*.png, my_images/<class>/test/<defect or good>/*.png and, optionally,
        # my_images/<class>/ground_truth/<defect>/<stem>_mask.png (without masks: image-level metrics only)

The method and the test protocol are the paper's (noise to t = 999, 10 DDIM steps, guidance 9, the image
as SGN hint, feature-difference maps, Gaussian σ = 5, pooled image score). Only sizes, budgets and the
settings below are the demo's; each is a flag.
"""

from __future__ import annotations

import sys

from vlmdiff.cli.builder import stage_command
from vlmdiff.pipelines import demo as stage

# every DemoConfig setting a flag; main resolves them and runs vlmdiff.pipelines.demo.run
command_line, main = stage_command(stage, __doc__)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
