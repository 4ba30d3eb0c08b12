#!/usr/bin/env python
"""Train VLMDiff on a dataset's normal images (`vlmdiff train`; the code: vlmdiff/cli/train.py)."""

import sys

from vlmdiff.cli.train import main

if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
