"""Captioning (``captioner.py``): ``Config`` and ``run(cfg)``."""

from vlmdiff.cli.captioner import run
from vlmdiff.run_config import CaptionerConfig as Config

__all__ = ["Config", "run"]
