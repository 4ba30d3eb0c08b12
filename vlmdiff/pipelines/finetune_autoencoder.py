"""Autoencoder finetuning (``finetune_autoencoder.py``, ``vlmdiff finetune-autoencoder``): ``Config``,
``run(cfg)`` and ``load_autoencoder(cfg)``.

Imports torch only inside its functions, so the command line's ``--help`` answers without it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vlmdiff.run_config import AEConfig as Config
from vlmdiff.run_config import save_run_config

__all__ = ["Config", "load_autoencoder", "run"]

log = logging.getLogger("finetune_autoencoder")


def load_autoencoder(cfg: Config):
    """The autoencoder of ``cfg``'s model config, with the weights of ``cfg.init_autoencoder`` when given."""
    from vlmdiff.checkpoint import load_state_dict, load_strict, strip_prefix  # torch: not needed by --help
    from vlmdiff.config import instantiate, load_config

    section = load_config(cfg.model_config).model.params.first_stage_config
    ae = instantiate(section, where=f"{cfg.model_config}: first_stage_config")
    if cfg.init_autoencoder:
        sd = load_state_dict(cfg.init_autoencoder)
        if any(k.startswith("first_stage_model.") for k in sd):
            sd = strip_prefix(sd, "first_stage_model.")
        load_strict(ae, {k: v for k, v in sd.items() if not k.startswith("loss.")}, source=cfg.init_autoencoder)
    else:
        log.warning("no --init_autoencoder: the autoencoder starts from random weights")
    return ae


def run(cfg: Config) -> int:
    """Finetune the autoencoder of ``cfg`` (or continue its run); 0 when done, 2 for bad LPIPS or weights."""
    import torch  # here: --help and --print_config answer without torch
    from torch.utils.data import DataLoader

    from utils.seed import seed_everything
    from vlmdiff.ae_finetune import AutoencoderFinetuner, RandomCrops, build_perceptual
    from vlmdiff.checkpoint import save_state_dict
    from vlmdiff.data import build_dataset
    from vlmdiff.training import lightning_trainer
    from vlmdiff.validate import perceptual_in_use, validate_autoencoder_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    validate_autoencoder_config(cfg)
    seed_everything(cfg.seed)
    run = Path(cfg.output_dir) / cfg.exp_name
    try:
        lpips = build_perceptual(cfg.perceptual, lpips_vgg=cfg.lpips_vgg, lpips_lin=cfg.lpips_lin)
        autoencoder = load_autoencoder(cfg)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    save_run_config(cfg, run / "ae_config.yaml")
    if cfg.perceptual == "lpips" and lpips is None:
        log.warning("LPIPS weights not given (--lpips_vgg, --lpips_lin): training without the perceptual term")
    else:
        log.info("perceptual term: %s", perceptual_in_use(cfg.perceptual, cfg.lpips_vgg))
    dataset = build_dataset(cfg.data_set, cfg.data_path, "train", image_size=cfg.image_size, coco_part=cfg.coco_part,
                            classes=cfg.classes)
    if cfg.crop_size:
        # one seeded generator in the main process; DataLoader workers draw from their own seeded global RNG
        own = torch.Generator().manual_seed(cfg.seed) if cfg.num_workers == 0 else None
        dataset = RandomCrops(dataset, cfg.crop_size, generator=own)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    module = AutoencoderFinetuner(autoencoder, learning_rate=cfg.learning_rate or cfg.batch_size * 4.5e-5,
                                  accumulate=cfg.accumulate, disc_start=cfg.disc_start, lpips=lpips)
    max_steps = 2 * cfg.max_steps if cfg.max_steps > 0 else -1  # Lightning counts both optimisers' steps
    resume = run / "checkpoints" / "last.ckpt"
    resume = resume if resume.is_file() else None
    if resume is not None:
        log.info("resuming from %s (the last completed epoch)", resume)
    # one rolling checkpoint (last.ckpt, every epoch): starting the same run again continues from it
    trainer = lightning_trainer(run, checkpoint_every=1, keep_every=False, tensorboard=False,
                                progress_bar=cfg.progress_bar, accelerator=cfg.accelerator, devices=cfg.devices,
                                max_epochs=cfg.max_epochs, max_steps=max_steps, log_every_n_steps=10)
    trainer.fit(module, loader, ckpt_path=str(resume) if resume else None)
    out = run / "autoencoder.ckpt"
    save_state_dict(module.autoencoder.state_dict(), out)
    print(f"wrote {out} (use it as build_model.py --ae)")
    return 0
