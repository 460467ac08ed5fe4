"""Where prepared datasets, runs and the LLM cache live, and the names that may live there.

Resolution order: the ``--workspace`` flag, then ``LLMHD_WORKSPACE``, then ``workspace`` in
the user's config file, then ``./llmhd-workspace``.

Dataset and run names become folder (and file) names under the workspace, so every command
that takes one checks it with `check_name` before it reads or writes anything: a name is one
path component of plain characters, never ``..``, a path or an absolute path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from llmhd_cli.config import user_config
from llmhd_cli.errors import LLMHDError

ENV_VAR = "LLMHD_WORKSPACE"

MAX_NAME = 100  # a run folder adds a timestamp and the backbone/objective/denoiser to it
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def resolve_workspace(flag: str | os.PathLike | None = None) -> Path:
    if flag:
        return Path(flag).expanduser().resolve()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().resolve()
    configured = user_config().get("workspace")
    if configured:
        return Path(configured).expanduser().resolve()
    return (Path.cwd() / "llmhd-workspace").resolve()


def datasets_dir(workspace: Path) -> Path:
    return workspace / "datasets"


def runs_dir(workspace: Path) -> Path:
    return workspace / "runs"


def experiments_dir(workspace: Path) -> Path:
    return workspace / "experiments"


def all_runs_dirs(workspace: Path) -> list[Path]:
    """Every folder of run folders in the workspace: ``runs/`` (``llmhd train``) and each
    experiment's ``experiments/<name>/runs/`` (``llmhd experiment run``)."""
    experiments = experiments_dir(workspace)
    grids = sorted(p / "runs" for p in experiments.iterdir() if (p / "runs").is_dir()) if experiments.is_dir() else []
    return [runs_dir(workspace), *grids]


def _shown(value: object) -> str:
    # repr escapes newlines and control characters, so the error stays one readable line.
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + "..." + text[-12:]


def check_name(name: object, what: str = "--dataset", noun: str = "dataset", limit: int = MAX_NAME) -> str:
    """``name`` if it is a usable dataset or run name, else an `LLMHDError` naming ``what``.

    Letters, digits, '.', '_' and '-', starting with a letter or digit (so never '', '.',
    '..', a hidden name or a path), at most ``limit`` characters.
    """
    rule = "letters, digits, '.', '_', '-', starting with a letter or digit; no paths"
    if not isinstance(name, str) or not name:
        raise LLMHDError(f"{what} {_shown(name)}: a {noun} name is needed ({rule})")
    if len(name) > limit:
        raise LLMHDError(f"{what} {_shown(name)}: {noun} name too long ({len(name)} characters, at most {limit})")
    if not _NAME.fullmatch(name):  # fullmatch: '$' would let a trailing newline through
        raise LLMHDError(f"{what} {_shown(name)}: not a usable {noun} name ({rule})")
    return name


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` (expanded) if it is a folder llmhd can write into, or one it can create.

    Checked without writing anything: a file in the way (``path`` or one of its parents) or
    a folder that cannot be written is an `LLMHDError` naming ``what``.
    """
    path = Path(path).expanduser()
    probe = Path(os.path.abspath(path))
    if os.path.lexists(probe):
        if not probe.is_dir():
            raise LLMHDError(f"{what} {path}: not a folder (a file is in the way)")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise LLMHDError(f"{what} {path}: folder is not writable")
        return path
    parent = probe.parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise LLMHDError(f"{what} {path}: cannot create it, {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LLMHDError(f"{what} {path}: cannot create it, {parent} is not writable")
    return path
