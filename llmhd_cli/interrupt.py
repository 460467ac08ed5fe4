"""Ctrl-C's one line and exit code, shared by the console script (`llmhd_cli.__main__`) and the
CLI's own handler (`llmhd_cli.cli.main`). Standard library only: it is imported before the
command's (slow) imports, so a Ctrl-C during start-up is caught too."""

from __future__ import annotations

import os

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
_said = False


def say_interrupted() -> None:
    """Write "interrupted" to stderr, once per process however many Ctrl-Cs arrive."""
    global _said
    if not _said:
        _said = True
        try:
            os.write(2, b"interrupted\n")  # unbuffered: nothing is lost when the process ends right after
        except OSError:  # stderr closed: the exit code still says it
            pass
