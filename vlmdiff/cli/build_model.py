#!/usr/bin/env python
"""Assemble the training-start VLMDiff checkpoint from Stable Diffusion 1.5 and a (finetuned) autoencoder.

    python build_model.py --sd models/v1-5-pruned.ckpt --ae runs/autoencoder/autoencoder.ckpt \\
        --model_config configs/vlmdiff.yaml --out models/vlmdiff_mvtec.safetensors

--config is a YAML file of these settings, as for every stage; the model config is --model_config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vlmdiff.cli.builder import ConfigCommandLine, UsageError
from vlmdiff.pipelines import assemble as stage


def command_line(prog=None) -> ConfigCommandLine:
    """Every BuildConfig setting a flag (``vlmdiff.cli.builder``)."""
    return ConfigCommandLine(stage.Config, prog=prog, description=__doc__)


def check_run_config_file(path: str | None) -> None:
    """``--config`` names a run config: a model config there (a top-level ``model`` section, the meaning
    ``--config`` had for this command before) is refused naming ``--model_config``."""
    if not path or not Path(path).is_file():
        return
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return  # the run-config loader names the problem
    if isinstance(data, dict) and "model" in data:
        raise UsageError(f"{path}: a model config; --config is the run config of this command (sd, ae, out, ...): "
                         "give the model config with --model_config")


def main(argv=None, prog=None) -> int:
    """The settings of the command line, then :func:`vlmdiff.pipelines.assemble.run`."""
    cli = command_line(prog)
    args = cli.parse_args(argv)
    check_run_config_file(args.config)
    cfg = cli.resolve(args)
    return stage.run(cfg)


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
