"""User configuration (TOML), config-file helpers and `TrainConfig`, the schema of a run's config.

The user's config file is ``$LLMHD_CONFIG`` or ``~/.config/llmhd/config.toml``. Keys used by
the core: ``workspace``, ``default_dataset``, and tables named after commands (``[train]``,
``[prepare]``) whose keys are the command's options with dashes written as underscores.
API keys may live here too (the LLM layer reads them); they are never copied elsewhere.

Values read from TOML are type-checked where they are read, so a wrong type is a one-line
error naming the file and the key instead of a traceback deep in training.
"""

from __future__ import annotations

import math
import os
import typing
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

try:  # Python 3.11+ has tomllib; tomli is the same parser for older versions.
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from llmhd_cli.errors import LLMHDError

CONFIG_ENV = "LLMHD_CONFIG"
DEFAULT_DATASET = "ml-100k"

_KIND_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table",
               list: "an array"}


def _describe(value: Any) -> str:
    kind = next((name for t, name in _KIND_NAMES.items() if isinstance(value, t)), type(value).__name__)
    shown = str(value).lower() if isinstance(value, bool) else repr(value)
    return f"{shown} ({kind})"


def check_value(value: Any, kind: type, where: str, key: str) -> Any:
    """``value`` as ``kind`` (int, float, str, bool or dict), or an `LLMHDError` naming ``where`` and ``key``.

    TOML is strict, and so is this: an int is an int and never a bool (Python's bool is an
    int subclass); a float accepts an int and comes back as a float, but never NaN or inf;
    a dict is a TOML table.
    """
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise LLMHDError(f"{where}: '{key}' must be a finite number, got {value}")
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise LLMHDError(f"{where}: '{key}' must be {_KIND_NAMES.get(kind, kind.__name__)}, got {_describe(value)}")
    return value


@dataclass
class TrainConfig:
    """Everything that defines a run; written to the run directory as config.toml.

    Defaults are the paper's: batch 1024, learning rate 0.005, Adam, at most 200 epochs,
    early stopping on validation NDCG@10.
    """

    dataset: str = "ml-100k"
    backbone: str = "lightgcn"
    objective: str = "bpr"
    denoiser: str = "none"
    epochs: int = 200
    batch_size: int = 1024  # samples per mini-batch, as RecBole's train_batch_size (see training.pairs_per_batch)
    learning_rate: float = 0.005
    weight_decay: float = 0.0
    early_stop: int = 10  # evaluations without improvement before stopping; 0 disables
    eval_every: int = 1
    valid_metric: str = "ndcg@10"
    seed: int = 2024
    device: str = "auto"
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default (one per core)
    backbone_params: dict[str, Any] = field(default_factory=dict)  # RecBole settings of the model
    denoiser_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_kinds(cls) -> dict[str, type]:
        """Each field's plain type (``dict[str, Any]`` -> dict)."""
        hints = typing.get_type_hints(cls)
        return {f.name: typing.get_origin(hints[f.name]) or hints[f.name] for f in fields(cls)}

    @classmethod
    def check_keys(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        """``data`` with known keys only and values of the right types (ints given for floats become floats)."""
        kinds = cls.field_kinds()
        unknown = sorted(set(data) - set(kinds))
        if unknown:
            raise LLMHDError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(kinds))})")
        return {key: check_value(value, kinds[key], where, key) for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        """A checked config: known keys, right types (errors name ``where``), then `validate`."""
        config = cls(**cls.check_keys(data, where))
        config.validate()
        return config

    def validate(self) -> None:
        """Value checks; messages name the flag (a file's key is the flag without dashes)."""
        from llmhd_cli.objectives import OBJECTIVES

        if self.objective not in OBJECTIVES:
            raise LLMHDError(f"--objective: expected one of {', '.join(OBJECTIVES)}, got '{self.objective}'")
        if self.threads < 0:
            raise LLMHDError(f"--threads: must be 0 (torch's default) or more, got {self.threads}")
        if self.early_stop < 0:
            raise LLMHDError(f"--early-stop: must be 0 (disabled) or more, got {self.early_stop}")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise LLMHDError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(self, name)}")
        # Flags come here unchecked by check_value: click's float type accepts "nan" and "inf".
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise LLMHDError(f"--learning-rate: must be a finite number > 0, got {self.learning_rate}")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise LLMHDError(f"--weight-decay: must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.seed < 2**32:  # numpy's seeding range
            raise LLMHDError(f"--seed: must be in [0, 2^32), got {self.seed}")
        metric, _, k = self.valid_metric.partition("@")
        if metric not in ("recall", "ndcg") or not k.isdigit() or int(k) < 1:
            raise LLMHDError(f"--valid-metric: expected recall@K or ndcg@K, got '{self.valid_metric}'")


# Tables of the user config checked against a schema when read (see command_defaults).
_COMMAND_SCHEMAS: dict[str, type[TrainConfig]] = {"train": TrainConfig}


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


@cache
def _cached_user_config(path: str, mtime: float) -> dict[str, Any]:
    config = read_toml(Path(path), "user config")
    for key in ("workspace", "default_dataset"):
        if key in config:
            check_value(config[key], str, path, key)
    return config


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
    if command in _COMMAND_SCHEMAS:
        section = _COMMAND_SCHEMAS[command].check_keys(section, f"{user_config_path()} [{command}]")
    return section


def train_config(config_file: Path | None, flags: dict[str, Any], backbone_settings: dict[str, Any]) -> TrainConfig:
    """The run's config from its sources, each checked on its own so an error names its source:
    flags win over ``--config FILE``, the file over the user config's ``[train]``, and
    ``--set`` values are merged into the file's ``backbone_params``."""
    merged: dict[str, Any] = {"dataset": default_dataset(), **command_defaults("train")}
    if config_file is not None:
        merged.update(TrainConfig.check_keys(read_toml(config_file, "train config"), str(config_file)))
    merged.update(TrainConfig.check_keys(flags, "command line"))
    merged["backbone_params"] = {**merged.get("backbone_params", {}), **backbone_settings}
    return TrainConfig.from_dict(merged, where="train settings")
