"""Spending records, all in one place: the ledger of a cache dir and what each dataset's runs spent.

Three records, each read by ``llmhd cost --spent``, each counting with `llmhd_cli.llm.usage.Usage`:

- the **ledger** (``<cache dir>/ledger.sqlite``): per (template, provider, model), over every
  run that used the cache dir, what the client sent (`Ledger`, written by
  `llmhd_cli.llm.client.LLMClient` as each answer arrives; `read_ledger`, `ledger_spending`);
- **summarize's rows** (``<dataset>/llm_spent.jsonl``): one line per template of each finished
  ``llmhd summarize`` (`record_spending`);
- **training runs** (``<workspace>/runs/*/log.jsonl`` and each experiment's
  ``experiments/<name>/runs/*/log.jsonl``): each epoch's ``denoiser.llm`` counters, the judge's
  use in that epoch (`training_spending`).

`dataset_spending` adds the last two up per (template, provider, model).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhd_cli.datasets import SPENT
from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.usage import COUNTERS, Usage, usage_sum

if TYPE_CHECKING:
    from llmhd_cli.datasets import PreparedDataset

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
SPENT_FILE = SPENT  # in the dataset folder (PreparedDataset.spent_file)
# A training run logs its LLM use per epoch summed over its templates (T_score, T_fp, T_fn).
TRAIN_TEMPLATE = "train: score, update_fp, update_fn"
NOT_RECORDED = "(default)"  # a run that named no provider/model used the settings' defaults of its time


# ----------------------------------------------------------------------------- the ledger


@dataclass(kw_only=True)
class LedgerRow(Usage):
    """Totals for one (template, provider, model) over every run that used this cache dir."""

    template: str
    provider: str
    model: str
    first_used: float = 0.0  # unix time
    last_used: float = 0.0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    template TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0, cache_hits INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, cost REAL NOT NULL DEFAULT 0,
    estimated_calls INTEGER NOT NULL DEFAULT 0,
    first_used REAL NOT NULL, last_used REAL NOT NULL,
    PRIMARY KEY (template, provider, model)
)
"""


