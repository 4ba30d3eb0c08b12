#!/usr/bin/env python
"""Caption a dataset's images with a VLM (`vlmdiff caption`; the code: vlmdiff/cli/captioner.py)."""

import sys

from vlmdiff.cli.captioner import main

if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
