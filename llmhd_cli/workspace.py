"""Where prepared datasets, runs and the LLM cache live.

Resolution order: the ``--workspace`` flag, then ``LLMHD_WORKSPACE``, then ``workspace`` in
the user's config file, then ``./llmhd-workspace``.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmhd_cli.config import user_config

ENV_VAR = "LLMHD_WORKSPACE"


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
