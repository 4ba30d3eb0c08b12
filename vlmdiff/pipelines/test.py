"""Test runs (``test.py``): ``Config`` and ``run(cfg, *, eval_only=False, skip_bad_images=False)``."""

from vlmdiff.cli.test import run
from vlmdiff.run_config import TestConfig as Config

__all__ = ["Config", "run"]
