"""Autoencoder finetuning (``finetune_autoencoder.py``): ``Config`` and ``run(cfg)``."""

from vlmdiff.cli.finetune_autoencoder import run
from vlmdiff.run_config import AEConfig as Config

__all__ = ["Config", "run"]
