"""Assembly of the training-start checkpoint (``build_model.py``): ``Config`` and ``run(cfg)``."""

from vlmdiff.cli.build_model import run
from vlmdiff.run_config import BuildConfig as Config

__all__ = ["Config", "run"]
