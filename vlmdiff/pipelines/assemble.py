"""Assembly of the training-start checkpoint (``build_model.py``, ``vlmdiff build-model``): ``Config`` and
``run(cfg)``.

Imports torch only inside :func:`run`, so the command line's ``--help`` answers without it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vlmdiff.run_config import BuildConfig as Config

__all__ = ["Config", "run"]


def run(cfg: Config) -> int:
    """Assemble and write the training-start checkpoint of ``cfg``; 0 when written, 2 for a bad input."""
    from utils.seed import seed_everything  # here: --help and --print_config answer without torch
    from vlmdiff.assemble import apply_pretrained_sgn, assemble_state_dict
    from vlmdiff.checkpoint import load_state_dict, save_state_dict
    from vlmdiff.model import create_model, load_weights
    from vlmdiff.validate import validate_build_inputs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(cfg.model_overrides or [])
    try:
        validate_build_inputs(cfg.sd, cfg.ae, cfg.model_config, overrides, cfg.out, sgn=cfg.sgn)
        sd_state = load_state_dict(cfg.sd)
        ae_state = load_state_dict(cfg.ae) if cfg.ae else None
        seed_everything(cfg.seed)
        model = create_model(cfg.model_config, overrides=overrides)
        state, report = assemble_state_dict(model, sd_state, ae_state, sd_source=cfg.sd, ae_source=cfg.ae or cfg.sd)
        if cfg.sgn:
            n = apply_pretrained_sgn(state, load_state_dict(cfg.sgn), source=cfg.sgn)
            print(f"{n} SGN and UNet decoder keys from the pretrained SGN {cfg.sgn}")
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
