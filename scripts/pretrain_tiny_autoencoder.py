#!/usr/bin/env python
"""Pretrain configs/tiny.yaml's autoencoder from random weights on general photographs (scikit-image's
sample images that the synthetic benchmark is not made from), and write the bundled starting point of the
demo's autoencoder finetuning, vlmdiff/assets/tiny_autoencoder.safetensors (float16, ~2 MB).

This plays, at toy scale, the part of the LDM kl-f8 autoencoder pretrained on OpenImages that the paper
finetunes per dataset. Seeded (the same seed draws the same crops and batches; the weights may still differ
in their last bits between machines and thread counts); about 20 minutes on 2 CPU cores:

    python scripts/pretrain_tiny_autoencoder.py
    python scripts/pretrain_tiny_autoencoder.py --steps 500 --out /tmp/ae.safetensors   # a quick look
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
from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER, pretrain_autoencoder  # noqa: E402
from vlmdiff.config import TINY_CONFIG, instantiate, load_config  # noqa: E402
from vlmdiff.data.photos import PhotoCrops  # noqa: E402

TINY = TINY_CONFIG


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(BUNDLED_TINY_AUTOENCODER), help="output .safetensors (default: the bundled file)")
    p.add_argument("--model_config", default=str(TINY), help="config whose first_stage_config is trained")
    add_recipe_arguments(p, steps=4000, batch_size=8, crop=64, crop_help="training crop side", n_eval=32,
                         printed="L1")
    args = parse_recipe(p, argv)
    if args is None:
        return 2
    out = Path(args.out)
    seed_everything(args.seed)
    section = load_config(args.model_config).model.params.first_stage_config
    ae = instantiate(section, where=f"{args.model_config}: first_stage_config")
    train = PhotoCrops(args.crop, length=1_000_000, seed=args.seed)
    held_out = PhotoCrops(args.crop, length=args.n_eval, seed=args.seed + 1, photos=train.photos)
    eval_images = torch.stack([held_out[i]["jpg"] for i in range(len(held_out))])
    start = time.perf_counter()
    history = pretrain_autoencoder(ae, train, steps=args.steps, batch_size=args.batch_size,
                                   learning_rate=args.learning_rate, seed=args.seed, eval_images=eval_images,
                                   progress=not args.no_progress)
    meta = {"model_config": Path(args.model_config).name, "steps": str(args.steps), "crop": str(args.crop),
            "batch_size": str(args.batch_size), "learning_rate": str(args.learning_rate), "seed": str(args.seed),
            "held_out_l1": json.dumps(history), "data": "scikit-image sample photographs (vlmdiff.data.photos)"}
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in ae.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    print(f"wrote {out} after {args.steps} updates in {time.perf_counter() - start:.0f} s; "
          f"held-out L1 {history[0][1]:.3f} -> {history[-1][1]:.3f}")
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
