#!/usr/bin/env python
"""The whole VLMDiff pipeline on CPU in minutes, on the bundled synthetic benchmark:

generate the data → caption it (template captioner: a class-name sentence, not a VLM) → finetune the
bundled tiny autoencoder briefly → assemble and train the tiny VLMDiff → test it with the
EfficientNet-Lite0 scorer (real ImageNet weights) → print the 7-metric table and write the HTML report
with heatmaps.

    python scripts/demo.py                     # everything under runs/demo
    python scripts/demo.py --work_dir /tmp/d --epochs 5 --classes disc weave

Demo-level settings (the method and the test protocol are the paper's: noise to t = 999, 10 DDIM steps,
the image as SGN hint, feature-difference maps, Gaussian σ = 5, pooled image score):

* 128×128 images, 24 normal training images per class; configs/tiny.yaml (16×16 latents, the smallest the
  SFF block accepts).
* The autoencoder starts from vlmdiff/assets/tiny_autoencoder.safetensors, pretrained on general
  photographs that the benchmark is not made from (scripts/pretrain_tiny_autoencoder.py), as the paper
  starts from LDM's kl-f8. Finetuning: L1 + KL (no LPIPS weights are shipped), --ae_steps updates on
  whole images, batch 8, Adam lr 3e-4.
* VLMDiff training: batch 8, no accumulation, AdamW lr 2e-4, 20 epochs (300 updates).
* Scorer: EfficientNet-Lite0 at stride 16 only (``effnet_lite0_s16``): the toy reconstructions are blurred,
  and the shallower stride-8 level mostly measures that blur.

On a CPU shared with other busy jobs, run it as ``OMP_WAIT_POLICY=PASSIVE python scripts/demo.py``:
spinning OpenMP workers can then slow the toy model's many small operations by an order of magnitude (on
an idle machine the default policy is about 25 % faster).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import build_model  # noqa: E402
import finetune_autoencoder  # noqa: E402
import test as test_cli  # noqa: E402
import train as train_cli  # noqa: E402
from utils.seed import seed_everything  # noqa: E402
from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER  # noqa: E402
from vlmdiff.assemble import self_assembled_state_dict  # noqa: E402
from vlmdiff.checkpoint import load_state_dict  # noqa: E402
from vlmdiff.data import build_dataset  # noqa: E402
from vlmdiff.data.captions import folder_name, write_caption_files  # noqa: E402
from vlmdiff.data.synthetic import CLASSES, DEFAULT_CLASSES, generate  # noqa: E402
from vlmdiff.model import create_model, load_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
AE_STEPS, EPOCHS, LEARNING_RATE = 100, 20, 2e-4


def template_captions(data: Path, out: Path, split: str) -> None:
    ds = build_dataset("mvtec", data, split, image_size=16)
    items = [(r.filename, f"a photo of {r.clsname.replace('_', ' ')}") for r in ds.records]
    write_caption_files(out, split, "synthetic", "template", items)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", default="runs/demo")
    p.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES), choices=CLASSES)
    p.add_argument("--image_size", type=int, default=128, help="image side; latents are 1/8 of it (%(default)s)")
    p.add_argument("--n_train", type=int, default=24, help="normal training images per class (%(default)s)")
    p.add_argument("--n_test_good", type=int, default=6)
    p.add_argument("--n_test_defect", type=int, default=10)
    p.add_argument("--ae_init", help="autoencoder to finetune (default: the bundled "
                   "vlmdiff/assets/tiny_autoencoder.safetensors); '' starts from random weights")
    p.add_argument("--ae_steps", type=int, default=AE_STEPS, help="autoencoder updates (%(default)s)")
    p.add_argument("--ae_crop", type=int, default=0,
                   help="autoencoder training on random crops of this side; 0: whole images (%(default)s)")
    p.add_argument("--ae_batch_size", type=int, default=8)
    p.add_argument("--ae_learning_rate", type=float, default=3e-4)
    p.add_argument("--epochs", type=int, default=EPOCHS, help="VLMDiff training epochs (%(default)s)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--learning_rate", type=float, default=LEARNING_RATE)
    p.add_argument("--ddim_steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    data, captions = work / "data" / "synthetic", work / "data" / folder_name("synthetic", "template", "pd")
    times, start = {}, time.perf_counter()

    def stage(name):
        times[name] = time.perf_counter() - start - sum(times.values())
        print(f"== {name} done ({times[name]:.0f} s)", flush=True)

    if not data.exists():
        generate(data, classes=args.classes, image_size=args.image_size, n_train=args.n_train,
                 n_test_good=args.n_test_good, n_test_defect=args.n_test_defect, seed=args.seed)
    stage("data")
    for split in ("train", "test"):
        template_captions(data, captions, split)
    stage("captions (template captioner)")
    common = ["--data_set", "mvtec", "--data_path", str(data), "--output_dir", str(work)]
    ae_init = str(BUNDLED_TINY_AUTOENCODER) if args.ae_init is None else args.ae_init
    rc = finetune_autoencoder.main(["--resume_path", ae_init, "--model_config", str(TINY), *common,
                                    "--exp_name", "autoencoder", "--image_size", str(args.image_size),
                                    "--crop_size", str(args.ae_crop), "--batch_size", str(args.ae_batch_size),
                                    "--accumulate", "1", "--learning_rate", str(args.ae_learning_rate),
                                    "--max_steps", str(args.ae_steps), "--max_epochs", "-1", "--num_workers", "0",
                                    "--accelerator", "cpu", "progress_bar=false"])
    if rc:
        return rc
    stage("autoencoder finetuning")
    seed_everything(args.seed)
    model = create_model(TINY)
    state, report = self_assembled_state_dict(model, load_state_dict(work / "autoencoder" / "autoencoder.ckpt"))
    load_weights(model, state)
    assembled = work / "vlmdiff_tiny.safetensors"
    build_model.save_state_dict(model.state_dict(), assembled)
    print(report.summary())
    stage("model assembly")
    rc = train_cli.main(["--resume_path", str(assembled), "--model_config", str(TINY), *common,
                         "--exp_name", "train", "--use_captions", "--caption_folder", str(captions),
                         "--batch_size", str(args.batch_size), "--accumulate_grad_batches", "1",
                         "--learning_rate", str(args.learning_rate), "--max_epochs", str(args.epochs),
                         "--every_n_epochs", str(args.epochs), "--num_workers", "0", "--accelerator", "cpu",
                         "--seed", str(args.seed), f"image_size={args.image_size}", "progress_bar=false",
                         "gradient_checkpointing=false"])
    if rc:
        return rc
    stage("training")
    rc = test_cli.main(["--resume_path", str(work / "train" / "checkpoints" / "last.ckpt"),
                        "--model_config", str(TINY), *common, "--exp_name", "test", "--scorer", "effnet_lite0_s16",
                        "--save_visuals", "--batch_size", "8", "--device", "cpu", f"image_size={args.image_size}",
                        "num_workers=0", f"ddim_steps={args.ddim_steps}", f"seed={args.seed}", "overwrite=true"])
    if rc:
        return rc
    stage("testing")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {sum(times.values()):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
