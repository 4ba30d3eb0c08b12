#!/usr/bin/env python
"""Build the COCO-AD benchmark from a COCO 2017 download: per split k, the masks
``val2017_mask_ad_20_<k>/<stem>.png`` and ``meta_20_<k>.json``, written into the COCO root.
An interrupted build resumes where it stopped when run again.

    python scripts/make_coco_ad.py --coco_root data/COCO
    python scripts/make_coco_ad.py --coco_root data/COCO --splits 0 --workers 4
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__":
    import _checkout  # noqa: F401  (run from a checkout: the repository root on sys.path)
from vlmdiff.data.coco_ad import SPLITS, build_coco_ad, format_summary  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coco_root", required=True,
                   help="folder with annotations/instances_{train,val}2017.json, train2017/ and val2017/")
    p.add_argument("--splits", nargs="+", type=int, default=list(SPLITS), choices=SPLITS,
                   help="splits to build (default: all)")
    p.add_argument("--workers", type=int, default=1, help="processes writing masks (default: %(default)s)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers must be at least 1, got {args.workers}")
    try:
        summaries = build_coco_ad(args.coco_root, args.splits, workers=args.workers, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summaries))
    print(f"wrote {', '.join(f'meta_20_{s.split}.json' for s in summaries)} in {args.coco_root}")
    return 0


if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
