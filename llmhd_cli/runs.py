"""Run directories: everything needed to inspect and reproduce one training run.

    <workspace>/runs/<run-name>/
        config.toml       the resolved TrainConfig (``llmhd train --config`` reruns it)
        environment.json  versions of python, torch, recbole, llmhd; device
        log.jsonl         one line per epoch: loss, dropped samples, validation metrics, time
        model.pt          the best checkpoint (state_dict), by validation NDCG@10
        test_per_user.npz the test split's metrics per user (numpy arrays, no pickles):
                          ``users`` (RecBole's internal user ids), one float array per metric
                          (``recall@5``, ``recall@10``, ``ndcg@5``, ``ndcg@10``; their means are
                          metrics.json's ``test``) and ``split`` (a fingerprint of the test
                          split, so vectors of different splits are never paired); read it with
                          ``numpy.load(path, allow_pickle=False)`` or `evaluation.UserMetrics.load`
        metrics.json      best epoch, validation and test metrics, noise-detection summary
                          (written last: a run without it did not finish)
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w

from llmhd_cli.config import read_toml
from llmhd_cli.errors import LLMHDError

CONFIG = "config.toml"
LOG = "log.jsonl"
CHECKPOINT = "model.pt"
METRICS = "metrics.json"
PER_USER = "test_per_user.npz"
ENVIRONMENT = "environment.json"


def new_run_dir(runs_root: Path, name: str) -> Path:
    """A fresh, uniquely named run directory directly inside ``runs_root`` (timestamp prefix,
    numeric suffix on clashes); ``name`` must pass `workspace.check_name`."""
    from llmhd_cli.workspace import check_name

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = runs_root / f"{stamp}-{check_name(name, 'run folder', 'run', limit=200)}"
    path, n = base, 1
    try:
        runs_root.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                path.mkdir()  # exist_ok=False: a folder another run just made is never shared
                return path
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
    except OSError as exc:
        raise LLMHDError(f"{runs_root}: cannot create the run folder ({exc.strerror or exc})") from None


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    (run_dir / CONFIG).write_text(tomli_w.dumps(_drop_none(config)), encoding="utf-8")


def _drop_none(value: Any) -> Any:
    # TOML has no null; an absent key means "default".
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def write_environment(run_dir: Path, device: str) -> None:
    import recbole
    import torch

    from llmhd_cli import __version__

    env = {
        "llmhd": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "recbole": recbole.__version__,
        "platform": platform.platform(),
        "device": device,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (run_dir / ENVIRONMENT).write_text(json.dumps(env, indent=2), encoding="utf-8")


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with (run_dir / LOG).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    tmp = run_dir / (METRICS + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    tmp.replace(run_dir / METRICS)


@dataclass
class RunRecord:
    """A finished run as read back from its directory."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    log: list[dict[str, Any]]


def read_run(path: Path) -> RunRecord:
    path = Path(path)
    if not (path / CONFIG).exists():
        raise LLMHDError(f"{path}: not a run directory (no {CONFIG}); pass a folder made by llmhd train")
    config = read_toml(path / CONFIG, "run config")
    metrics_path = path / METRICS
    if not metrics_path.exists():
        raise LLMHDError(f"{path}: the run did not finish (no {METRICS}); train it again")
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise LLMHDError(f"{metrics_path}: unreadable metrics ({exc})") from None
    if not isinstance(metrics, dict) or not all(_numbers(metrics.get(k, {})) for k in ("test", "valid")):
        raise LLMHDError(f"{metrics_path}: unreadable metrics (expected a JSON object whose 'test' and 'valid' "
                         "map metric names to numbers)")
    return RunRecord(path, config, metrics, _read_log(path / LOG))


def _numbers(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values())


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records; a damaged line is an error naming the file and the line."""
    if not path.exists():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LLMHDError(f"{path}: unreadable log ({exc})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise LLMHDError(f"{path} line {number}: unreadable log record ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int) or isinstance(record["epoch"], bool):
            raise LLMHDError(f"{path} line {number}: unreadable log record (expected a JSON object with an integer 'epoch')")
        records.append(record)
    return records
