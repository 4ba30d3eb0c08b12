"""User errors of the command-line tools as one line: ``error: <what>`` on stderr and exit status 2.

A bad setting, a missing or unreadable file, a misspelt config key: these are the user's to fix, and a
traceback hides the one line that says what to fix. ``--debug`` on the command line (or the environment
variable ``VLMDIFF_DEBUG=1``) lets the exception through with its traceback. Errors raised inside a
DataLoader worker arrive re-wrapped by torch; the original message is recovered from them.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, Sequence

from omegaconf.errors import OmegaConfBaseException

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, KeyError,
               OmegaConfBaseException)
DEBUG_FLAG = "--debug"
EXIT_USER_ERROR = 2

# torch re-raises a worker's exception as the same type with "Caught X in DataLoader worker process N.
# Original Traceback (most recent call last): ..." as its message; the last line is the original message.
_WORKER = re.compile(r"Caught \w+ in DataLoader worker process \d+")


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get("VLMDIFF_DEBUG", "").strip().lower() in ("1", "true", "yes")


def _root_cause(err: BaseException) -> BaseException:
    """The innermost user error of a chain raised with ``raise ... from ...`` inside worker wrappers."""
    while _WORKER.search(str(err)) and err.__cause__ is not None:
        err = err.__cause__
    return err


def user_message(err: BaseException) -> str:
    """One line: the error's message (a DataLoader worker's wrapping removed, KeyError quotes removed)."""
    err = _root_cause(err)
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if _WORKER.search(text):
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else text
        text = re.sub(r"^\w+(\.\w+)*(Error|Exception): ", "", text)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if isinstance(err, OmegaConfBaseException):  # "...\n    full_key: x\n    object_type=..."
        key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
        text = f"{key}: {lines[0]}" if key and lines and key not in lines[0] else (lines[0] if lines else "")
        lines = [text]
    one = " ".join(lines[:1]) if lines else type(err).__name__
    return one.strip()


def is_user_error(err: BaseException) -> bool:
    return isinstance(_root_cause(err), USER_ERRORS)


def cli_main(main_fn: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main_fn(argv)`` (``--debug`` removed) and return its exit status; a user error prints
    ``error: <message>`` on stderr and returns 2, unless debugging is on."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        status = main_fn(argv)
    except Exception as err:  # noqa: BLE001 - filtered just below
        if debug or not is_user_error(err):
            raise
        print(f"error: {user_message(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0 if status is None else int(status)
