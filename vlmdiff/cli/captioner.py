#!/usr/bin/env python
"""Caption a dataset's images with a VLM and write the reference's caption files (docs/design.md §9).

    python captioner.py --data_set mvtec --data_path data/mvtec --vlm_model internvl \\
        --model_path models/InternVL3-8B-hf --prompt_type pd --batch_size 8
    python captioner.py --data_set realiad --data_path data/realiad --backend openai \\
        --api_base http://127.0.0.1:23333 --vlm_model internvl          # a vLLM / lmdeploy / SGLang server
    python captioner.py --data_set mvtec --data_path data/mvtec --backend template   # no VLM: class names

Output: ``<data_path>/../<data_set>_captions_<vlm>_<prompt_type>/`` (or --output_dir). Interrupted runs
resume where they stopped. Shards: ``--num_shards N --shard_index K`` (default from WORLD_SIZE / RANK, so
``torchrun --nproc_per_node 8 captioner.py ...`` captions on 8 GPUs). The endpoint's key, if it needs one,
is read from the OPENAI_API_KEY environment variable (never saved).
"""

from __future__ import annotations

import os
import sys

from vlmdiff.cli.builder import ConfigCommandLine
from vlmdiff.pipelines import caption as stage


def command_line(prog=None) -> ConfigCommandLine:
    """Every CaptionerConfig setting a flag (``vlmdiff.cli.builder``)."""
    return ConfigCommandLine(stage.Config, prog=prog, description=__doc__)


def main(argv=None, prog=None) -> int:
    """The settings of the command line (shards from WORLD_SIZE / RANK), then
    :func:`vlmdiff.pipelines.caption.run`."""
    cli = command_line(prog)
    args = cli.parse_args(argv)
    flags = cli.flags(args)
    for key, env in (("num_shards", "WORLD_SIZE"), ("shard_index", "RANK")):
        if flags[key] is None and env in os.environ:
            flags[key] = int(os.environ[env])
    cfg = cli.resolve(args, flags)
    return stage.run(cfg)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
