#!/usr/bin/env python
"""Write the bundled multi-class anomaly benchmark (MVTec-AD layout) from scikit-image photographs and
procedural textures. Deterministic: the same seed gives identical files.

    python scripts/make_synthetic_dataset.py data/synthetic
    python scripts/make_synthetic_dataset.py data/synth256 --image_size 256 --classes brick disc tissue
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)
from vlmdiff.data.synthetic import CLASSES, DEFAULT_CLASSES, DEFECTS, generate  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES), choices=CLASSES)
    p.add_argument("--defects", nargs="+", default=list(DEFECTS), choices=DEFECTS)
    p.add_argument("--image_size", type=int, default=128, help="side in pixels (default: %(default)s)")
    p.add_argument("--n_train", type=int, default=24, help="normal training images per class (default: %(default)s)")
    p.add_argument("--n_test_good", type=int, default=6, help="normal test images per class (default: %(default)s)")
    p.add_argument("--n_test_defect", type=int, default=10,
                   help="defective test images per class, defect types round-robin (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        out = generate(args.out_dir, classes=args.classes, defects=args.defects, image_size=args.image_size,
                       n_train=args.n_train, n_test_good=args.n_test_good, n_test_defect=args.n_test_defect,
                       seed=args.seed, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = args.n_train + args.n_test_good + args.n_test_defect
    print(f"wrote {out}: {len(args.classes)} classes x {n} images ({args.image_size}x{args.image_size})")
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
