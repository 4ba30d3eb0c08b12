#!/usr/bin/env python
"""Finetune the KL-f8 autoencoder on a dataset's normal training images.

`vlmdiff finetune-autoencoder`; the code: vlmdiff/cli/finetune_autoencoder.py.
"""

import sys

from vlmdiff.cli.finetune_autoencoder import main

if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
