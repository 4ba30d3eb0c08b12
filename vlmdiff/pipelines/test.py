"""Test runs (``test.py``, ``vlmdiff test``): ``Config``, ``run(cfg, *, eval_only=False, skip_bad_images=False)``
and ``load_model(cfg, device)`` (the trained model and the scorer of ``cfg``, also used by
:mod:`vlmdiff.pipelines.predict`).

Imports torch only inside its functions, so the command line's ``--help`` answers without it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

from vlmdiff.run_config import TestConfig as Config
from vlmdiff.run_config import save_run_config

if TYPE_CHECKING:
    import torch

__all__ = ["Config", "load_model", "run"]


def load_model(cfg: Config, device: torch.device):
    """``(model, extractor)``: the model of ``cfg``'s config with its checkpoint, and its scorer, on ``device``."""
    from vlmdiff.features import build_extractor
    from vlmdiff.model import create_model

    model = create_model(cfg.model_config, params={"only_mid_control": cfg.only_mid_control})  # the run config's
    model.load_checkpoint(cfg.checkpoint)
    return model.to(device).eval(), build_extractor(cfg.scorer, cfg.scorer_weights).to(device)


def run(cfg: Config, *, eval_only: bool = False, skip_bad_images: bool = False) -> int:
    """Test the model of ``cfg`` (or resume the run), then report; ``eval_only``: only the metrics of the stored
    results; ``skip_bad_images``: leave unreadable images out. 0 when done. Several processes (torchrun) split
    the batches; process 0 reports."""
    import torch  # here: --help and --print_config answer without torch

    from utils.seed import seed_everything
    from vlmdiff.data import build_dataset, caption_source
    from vlmdiff.report import markdown_table
    from vlmdiff.testing import distributed_context, evaluate_run, prepare_run_dir, run_batches
    from vlmdiff.validate import check_split_images, resolve_device, validate_test_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validate_test_config(cfg, eval_only=eval_only)
    bad = None if eval_only else check_split_images(cfg, "test", skip=bool(skip_bad_images))
    rank, world = distributed_context()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = distributed_context()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    if rank == 0:
        prepare_run_dir(cfg, skipped=bad)
        save_run_config(cfg, cfg.run_dir / "test_config.yaml")
    if world > 1:
        torch.distributed.barrier()
    if not eval_only:
        seed_everything(cfg.seed)
        dataset = build_dataset(cfg.data_set, cfg.data_path, "test", image_size=cfg.image_size, classes=cfg.classes,
                                captions=caption_source(cfg, "test"), coco_part=cfg.coco_part, exclude=[p for p, _ in bad])
        model, extractor = load_model(cfg, device)
        run_batches(model, extractor, dataset, cfg, rank=rank, world_size=world)
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        results = evaluate_run(cfg, asdict(cfg), device=device if device.type == "cuda" else None)
        print(markdown_table(results))
        print(f"report: {cfg.run_dir / 'report' / 'index.html'}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0
