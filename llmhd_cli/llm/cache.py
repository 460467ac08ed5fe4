"""The answer store (diskcache) and the spending ledger (SQLite), both in the LLM cache dir.

Layout of a cache dir::

    answers/      diskcache.Cache: cache key -> stored answer (a plain dict)
    ledger.sqlite per (template, provider, model): calls, cache hits, failures, tokens, dollars

Both are safe for several processes at once (SQLite locking underneath). API keys never
enter either: the key is a hash of what was sent, and answers hold only what came back.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import diskcache

from llmhd_cli.llm.base import LLMRequest

# Bump when the key recipe or the stored dict changes shape: old entries then simply miss.
CACHE_VERSION = 1
LEDGER_FILE = "ledger.sqlite"
ANSWERS_DIR = "answers"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
                      check_circular=False)


def cache_key(provider: str, model: str, request: LLMRequest, include_variables: bool = False) -> str:
    """sha256 over everything that decides the answer.

    Generative providers see only ``system`` + ``prompt`` (plus decoding params, schema and the
    logprobs flag), so ``variables`` stay out of their key; providers that compute from the
    variables (embed, oracle) pass ``include_variables=True``.
    """
    parts: dict[str, Any] = {
        "v": CACHE_VERSION,
        "provider": provider,
        "model": model,
        "template": request.template,
        "template_hash": request.template_hash,
        "task": request.task,
        "system": request.system,
        "prompt": request.prompt,
        "params": request.params,
        "schema": request.response_schema,
        "logprobs": bool(request.want_logprobs),
    }
    if include_variables:
        parts["variables"] = request.variables
    return hashlib.sha256(_canonical(parts).encode("utf-8")).hexdigest()


@dataclass
class StoredAnswer:
    """What one paid call returned; stored as a dict so old entries survive class changes."""

    text: str
    value: Any
    input_tokens: int
    output_tokens: int
    usage_reported: bool
    cost: float
    elapsed: float  # seconds the call took, retries included
    model: str
    logprobs: list[dict[str, float]] | None = None
    tokens: list[str] | None = None
    created: float = field(default_factory=time.time)
    # The template parser's value, recorded after a successful parse (for inspection and
    # reporting); the client parses ``text`` again on every read, so a fixed parser applies.
    parsed: Any = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StoredAnswer":
        try:
            return cls(**data)  # the common case: stored by this version
        except TypeError:  # an entry with fields this version does not know
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class AnswerStore:
    """The diskcache-backed answer store."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = Path(cache_dir) / ANSWERS_DIR
        self.path.mkdir(parents=True, exist_ok=True)
        # No size limit: evicting paid answers would make a rerun pay again.
        self._cache = diskcache.Cache(str(self.path), size_limit=2**62, eviction_policy="none")

    def get(self, key: str) -> StoredAnswer | None:
        data = self._cache.get(key)
        return StoredAnswer.from_dict(data) if isinstance(data, dict) else None

    def put(self, key: str, answer: StoredAnswer) -> None:
        # Shallow on purpose: asdict() would turn a parsed dataclass value into a dict.
        self._cache.set(key, {f.name: getattr(answer, f.name) for f in fields(answer)})

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()


@dataclass
class LedgerRow:
    """Totals for one (template, provider, model) over every run that used this cache dir."""

    template: str
    provider: str
    model: str
    calls: int = 0  # calls actually sent and answered (paid), re-asks included
    cache_hits: int = 0  # answers served from the cache (free)
    failures: int = 0  # requests that ended without a usable answer
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0  # US dollars
    estimated_calls: int = 0  # paid calls whose tokens were estimated, not reported by the API
    first_used: float = 0.0  # unix time
    last_used: float = 0.0


_COUNTERS = ("calls", "cache_hits", "failures", "input_tokens", "output_tokens", "cost", "estimated_calls")

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
        self._conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)

    def add(self, template: str, provider: str, model: str, **counts: float) -> None:
        unknown = set(counts) - set(_COUNTERS)
        if unknown:
            raise KeyError(f"unknown ledger counters: {sorted(unknown)}")
        values = [counts.get(c, 0) for c in _COUNTERS]
        now = time.time()
        updates = ", ".join(f"{c} = {c} + excluded.{c}" for c in _COUNTERS)
        sql = (f"INSERT INTO ledger (template, provider, model, {', '.join(_COUNTERS)}, first_used, last_used) "
               f"VALUES (?, ?, ?, {', '.join('?' for _ in _COUNTERS)}, ?, ?) "
               f"ON CONFLICT (template, provider, model) DO UPDATE SET {updates}, last_used = excluded.last_used")
        with self._lock:
            self._conn.execute(sql, [template, provider, model, *values, now, now])

    def rows(self) -> list[LedgerRow]:
        with self._lock:
            cur = self._conn.execute(
                f"SELECT template, provider, model, {', '.join(_COUNTERS)}, first_used, last_used FROM ledger "
                "ORDER BY template, provider, model")
            return [LedgerRow(*row) for row in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def read_ledger(cache_dir: Path) -> list[LedgerRow]:
    """Every ledger row of a cache dir ([] when nothing was ever spent there)."""
    if not (Path(cache_dir) / LEDGER_FILE).exists():
        return []
    ledger = Ledger(cache_dir)
    try:
        return ledger.rows()
    finally:
        ledger.close()
