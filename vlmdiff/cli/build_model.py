#!/usr/bin/env python
"""Assemble the training-start VLMDiff checkpoint from Stable Diffusion 1.5 and a (finetuned) autoencoder."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from utils.io import atomic_path


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--sd", required=True, help="Stable Diffusion 1.x checkpoint (.ckpt or .safetensors)")
    p.add_argument("--ae", default=None,
                   help="finetuned autoencoder checkpoint (e.g. models/fs_mvtecad.ckpt); default: SD's own VAE")
    p.add_argument("--config", default="configs/vlmdiff.yaml", help="model config (default: %(default)s)")
    p.add_argument("--out", default="models/vlmdiff_sd15_model.safetensors",
                   help="output file, .safetensors or .ckpt (default: %(default)s)")
    p.add_argument("--also_ckpt", action="store_true", help="also write a torch .ckpt next to the output")
    p.add_argument("--seed", type=int, default=0, help="seed of the new layers' initialisation (default: %(default)s)")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    return p.parse_args(argv)


def save_state_dict(state_dict: dict, path: Path) -> None:
    """Write atomically: safetensors for ``.safetensors``, else ``torch.save({"state_dict": ...})``."""
    import torch

    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state_dict, str(tmp))
        else:
            torch.save({"state_dict": state_dict}, tmp)


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    from utils.seed import seed_everything  # after the arguments: --help answers without torch
    from vlmdiff.assemble import assemble_state_dict
    from vlmdiff.checkpoint import load_state_dict
    from vlmdiff.model import create_model, load_weights
    from vlmdiff.validate import validate_build_inputs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        validate_build_inputs(args.sd, args.ae, args.config, args.overrides, args.out)
        sd_state = load_state_dict(args.sd)
        ae_state = load_state_dict(args.ae) if args.ae else None
        seed_everything(args.seed)
        model = create_model(args.config, overrides=args.overrides)
        state, report = assemble_state_dict(model, sd_state, ae_state, sd_source=args.sd,
                                            ae_source=args.ae or args.sd)
        load_weights(model, state, strict=True, source="assembled state dict")
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    save_state_dict(model.state_dict(), out)
    print(report.summary())
    print(f"wrote {out}")
    if args.also_ckpt and out.suffix != ".ckpt":
        save_state_dict(model.state_dict(), out.with_suffix(".ckpt"))
        print(f"wrote {out.with_suffix('.ckpt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
