#!/usr/bin/env python
"""Pretrain a generic semantic-guided network for the bundled tiny latent diffusion model and write it as an
SGN start (float16: the SGN's ``control_model.*`` keys and the UNet decoder keys it was trained with), which
``build_model.py --sgn`` and ``scripts/demo.py --sgn`` start from instead of the paper's start.

It plays the part of a ControlNet pretrained for Stable Diffusion, to measure whether the demo's short
training fails for lack of a trained SGN start (docs/design.md §16; the answer measured so far: no).

Start: the assembly of vlmdiff/assets/tiny_sd.safetensors exactly as ``build_model.py --sd`` makes it (the SGN
a copy of the UNet encoder) with the bundled tiny autoencoder. Data: random 128×128 crops of scikit-image's
sample photographs other than the four the synthetic benchmark is cut from (vlmdiff/data/photos.py), each
crop its own hint, empty caption. Recipe: what VLMDiff trains (the SGN and the UNet decoder), the paper's
control routing (the middle block and the deepest skips), ε-prediction MSE at timesteps drawn from
[--min_timestep, 1000), AdamW with warm-up and cosine decay to a tenth, every latent a fresh posterior sample.
Seeded; the weights may differ in their last bits between machines and thread counts.

    python scripts/pretrain_tiny_sgn.py --out runs/tiny_sgn.safetensors            # about 30 min on 2 cores
    python scripts/demo.py --sgn runs/tiny_sgn.safetensors --work_dir runs/demo_sgn
    python scripts/pretrain_tiny_sgn.py --steps 200 --out /tmp/sgn.safetensors    # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)

import torch  # noqa: E402

from scripts._pretraining import add_recipe_arguments, parse_recipe  # noqa: E402

from utils.io import atomic_path  # noqa: E402
from utils.seed import seed_everything  # noqa: E402
from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER  # noqa: E402
from vlmdiff.assemble import assemble_state_dict  # noqa: E402
from vlmdiff.checkpoint import load_state_dict  # noqa: E402
from vlmdiff.config import DEMO_CONFIG  # noqa: E402
from vlmdiff.data.photos import PhotoCrops, load_photos  # noqa: E402
from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD, encode_bank, pretrain_sgn, sgn_state_dict  # noqa: E402
from vlmdiff.model import create_model, load_weights  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--sd", default=str(BUNDLED_TINY_SD), help="latent diffusion model to start from, SD layout "
                   "(default: the bundled one)")
    p.add_argument("--autoencoder", default=str(BUNDLED_TINY_AUTOENCODER),
                   help="autoencoder weights that encode the photographs (default: the bundled one)")
    p.add_argument("--model_config", default=str(DEMO_CONFIG), help="model config (%(default)s)")
    p.add_argument("--min_timestep", type=int, default=500, help="timesteps drawn from [this, 1000) (%(default)s)")
    p.add_argument("--n_crops", type=int, default=1024, help="photograph crops encoded once (%(default)s)")
    add_recipe_arguments(p, steps=3000, batch_size=8, crop=128, crop_help="crop side; latents are 1/8 of it",
                         n_eval=32, printed="noise MSE")
    args = parse_recipe(p, argv)
    if args is None:
        return 2
    out = Path(args.out)
    if not 0 <= args.min_timestep < 1000:
        print(f"error: --min_timestep {args.min_timestep}: must lie in [0, 1000)", file=sys.stderr)
        return 2
    for name in ("sd", "autoencoder", "model_config"):
        if not Path(getattr(args, name)).is_file():
            print(f"error: {getattr(args, name)}: file not found (--{name})", file=sys.stderr)
            return 2
    seed_everything(args.seed)
    model = create_model(args.model_config)
    state, _ = assemble_state_dict(model, load_state_dict(args.sd), load_state_dict(args.autoencoder),
                                   sd_source=args.sd, ae_source=args.autoencoder)
    load_weights(model, state, strict=True, source="assembled state dict")
    model.only_mid_control = True  # the paper's routing: the middle block and the deepest skips
    photos = [ph for ph in load_photos() if min(ph.shape[:2]) >= args.crop]
    start = time.perf_counter()
    crops = PhotoCrops(args.crop, args.n_crops, seed=args.seed, photos=photos)
    held_out = PhotoCrops(args.crop, args.n_eval, seed=args.seed + 1, photos=photos)
    images = torch.stack([crops[i]["jpg"] for i in range(len(crops))])
    eval_images = torch.stack([held_out[i]["jpg"] for i in range(len(held_out))])
    bank = encode_bank(model, crops, progress=not args.no_progress)
    eval_bank = encode_bank(model, held_out, progress=False)
    history = pretrain_sgn(model, images, bank, steps=args.steps, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, min_timestep=args.min_timestep, seed=args.seed,
                           eval_images=eval_images, eval_moments=eval_bank, eval_every=max(args.steps // 5, 1),
                           progress=not args.no_progress)
    meta = {"model_config": Path(args.model_config).name, "sd": Path(args.sd).name, "steps": str(args.steps),
            "crop": str(args.crop), "n_crops": str(args.n_crops), "batch_size": str(args.batch_size),
            "learning_rate": str(args.learning_rate), "min_timestep": str(args.min_timestep),
            "seed": str(args.seed), "routing": "only_mid_control",
            "held_out_noise_mse": json.dumps(history),
            "data": "scikit-image sample photographs (vlmdiff.data.photos), each crop its own hint"}
    from safetensors.torch import save_file

    with atomic_path(out) as tmp:
        save_file(sgn_state_dict(model, torch.float16), str(tmp), metadata=meta)
    first, last = history[0][1], history[-1][1]
    # at step 0 the SGN's outputs are zero: the first figures are the UNet's alone
    print(f"wrote {out} after {args.steps} updates in {time.perf_counter() - start:.0f} s; held-out noise MSE, "
          "UNet alone -> with the trained SGN: " + ", ".join(f"t={t}: {first[t]:.4f} -> {last[t]:.4f}" for t in first))
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
