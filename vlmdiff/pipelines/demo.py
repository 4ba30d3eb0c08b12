"""The CPU demo (``scripts/demo.py``, ``vlmdiff demo``): ``Config`` and ``run(cfg)``, the whole pipeline at toy
size, each stage through its library module:

data → captions (template captioner: a class-name sentence, not a VLM) → :mod:`~vlmdiff.pipelines.
finetune_autoencoder` (the bundled tiny autoencoder) → :mod:`~vlmdiff.pipelines.assemble` (the training start
from the bundled tiny latent diffusion model, as from SD-1.5) → :mod:`~vlmdiff.pipelines.train` →
:mod:`~vlmdiff.pipelines.test` of the trained model AND of its untrained start with the same protocol → both
tables, the reconstruction distances, the HTML report and ``<work_dir>/summary.json``.

    from vlmdiff.pipelines import demo
    demo.run(demo.Config(work_dir="runs/demo", epochs=2))

Imports torch only inside :func:`run`, after :func:`configure_cpu` has set the threads.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from utils.cpu import steady_busy_cores, usable_cores  # torch-free: torch starts after configure_cpu
from vlmdiff.config import DEMO_CONFIG
from vlmdiff.run_config import AEConfig, BuildConfig, TestConfig, TrainConfig
from vlmdiff.run_config import DemoConfig as Config

__all__ = ["Config", "configure_cpu", "run"]


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
    """``"a photo of <class>"`` for every image of both splits, in the caption files' layout."""
    from vlmdiff.data import build_dataset
    from vlmdiff.data.captions import write_caption_files

    for split in ("train", "test"):
        ds = build_dataset(data_set, data, split, image_size=16, classes=classes)
        items = [(r.filename, f"a photo of {r.clsname.replace('_', ' ')}") for r in ds.records]
        write_caption_files(out, split, "synthetic", "template", items)


