#!/usr/bin/env python
"""Wall time of one ``apply_model`` and one ``reconstruct`` (random weights), tiny and full size.

Also measures the reference's behaviour of running classifier-free guidance on a doubled batch even
when the captions are empty, against this implementation's single pass, and prints the ratio.

    python scripts/bench_model.py                 # tiny and full size, CPU or the first GPU
    python scripts/bench_model.py --sizes tiny --batch 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)
from vlmdiff.model import create_model  # noqa: E402

CONFIGS = {"tiny": ("configs/tiny.yaml", 128), "full": ("configs/vlmdiff.yaml", 256)}


def timed(fn, repeat: int, device: torch.device) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def bench(size: str, batch: int, steps: int, repeat: int, device: torch.device) -> None:
    config, image = CONFIGS[size]
    root = Path(__file__).resolve().parents[1]
    model = create_model(root / config).to(device).eval()
    model.only_mid_control = True
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, image, image, generator=g, device=device)
    latent = image // 8
    x = torch.randn(batch, 4, latent, latent, generator=g, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    with torch.no_grad():
        ctx = model.get_learned_conditioning([""] * batch)
    cond = {"c_crossattn": [ctx], "c_concat": [images]}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        t_apply = timed(lambda: model.apply_model(x, t, cond), repeat, device)
    kw = dict(ddim_steps=steps, guidance_scale=9.0, generator=g)
    t_single = timed(lambda: model.reconstruct(images, **kw), repeat, device)
    t_double = timed(lambda: model.reconstruct(images, skip_redundant_guidance=False, **kw), repeat, device)
    mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"[{size}] {params:.0f}M parameters, batch {batch}, {image}x{image}, float32, {device}{mem}")
    print(f"  apply_model (SGN + UNet)               {t_apply * 1e3:10.1f} ms")
    print(f"  reconstruct, {steps} DDIM steps, doubled CFG batch (reference) {t_double:8.2f} s")
    print(f"  reconstruct, {steps} DDIM steps, empty captions single pass    {t_single:8.2f} s")
    print(f"  speed-up of skipping the redundant guidance branch: {t_double / t_single:.2f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1, help="timed repetitions after a warm-up")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    for size in args.sizes:
        bench(size, args.batch, args.steps, args.repeat, torch.device(args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
