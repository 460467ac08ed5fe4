"""User configuration (TOML) and config-file helpers.

The user's config file is ``$LLMHD_CONFIG`` or ``~/.config/llmhd/config.toml``. Keys used by
the core: ``workspace``, ``default_dataset``, and tables named after commands (``[train]``,
``[prepare]``) whose keys are the command's options with dashes written as underscores.
API keys may live here too (the LLM layer reads them); they are never copied elsewhere.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

try:  # Python 3.11+ has tomllib; tomli is the same parser for older versions.
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

from llmhd_cli.errors import LLMHDError

CONFIG_ENV = "LLMHD_CONFIG"
DEFAULT_DATASET = "ml-100k"


def user_config_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    return Path("~/.config/llmhd/config.toml").expanduser()


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file, turning any problem into a one-line user error."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise LLMHDError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise LLMHDError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise LLMHDError(f"{path}: invalid TOML in {what} ({exc})") from None


@lru_cache(maxsize=None)
def _cached_user_config(path: str, mtime: float) -> dict[str, Any]:
    return read_toml(Path(path), "user config")


def user_config() -> dict[str, Any]:
    """The user's config as a dict ({} when there is none)."""
    path = user_config_path()
    if not path.exists():
        return {}
    return _cached_user_config(str(path), path.stat().st_mtime)


def default_dataset() -> str:
    return str(user_config().get("default_dataset", DEFAULT_DATASET))


def command_defaults(command: str) -> dict[str, Any]:
    """The ``[command]`` table of the user config, e.g. defaults for ``llmhd train``."""
    section = user_config().get(command, {})
    if not isinstance(section, dict):
        raise LLMHDError(f"{user_config_path()}: [{command}] must be a table")
    return section