def run(cfg: Config) -> int:
    """Run the demo of ``cfg`` under ``cfg.work_dir``; 0 when done, else the failing stage's status."""
    threads = configure_cpu(cfg.threads)
    import time

    from vlmdiff.ae_finetune import BUNDLED_TINY_AUTOENCODER
    from vlmdiff.data.captions import folder_name
    from vlmdiff.data.synthetic import DEFAULT_CLASSES, generate
    from vlmdiff.demo import (compare_tables, evaluate_both_modes, normal_distances, write_overview, write_random_sd,
                              write_summary)
    from vlmdiff.diffusion_pretrain import BUNDLED_TINY_SD
    from vlmdiff.pipelines import assemble, finetune_autoencoder, test, train

    work = Path(cfg.work_dir)
    model_config = str(cfg.model_config or DEMO_CONFIG)
    if cfg.sd or cfg.sgn or cfg.model_config:  # given files are checked (start files from their headers) first
        from vlmdiff.validate import validate_build_inputs

        validate_build_inputs(cfg.sd or str(BUNDLED_TINY_SD), str(BUNDLED_TINY_AUTOENCODER), model_config, [],
                              str(work / "vlmdiff_tiny_start.safetensors"), sgn=cfg.sgn)
    times, start = {}, time.perf_counter()
    print(f"demo: {threads} thread(s), OpenMP wait policy {os.environ.get('OMP_WAIT_POLICY', 'default')}", flush=True)

    def stage(name):
        times[name] = time.perf_counter() - start - sum(times.values())
        print(f"== {name} done ({times[name]:.0f} s)", flush=True)

    if cfg.data_path:
        data, data_set, classes = Path(cfg.data_path), "custom", cfg.classes
    else:
        data, data_set = work / "data" / "synthetic", "mvtec"
        classes = cfg.classes or list(DEFAULT_CLASSES)
        if not data.exists():
            generate(data, classes=classes, image_size=cfg.image_size, n_train=cfg.n_train,
                     n_test_good=cfg.n_test_good, n_test_defect=cfg.n_test_defect, seed=cfg.seed)
    captions = work / "data" / folder_name("demo", "template", "pd")
    stage("data")
    template_captions(data, captions, data_set, classes)
    stage("captions")
    common = {"data_set": data_set, "data_path": str(data), "output_dir": str(work),
              "classes": list(classes) if classes else None}
    ae_init = str(BUNDLED_TINY_AUTOENCODER) if cfg.ae_init is None else cfg.ae_init
    rc = finetune_autoencoder.run(AEConfig(
        init_autoencoder=ae_init, model_config=model_config, **common, exp_name="autoencoder",
        image_size=cfg.image_size, crop_size=cfg.ae_crop, batch_size=cfg.ae_batch_size, accumulate=1,
        learning_rate=cfg.ae_learning_rate, perceptual=cfg.ae_perceptual, max_steps=cfg.ae_steps, max_epochs=-1,
        num_workers=0, accelerator="cpu", progress_bar=False))
    if rc:
        return rc
    stage("autoencoder finetuning")
    sd = str(BUNDLED_TINY_SD) if cfg.sd is None else cfg.sd
    assembled = work / "vlmdiff_tiny_start.safetensors"
    ae_ckpt = str(work / "autoencoder" / "autoencoder.ckpt")
    if not sd:  # a randomly initialised stand-in, written in Stable Diffusion's layout
        sd = str(work / "random_sd.safetensors")
        write_random_sd(model_config, sd, seed=cfg.seed)
    rc = assemble.run(BuildConfig(sd=sd, ae=ae_ckpt, model_config=model_config, out=str(assembled), seed=cfg.seed,
                                  sgn=cfg.sgn))
    if rc:
        return rc
    stage("model assembly")
    with_captions = cfg.captions == "template"
    rc = train.run(TrainConfig(
        init_checkpoint=str(assembled), model_config=model_config, **common, exp_name="train",
        use_captions=with_captions, caption_folder=str(captions) if with_captions else None, batch_size=cfg.batch_size,
        accumulate_grad_batches=1, learning_rate=cfg.learning_rate, max_epochs=cfg.epochs,
        every_n_epochs=cfg.epochs, num_workers=0, accelerator="cpu", seed=cfg.seed, image_size=cfg.image_size,
        progress_bar=False, gradient_checkpointing=False, cache_conditioning=True,
        only_mid_control=cfg.only_mid_control))
    if rc:
        return rc
    stage("training")
    trained = work / "train" / "checkpoints" / "last.ckpt"
    test_common = {"model_config": model_config, **common, "scorer": cfg.scorer, "batch_size": cfg.test_batch_size,
                   "device": "cpu", "image_size": cfg.image_size, "num_workers": 0, "ddim_steps": cfg.ddim_steps,
                   "seed": cfg.seed, "overwrite": True, "only_mid_control": cfg.only_mid_control}
    rc = test.run(TestConfig(checkpoint=str(trained), exp_name="test", save_visuals=True, **test_common))
    if rc:
        return rc
    stage("testing")
    rc = test.run(TestConfig(checkpoint=str(assembled), exp_name="test_untrained", **test_common))
    if rc:
        return rc
    stage("testing the untrained start")
    metrics, untrained = evaluate_both_modes(work / "test"), evaluate_both_modes(work / "test_untrained")
    l1 = {"trained": normal_distances(work / "test"), "untrained": normal_distances(work / "test_untrained")}
    wall = time.perf_counter() - start
    write_summary(work / "summary.json", wall_s=wall, stages_s=times, metrics=metrics, untrained_metrics=untrained,
                  l1_samples=l1["trained"]["samples"], l1_autoencoder=l1["trained"]["autoencoder"],
                  l1_untrained_samples=l1["untrained"]["samples"],
                  extra={"threads": threads, "settings": asdict(cfg)})
    print(compare_tables(metrics, untrained))
    print(f"mean |input − reconstruction| on normal test images (ImageNet-normalised units): trained diffusion "
          f"{l1['trained']['samples']:.3f}, autoencoder round trip {l1['trained']['autoencoder']:.3f}, untrained "
          f"diffusion {l1['untrained']['samples']:.3f}")
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {wall:.0f} s")
    write_overview(work / "test", work / "overview.png")
    print(f"report: {work / 'test' / 'report' / 'index.html'}; summary: {work / 'summary.json'}; "
          f"picture: {work / 'overview.png'}")
    return 0
