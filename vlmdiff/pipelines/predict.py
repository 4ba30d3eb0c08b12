"""Predictions on unlabeled images (``test.py --predict``): ``Config`` and ``run(cfg, folder, **options)``
(the options of :func:`vlmdiff.predict.predict_run`: ``threshold``, ``threshold_class``, ``out``,
``force_settings``, ``skip_bad_images``, ``explicit``)."""

from __future__ import annotations

import os

from vlmdiff.run_config import TestConfig as Config

__all__ = ["Config", "run"]


def run(cfg: Config, folder: str | os.PathLike, **options) -> int:
    """Score the images under ``folder`` with the model of ``cfg`` and a test run's threshold."""
    from vlmdiff.pipelines import test
    from vlmdiff.predict import predict_run

    return predict_run(cfg, folder, test.load_model, **options)
