#!/usr/bin/env python
"""Pretrain configs/tiny_demo.yaml's UNet as a latent diffusion model on general photographs and write the demo's
stand-in for Stable Diffusion 1.5, vlmdiff/assets/tiny_sd.safetensors (float16, Stable Diffusion's key layout:
``model.diffusion_model.*``, ``cond_stage_model.*``, ``first_stage_model.*``).

Data: random 128×128 crops of scikit-image's sample photographs other than the four the synthetic benchmark
is cut from (vlmdiff/data/photos.py), encoded once by the bundled tiny autoencoder
(vlmdiff/assets/tiny_autoencoder.safetensors, which the file also carries as its ``first_stage_model``).
The text encoder keeps its seeded random initialisation (the demo's captions are templates) and the caption
is empty, as in an unconditioned test run. Recipe: ε-prediction MSE at uniform timesteps, AdamW, linear
warm-up then cosine decay to a tenth, every latent a fresh posterior sample. Seeded; the weights may still
differ in their last bits between machines and thread counts.

    python scripts/pretrain_tiny_diffusion.py
    python scripts/pretrain_tiny_diffusion.py --steps 200 --out /tmp/sd.safetensors   # a quick look

``build_model.py --sd vlmdiff/assets/tiny_sd.safetensors --model_config configs/tiny_demo.yaml --ae <finetuned>``
assembles a training start from it exactly as from SD-1.5.
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
from vlmdiff.checkpoint import load_state_dict, load_strict  # noqa: E402
from vlmdiff.config import DEMO_CONFIG  # noqa: E402
from vlmdiff.data.photos import PhotoCrops, load_photos  # noqa: E402
from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD, encode_bank, pretrain_unet, sd_layout_state_dict  # noqa: E402
from vlmdiff.model import create_model  # noqa: E402

TINY = DEMO_CONFIG


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(BUNDLED_TINY_SD), help="output .safetensors (default: the bundled file)")
    p.add_argument("--model_config", default=str(TINY), help="model config whose UNet is trained (%(default)s)")
    p.add_argument("--autoencoder", default=str(BUNDLED_TINY_AUTOENCODER),
                   help="autoencoder weights that encode the photographs (default: the bundled one)")
    p.add_argument("--n_crops", type=int, default=1024, help="photograph crops encoded once (%(default)s)")
    add_recipe_arguments(p, steps=1500, batch_size=16, crop=128, crop_help="crop side; latents are 1/8 of it",
                         n_eval=64, printed="noise MSE")
    args = parse_recipe(p, argv)
    if args is None:
        return 2
    out = Path(args.out)
    seed_everything(args.seed)
    model = create_model(args.model_config)
    load_strict(model.first_stage_model, {k: v.float() for k, v in load_state_dict(args.autoencoder).items()},
                source=args.autoencoder)
    photos = [ph for ph in load_photos() if min(ph.shape[:2]) >= args.crop]
    start = time.perf_counter()
    bank = encode_bank(model, PhotoCrops(args.crop, args.n_crops, seed=args.seed, photos=photos),
                       progress=not args.no_progress)
    held_out = encode_bank(model, PhotoCrops(args.crop, args.n_eval, seed=args.seed + 1, photos=photos),
                           progress=False)
    history = pretrain_unet(model, bank, steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, seed=args.seed, eval_moments=held_out,
                            eval_every=max(args.steps // 5, 1), progress=not args.no_progress)
    meta = {"model_config": Path(args.model_config).name, "steps": str(args.steps), "crop": str(args.crop),
            "n_crops": str(args.n_crops), "batch_size": str(args.batch_size),
            "learning_rate": str(args.learning_rate), "seed": str(args.seed),
            "held_out_noise_mse": json.dumps(history), "data": "scikit-image sample photographs (vlmdiff.data.photos)"}
    from safetensors.torch import save_file

    with atomic_path(out) as tmp:
        save_file(sd_layout_state_dict(model, torch.float16), str(tmp), metadata=meta)
    first, last = history[0][1], history[-1][1]
    print(f"wrote {out} after {args.steps} updates in {time.perf_counter() - start:.0f} s; held-out noise MSE "
          + ", ".join(f"t={t}: {first[t]:.3f} -> {last[t]:.3f}" for t in first))
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
