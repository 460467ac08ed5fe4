"""``python -m llmhd_cli`` and the ``llmhd`` console script.

Only the standard library (and the stdlib-only `llmhd_cli.interrupt`) is imported here, so a Ctrl-C during start-up (a command's imports of
the plugins, torch and RecBole take seconds; ``--version`` loads none of them) is caught too:
one line, exit code 130.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

from llmhd_cli.interrupt import INTERRUPTED, say_interrupted


def _exit_now(signum: int, frame: object) -> None:
    say_interrupted()
    os._exit(INTERRUPTED)


def run() -> NoReturn:
    """Run the CLI and exit with its code: 0, 2 for user errors, 130 for Ctrl-C."""
    try:
        try:
            from llmhd_cli.cli import main  # seconds of imports: Ctrl-C may well land here

            main()
        except KeyboardInterrupt:  # before or after cli.main's own handler
            say_interrupted()
            sys.exit(INTERRUPTED)
        sys.exit(0)
    finally:
        # Only the interpreter's shutdown is left (atexit, thread joins): a Ctrl-C there ends
        # the process at once instead of printing "Exception ignored ..." tracebacks.
        signal.signal(signal.SIGINT, _exit_now)


if __name__ == "__main__":
    run()
