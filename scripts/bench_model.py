#!/usr/bin/env python
"""Test throughput and training step time of VLMDiff (random weights), with ratios to the reference's way.

One invocation prints two Markdown tables:

* the test path (reconstruction, feature extraction of input and reconstruction, anomaly map), in images
  per second: a reference-style row (batch 1, float32, the guidance pass run twice even with empty
  captions, an extra decode of the autoencoder round trip per image) and this implementation's batched
  float32, bf16, bf16 + channels-last (+ ``torch.compile`` with --compile), each with its ratio to the
  reference-style row;
* the training step (frozen encoders, SGN + UNet decoder forward and backward, AdamW update) at float32
  and bf16-mixed, with and without gradient checkpointing, with the conditioning cache (posterior
  moments and caption tokens precomputed), and with 8-bit AdamW where bitsandbytes and CUDA are there.

Warm-up calls (and compilation) are excluded from the times; peak memory is the GPU's allocator peak
of each row (warm-up included). Full size (configs/vlmdiff.yaml, 256x256) on a GPU, tiny size
(configs/tiny.yaml, 128x128) on a CPU unless --size says otherwise.

    python scripts/bench_model.py                          # full size on a GPU, tiny on a CPU
    python scripts/bench_model.py --size full --batch 16 --train_batch 12 --compile
    python scripts/bench_model.py --tiny --steps 2 --repeat 1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)
from vlmdiff.features import build_extractor  # noqa: E402
from vlmdiff.precision import autocast, compile_networks, extract_features  # noqa: E402
from vlmdiff.model import create_model  # noqa: E402
from vlmdiff.optim import build_optimizer  # noqa: E402
from vlmdiff.scoring import anomaly_map  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"tiny": ("configs/tiny.yaml", 128, "v1s16"), "full": ("configs/vlmdiff.yaml", 256, "v1s8")}


def timed(fn, repeat: int, device: torch.device) -> float:
    """Mean wall time of ``repeat`` calls after one warm-up call, in seconds."""
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync()
    return (time.perf_counter() - start) / repeat


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict):
    """Record the GPU allocator's peak of the block in ``out["peak"]`` (GiB; None off CUDA)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    out["peak"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def test_rows(model, extractor, images, args, device):
    """``[(name, batch, seconds per image, peak GiB)]`` of the test path variants."""
    size = images.shape[-1]

    def test_path(batch, precision="fp32", reference=False, channels_last=False):
        g = torch.Generator(device=device).manual_seed(0)
        out = model.reconstruct(images[:batch], ddim_steps=args.steps, guidance_scale=9.0, generator=g,
                                precision=precision, channels_last=channels_last,
                                skip_redundant_guidance=not reference, return_ae_reconstruction=reference)
        feats = [extract_features(extractor, x, precision) for x in (images[:batch], out["samples"])]
        return anomaly_map(*feats, size)

    variants = [("reference-style: fp32, doubled guidance, extra decode", 1, dict(reference=True)),
                ("fp32, batched", args.batch, {}),
                ("bf16, batched", args.batch, dict(precision="bf16")),
                ("bf16 + channels-last", args.batch, dict(precision="bf16", channels_last=True))]
    if args.compile:
        variants.append(("bf16 + channels-last + compile", args.batch, dict(precision="bf16", channels_last=True)))
    rows = []
    for name, batch, kw in variants:
        if "compile" in name:
            compile_networks(model, backend=args.compile_backend)
            extractor.compile(backend=args.compile_backend)
        mem = {}
        with peak_memory(device, mem):
            seconds = timed(lambda: test_path(batch, **kw), args.repeat, device)
        rows.append((name, batch, seconds / batch, mem["peak"]))
    return rows


