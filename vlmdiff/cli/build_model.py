#!/usr/bin/env python
"""Assemble the training-start VLMDiff checkpoint from Stable Diffusion 1.5 and a (finetuned) autoencoder.

    python build_model.py --sd models/v1-5-pruned.ckpt --ae runs/autoencoder/autoencoder.ckpt \\
        --model_config configs/vlmdiff.yaml --out models/vlmdiff_mvtec.safetensors

--config is a YAML file of these settings, as for every stage; the model config is --model_config.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vlmdiff.cli.builder import ConfigCommandLine, UsageError
from vlmdiff.run_config import BuildConfig


def command_line(prog=None) -> ConfigCommandLine:
    """Every BuildConfig setting a flag (``vlmdiff.cli.builder``)."""
    return ConfigCommandLine(BuildConfig, prog=prog, description=__doc__)


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
    cli = command_line(prog)
    args = cli.parse_args(argv)
    check_run_config_file(args.config)
    cfg = cli.resolve(args)
    return run(cfg)


def run(cfg: BuildConfig) -> int:
    """Assemble and write the training-start checkpoint of ``cfg``; 0 when written, 2 for a bad input
    (:mod:`vlmdiff.pipelines.assemble`)."""
    from utils.seed import seed_everything  # after the settings: --help and --print_config answer without torch
    from vlmdiff.assemble import assemble_state_dict
    from vlmdiff.checkpoint import load_state_dict, save_state_dict
    from vlmdiff.model import create_model, load_weights
    from vlmdiff.validate import validate_build_inputs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(cfg.model_overrides or [])
    try:
        validate_build_inputs(cfg.sd, cfg.ae, cfg.model_config, overrides, cfg.out)
        sd_state = load_state_dict(cfg.sd)
        ae_state = load_state_dict(cfg.ae) if cfg.ae else None
        seed_everything(cfg.seed)
        model = create_model(cfg.model_config, overrides=overrides)
        state, report = assemble_state_dict(model, sd_state, ae_state, sd_source=cfg.sd, ae_source=cfg.ae or cfg.sd)
        load_weights(model, state, strict=True, source="assembled state dict")
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(cfg.out)
    save_state_dict(model.state_dict(), out)
    print(report.summary())
    print(f"wrote {out}")
    if cfg.also_ckpt and out.suffix != ".ckpt":
        save_state_dict(model.state_dict(), out.with_suffix(".ckpt"))
        print(f"wrote {out.with_suffix('.ckpt')}")
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