class Ledger:
    """Persistent counters; each `add` is one atomic UPSERT, so concurrent processes add up."""

    def __init__(self, cache_dir: Path) -> None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(cache_dir) / LEDGER_FILE
        self._lock = threading.Lock()
        # Plain SQLite columns: no converters (detect_types=0), so nothing is ever unpickled here.
        self._conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            self._conn.execute(f"SELECT template, provider, model, {', '.join(COUNTERS)}, first_used, last_used "
                               "FROM ledger LIMIT 0")
        except sqlite3.Error as exc:
            self._conn.close()
            raise LLMHDError(f"{self.path}: not an llmhd ledger ({exc}); move it away or delete it") from None

    def add(self, template: str, provider: str, model: str, usage: Usage | None = None, **counts: float) -> None:
        """Add ``usage`` and/or named counters (``calls=1, cost=0.002``) to the row of (template, provider, model)."""
        unknown = set(counts) - set(COUNTERS)
        if unknown:
            raise KeyError(f"unknown ledger counters: {sorted(unknown)}")
        base = usage.as_dict() if usage is not None else dict.fromkeys(COUNTERS, 0)
        values = [base[c] + counts.get(c, 0) for c in COUNTERS]
        now = time.time()
        updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTERS)
        sql = (f"INSERT INTO ledger (template, provider, model, {', '.join(COUNTERS)}, first_used, last_used) "
               f"VALUES (?, ?, ?, {', '.join('?' for _ in COUNTERS)}, ?, ?) "
               f"ON CONFLICT (template, provider, model) DO UPDATE SET {updates}, last_used = excluded.last_used")
        with self._lock:
            self._conn.execute(sql, [template, provider, model, *values, now, now])

    def rows(self) -> list[LedgerRow]:
        with self._lock:
            cur = self._conn.execute(
                f"SELECT template, provider, model, {', '.join(COUNTERS)}, first_used, last_used FROM ledger "
                "ORDER BY template, provider, model")
            return [_ledger_row(row) for row in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _number(value: Any, kind: type) -> Any:
    # SQLite keeps whatever type was written; a value planted as text must not reach the tables
    # as one (formatting it as a number would crash): numbers that are not numbers read as 0.
    if type(value) in (int, float) and math.isfinite(value):
        return kind(value)
    return kind(0)


def _ledger_row(row: tuple[Any, ...]) -> LedgerRow:
    template, provider, model = (str(v) for v in row[:3])
    counts = {c: _number(v, float if c == "cost" else int) for c, v in zip(COUNTERS, row[3:], strict=False)}
    return LedgerRow(template=template, provider=provider, model=model, **counts,
                     first_used=_number(row[-2], float), last_used=_number(row[-1], float))


def read_ledger(cache_dir: Path) -> list[LedgerRow]:
    """Every ledger row of a cache dir ([] when nothing was ever spent there)."""
    if not (Path(cache_dir) / LEDGER_FILE).exists():
        return []
    ledger = Ledger(cache_dir)
    try:
        return ledger.rows()
    finally:
        ledger.close()


# ----------------------------------------------------------------------------- spent per dataset


@dataclass(init=False)
class SpentRow(Usage):
    """Spending for one (template, provider, model), over ``runs`` runs.

    Built as ``SpentRow(template, provider, model, calls, cache_hits, failures, input_tokens,
    output_tokens, cost, runs)``, the order of ``llmhd cost --spent``'s columns.
    """

    template: str = ""
    provider: str = ""
    model: str = ""
    runs: int = 0

    def __init__(self, template: str, provider: str, model: str, calls: int = 0, cache_hits: int = 0,
                 failures: int = 0, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0,
                 runs: int = 0, estimated_calls: int = 0) -> None:
        super().__init__(calls, cache_hits, failures, input_tokens, output_tokens, cost, estimated_calls)
        self.template, self.provider, self.model, self.runs = template, provider, model, runs


def spent_total(rows: Iterable[SpentRow], label: str = "total") -> SpentRow:
    """One row adding up ``rows`` (their runs too)."""
    rows = list(rows)
    total = SpentRow(label, "", "", runs=sum(r.runs for r in rows))
    total.add(usage_sum(rows))
    return total


def record_spending(dataset: PreparedDataset, rows: Iterable[Usage]) -> None:
    """Append one line per template of a finished run to ``<dataset>/llm_spent.jsonl``.

    ``rows`` are `Usage`s that also have template, provider and model attributes (e.g.
    `llmhd_cli.summarize.TemplateStats`).
    """
    path = dataset.spent_file
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            keys = {k: str(getattr(row, k)) for k in ("template", "provider", "model")}
            f.write(json.dumps({"time": time.time(), **keys, **row.as_dict()}) + "\n")


def dataset_spending(dataset: PreparedDataset, runs_roots: Sequence[Path] | None = None) -> list[SpentRow]:
    """Totals per (template, provider, model) of every run on this dataset: summarize's recorded
    rows and the training runs under ``runs_roots`` (see `training_spending`)."""
    path = dataset.spent_file
    totals: dict[tuple[str, str, str], SpentRow] = {}
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                data = json.loads(line)
                key = (data["template"], data["provider"], data["model"])
                row = totals.setdefault(key, SpentRow(*key))
                row.add(Usage.from_mapping(data))
                row.runs += 1
    for row in training_spending(dataset, runs_roots):
        key = (row.template, row.provider, row.model)
        total = totals.setdefault(key, SpentRow(*key))
        total.add(row)
        total.runs += row.runs
    return [totals[k] for k in sorted(totals)]


def training_spending(dataset: PreparedDataset, runs_roots: Sequence[Path] | None = None) -> list[SpentRow]:
    """What the training runs on this dataset spent, per provider/model, from their logs.

    Every run folder under ``runs_roots`` (default: the workspace's ``runs/`` and every
    experiment's runs, `llmhd_cli.workspace.all_runs_dirs`) whose config names the dataset
    counts, finished or not (an interrupted run paid for its calls too), with the
    ``llm`` counters its denoiser logged each epoch (the llmhd denoiser logs its judge's).
    Runs that spent nothing (another denoiser, a cost dry run) add no row.
    """
    from llmhd_cli.config import read_toml
    from llmhd_cli.workspace import all_runs_dirs

    roots = runs_roots if runs_roots is not None else all_runs_dirs(Path(dataset.path).parent.parent)
    totals: dict[tuple[str, str, str], SpentRow] = {}
    for run in (run for root in roots if root.is_dir() for run in sorted(root.iterdir())):
        if not (run / "config.toml").is_file():
            continue
        try:
            config = read_toml(run / "config.toml", "run config")
        except LLMHDError as exc:  # one broken folder must not hide what the others spent
            log.warning("cost --spent: skipped %s", exc)
            continue
        if config.get("dataset") != dataset.name:
            continue
        used = logged_llm_use(run / "log.jsonl")
        if used.empty:
            continue
        params = config.get("denoiser_params")
        params = params if isinstance(params, dict) else {}
        key = (TRAIN_TEMPLATE, str(params.get("provider") or NOT_RECORDED), str(params.get("model") or NOT_RECORDED))
        row = totals.setdefault(key, SpentRow(*key))
        row.add(used)
        row.runs += 1
    return [totals[k] for k in sorted(totals)]


def logged_llm_use(path: Path) -> Usage:
    """The sum of the ``denoiser.llm`` counters over a run's epoch records (``log.jsonl``)."""
    used = Usage()
    if not path.is_file():
        return used
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by an interrupted write
            continue
        extra = record.get("denoiser") if isinstance(record, dict) else None
        llm = extra.get("llm") if isinstance(extra, dict) else None
        if isinstance(llm, dict):
            used.add(Usage.from_mapping(llm))
    return used


def ledger_spending(cache_dir: Path) -> list[SpentRow]:
    """The client's ledger of a cache dir as `SpentRow`s."""
    rows = []
    for r in read_ledger(cache_dir):
        row = SpentRow(r.template, r.provider, r.model)
        row.add(r)
        rows.append(row)
    return rows
