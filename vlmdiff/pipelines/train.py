"""Training (``train.py``): ``Config`` and ``run(cfg)``."""

from vlmdiff.cli.train import run
from vlmdiff.run_config import TrainConfig as Config

__all__ = ["Config", "run"]
