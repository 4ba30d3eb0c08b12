#!/usr/bin/env python
"""Assemble the training-start VLMDiff checkpoint (`vlmdiff build-model`; the code: vlmdiff/cli/build_model.py)."""

import sys

from vlmdiff.cli.build_model import main

if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
