"""Lets ``python scripts/<name>.py`` run from a checkout that is not installed with ``pip install -e .``.

Python puts the script's own folder (scripts/) on ``sys.path``, not the repository root that holds the
packages ``ldm``, ``vlmdiff`` and ``utils``. The scripts import this module first, only when run as scripts.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root; the one sys.path edit
