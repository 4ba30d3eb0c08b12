#!/usr/bin/env python
"""The whole VLMDiff pipeline on a CPU in minutes (`vlmdiff demo`; the command line: vlmdiff/cli/demo.py, the
code: vlmdiff/pipelines/demo.py)."""

import sys

if __name__ == "__main__":
    import _checkout  # noqa: F401  (a checkout run as `python scripts/demo.py`: the repository root on sys.path)

from vlmdiff.cli.demo import main  # noqa: E402

if __name__ == "__main__":
    from vlmdiff.errors import cli_main

    sys.exit(cli_main(main))
