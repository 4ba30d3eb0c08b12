"""Command-line settings the pretraining scripts (scripts/pretrain_tiny_*.py) share."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_recipe_arguments(p: argparse.ArgumentParser, *, steps: int, batch_size: int, crop: int, crop_help: str,
                         n_eval: int, printed: str) -> None:
    """``--steps``, ``--batch_size``, ``--learning_rate`` (peak, cosine-decayed to a tenth), ``--crop``,
    ``--n_eval`` (held-out crops for the printed figure), ``--seed`` and ``--no_progress``."""
    p.add_argument("--steps", type=int, default=steps, help="optimiser updates (%(default)s)")
    p.add_argument("--batch_size", type=int, default=batch_size, help="(%(default)s)")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="peak, cosine-decayed to a tenth (%(default)s)")
    p.add_argument("--crop", type=int, default=crop, help=f"{crop_help} (%(default)s)")
    p.add_argument("--n_eval", type=int, default=n_eval, help=f"held-out crops for the printed {printed} (%(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")


def parse_recipe(p: argparse.ArgumentParser, argv) -> argparse.Namespace | None:
    """The parsed command line with INFO logging on, or None after a one-line error when ``--out`` is not a
    ``.safetensors`` file."""
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if Path(args.out).suffix != ".safetensors":
        print(f"error: {args.out}: the output must be a .safetensors file (--out)", file=sys.stderr)
        return None
    return args
