"""Training runs of VLMDiff with Lightning (docs/design.md §10).

The reference recipe: AdamW lr 1e-5 over the SGN and the UNet decoder, batch 12 with 4-step gradient
accumulation, ``only_mid_control=True``, 300 epochs (MVTec-AD, VisA) or 100 (Real-IAD, COCO-AD) with a
checkpoint every 25 or 20 epochs. A run folder holds ``checkpoints/model_epoch=<EEE>.ckpt`` and
``last.ckpt``, TensorBoard and CSV logs and the resolved configuration; starting the same run again
resumes from ``last.ckpt``. Shuffling and every random draw of a step are seeded from (seed, epoch,
batch), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Sampler

from vlmdiff.run_config import SCHEDULES, TrainConfig  # noqa: F401 - re-exported
from vlmdiff.model import VLMDiff, create_model
from vlmdiff.optim import OPTIMIZERS

log = logging.getLogger(__name__)

class EpochSampler(Sampler):
    """A shuffle that depends only on (seed, epoch): resumed runs see the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def train_loader(dataset, cfg: TrainConfig) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=EpochSampler(len(dataset), cfg.seed),
                      num_workers=cfg.num_workers, drop_last=False, persistent_workers=cfg.num_workers > 0)


def model_params(cfg: TrainConfig) -> dict:
    """The run's settings of the model (:func:`vlmdiff.model.create_model`'s ``params``): the run config is
    their one source, whatever the model config says."""
    return {"only_mid_control": cfg.only_mid_control, "learning_rate": cfg.learning_rate, "seed": cfg.seed,
            "optimizer": cfg.optimizer}


def build_model(cfg: TrainConfig, *, load_weights: bool = True) -> VLMDiff:
    """The model of ``cfg.model_config`` with the training-start weights, routed as the reference trains."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={cfg.optimizer!r} is unknown; valid: {list(OPTIMIZERS)}")
    model = create_model(cfg.model_config, params=model_params(cfg))
    if load_weights:
        model.load_checkpoint(cfg.init_checkpoint)
    model.model.diffusion_model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    model.control_model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    return model


def ddp_strategy(strategy: str) -> str:
    """Plain ``ddp`` → DDP that tolerates unused parameters: with ``only_mid_control=True`` the SGN's shallow
    zero convs and SFF layers receive no gradient at all (docs/design.md R2), which DDP otherwise refuses."""
    return {"ddp": "ddp_find_unused_parameters_true", "ddp_spawn": "ddp_spawn_find_unused_parameters_true"}.get(
        strategy, strategy)


def lightning_trainer(run: Path, *, checkpoint_every: int, keep_every: bool, tensorboard: bool, progress_bar: bool,
                      callbacks=(), **kwargs) -> L.Trainer:
    """The Lightning ``Trainer`` of both training stages (VLMDiff, autoencoder finetuning): ``last.ckpt`` in
    ``<run>/checkpoints`` rewritten at the end of every ``checkpoint_every``-th epoch (plus one
    ``model_<epoch>.ckpt`` each time with ``keep_every``), CSV (and TensorBoard) logs in the run folder, no
    validation loop, no model summary; ``kwargs`` go to the ``Trainer``."""
    # no version counter: a run resumed with another checkpoint interval must still overwrite last.ckpt
    # (Lightning would otherwise write last-v1.ckpt beside the stale one)
    checkpoints = ModelCheckpoint(dirpath=run / "checkpoints", filename="model_{epoch:03d}",
                                  every_n_epochs=checkpoint_every, save_top_k=-1 if keep_every else 0, save_last=True,
                                  save_on_train_epoch_end=True, enable_version_counter=False)
    loggers = [CSVLogger(run, name="csv", version="")]
    if tensorboard:
        loggers.insert(0, TensorBoardLogger(run, name="tensorboard", version=""))
    return L.Trainer(callbacks=[checkpoints, *callbacks], logger=loggers, limit_val_batches=0, num_sanity_val_steps=0,
                     enable_progress_bar=progress_bar, enable_model_summary=False, default_root_dir=run, **kwargs)


def build_trainer(cfg: TrainConfig, callbacks=()) -> L.Trainer:
    epochs, every = cfg.schedule()
    return lightning_trainer(cfg.run_dir, checkpoint_every=every, keep_every=True, tensorboard=True,
                             progress_bar=cfg.progress_bar, callbacks=callbacks, accelerator=cfg.accelerator,
                             devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=ddp_strategy(cfg.strategy),
                             precision=cfg.precision, max_epochs=epochs, max_steps=cfg.max_steps,
                             accumulate_grad_batches=cfg.accumulate_grad_batches,
                             log_every_n_steps=cfg.log_every_n_steps)


def last_checkpoint(cfg: TrainConfig) -> Path | None:
    path = cfg.run_dir / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def fit(cfg: TrainConfig, dataset, *, callbacks=()) -> Path:
    """Train (or resume) and return the path of the last checkpoint."""
    resume = last_checkpoint(cfg)
    if resume is not None:
        log.info("resuming %s from %s", cfg.exp_name, resume)
    model = build_model(cfg, load_weights=resume is None)
    if cfg.cache_conditioning:
        from vlmdiff.conditioning_cache import cached_dataset

        if resume is not None:  # the frozen parts' weights, before Lightning restores the rest
            model.load_checkpoint(resume)
        dataset = cached_dataset(model, dataset, cfg.run_dir / "cache" / "conditioning.pt",
                                 image_size=cfg.image_size, progress=cfg.progress_bar)
    trainer = build_trainer(cfg, callbacks)
    trainer.fit(model, train_loader(dataset, cfg), ckpt_path=str(resume) if resume else None)
    return cfg.run_dir / "checkpoints" / "last.ckpt"
