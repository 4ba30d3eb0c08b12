#!/usr/bin/env python
"""Test a trained VLMDiff model, or score unlabeled images with --predict.

`vlmdiff test` / `vlmdiff predict FOLDER`; the code: vlmdiff/cli/test.py.
"""

import sys

from vlmdiff.cli.test import main

if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