def train_rows(model, args, device, image: int):
    """``[(name, batch, seconds per step, peak GiB or a reason)]`` of training-step variants."""
    b = args.train_batch
    g = torch.Generator(device=device).manual_seed(1)
    images = torch.randn(b, 3, image, image, generator=g, device=device)
    batch = {"jpg": images, "hint": images, "txt": ["a photo of a metal nut"] * b}
    with torch.no_grad():
        cached = {"moments": model.first_stage_model.moments(images),
                  "context": model.get_learned_conditioning(batch["txt"]), "hint": images}
    have_8bit = device.type == "cuda" and _has_bitsandbytes()
    variants = [("fp32 AdamW, checkpointing (default)", "fp32", True, batch, "adamw"),
                ("fp32 AdamW, no checkpointing", "fp32", False, batch, "adamw"),
                ("bf16-mixed, checkpointing", "bf16", True, batch, "adamw"),
                ("bf16-mixed, no checkpointing", "bf16", False, batch, "adamw"),
                ("bf16-mixed, checkpointing, + cache", "bf16", True, cached, "adamw"),
                ("bf16-mixed, checkpointing, + cache, + 8-bit AdamW", "bf16", True, cached, "adamw8bit")]
    model.train()
    rows = []
    for name, precision, checkpointing, data, optimizer in variants:
        if optimizer == "adamw8bit" and not have_8bit:
            rows.append((name, b, None, "not run: needs CUDA and bitsandbytes"))
            continue
        model.model.diffusion_model.set_gradient_checkpointing(checkpointing)
        model.control_model.set_gradient_checkpointing(checkpointing)
        opt = build_optimizer(model.trainable_parameters(), optimizer, lr=1e-5)

        def step():
            with autocast(precision, device):  # what Lightning's precision="bf16-mixed" does
                z, cond = model.get_input(data, generator=g)
                t = torch.randint(0, model.num_timesteps, (b,), device=device, generator=g)
                loss, _ = model.p_losses(z, cond, t, torch.randn(z.shape, device=device, generator=g))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        mem = {}
        try:
            with peak_memory(device, mem):
                seconds = timed(step, args.repeat, device)
            rows.append((name, b, seconds, mem["peak"]))
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            rows.append((name, b, None, "out of memory"))
        del opt
    model.eval()
    return rows


def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _mem(peak) -> str:
    return peak if isinstance(peak, str) else "n/a (CPU)" if peak is None else f"{peak:.2f} GiB"


def print_tables(header: str, tests, trains) -> None:
    print(header)
    print("\n| test path | batch | img/s | × reference-style | peak GPU memory |\n|---|---|---|---|---|")
    ref = tests[0][2]
    for name, batch, sec, peak in tests:
        print(f"| {name} | {batch} | {1 / sec:.3g} | {ref / sec:.2f}× | {_mem(peak)} |")
    print("\n| training step | batch | s/step | img/s | × first row | peak GPU memory |\n|---|---|---|---|---|---|")
    ref = trains[0][2]
    for name, batch, sec, peak in trains:
        if sec is None:
            print(f"| {name} | {batch} | – | – | – | {_mem(peak)} |")
        else:
            ratio = f"{ref / sec:.2f}×" if ref else "–"
            print(f"| {name} | {batch} | {sec:.3f} | {batch / sec:.3g} | {ratio} | {_mem(peak)} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=sorted(SIZES), help="model size (default: full on a GPU, tiny on a CPU)")
    p.add_argument("--tiny", action="store_true", help="the same as --size tiny")
    p.add_argument("--batch", type=int, help="test batch (default: 16 on a GPU, 4 on a CPU)")
    p.add_argument("--train_batch", type=int, help="training batch (default: 12, the paper's, on a GPU; 2 on a CPU)")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (default: %(default)s)")
    p.add_argument("--repeat", type=int, help="timed calls per row after a warm-up (default: 3 on a GPU, 2 on a CPU)")
    p.add_argument("--extractor", help="scorer (random weights; default: v1s8 at full size, v1s16 at tiny)")
    p.add_argument("--compile", action="store_true", help="add a torch.compile row (compilation is not timed)")
    p.add_argument("--compile_backend", default="inductor", help="torch.compile backend (default: %(default)s)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    size = "tiny" if args.tiny else args.size or ("full" if gpu else "tiny")
    config, image, extractor_name = SIZES[size]
    args.batch = args.batch or (16 if gpu else 4)
    args.train_batch = args.train_batch or (12 if gpu else 2)
    args.repeat = args.repeat or (3 if gpu else 2)
    torch.manual_seed(0)
    model = create_model(ROOT / config).to(device).eval()
    model.only_mid_control = True
    extractor = build_extractor(args.extractor or extractor_name, random_init=True).to(device)
    images = torch.randn(args.batch, 3, image, image, generator=torch.Generator().manual_seed(0)).to(device)
    trains = train_rows(model, args, device, image)  # first: the test rows leave the model channels-last, compiled
    tests = test_rows(model, extractor, images, args, device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    name = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    scorer = args.extractor or extractor_name
    print_tables(f"VLMDiff {size} ({config}, random weights, {params:.0f}M parameters), {image}x{image}, "
                 f"{args.steps} DDIM steps, scorer {scorer}, {name}, torch {torch.__version__}", tests, trains)
    return 0


if __name__ == "__main__":
    sys.exit(main())
