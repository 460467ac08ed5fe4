"""The answer store (diskcache) in the LLM cache dir; the spending ledger beside it is `llmhd_cli.llm.ledger`.

Layout of a cache dir::

    answers-json/ diskcache.Cache: cache key (text) -> stored answer (JSON text)
    ledger.sqlite per (template, provider, model): calls, cache hits, failures, tokens, dollars
    answers/      the pickled store of older versions: never opened by diskcache again; its
                  plain-data entries are copied once into answers-json/ (see `migrate_legacy`)

Both are safe for several processes at once (SQLite locking underneath). API keys never
enter either: the key is a hash of what was sent, and answers hold only what came back.

Nothing read from a cache dir can run code. Whoever can write it (a shared ``--cache-dir``, a
downloaded cache) could plant a pickle, and diskcache's default `Disk` unpickles on read: the
store's `_TextDisk` keeps keys and values as text in the SQLite rows, never pickles and never
unpickles, and an entry that is not well-formed JSON of the expected shape is a counted miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

import diskcache
from diskcache.core import DEFAULT_SETTINGS, METADATA, MODE_RAW, UNKNOWN

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.safe_pickle import no_globals, restricted_loads

log = logging.getLogger(__name__)

# Bump when the key recipe or the stored dict changes shape: old entries then simply miss.
CACHE_VERSION = 1
ANSWERS_DIR = "answers-json"
LEGACY_ANSWERS_DIR = "answers"  # pickled values (diskcache's default Disk), llmhd before the JSON store
MIGRATED_MARKER = "migrated-from-answers.json"  # in ANSWERS_DIR once the legacy store was copied
_LEGACY_PICKLE_MODE = 4  # diskcache.core.MODE_PICKLE
_LEGACY_MAX_ENTRY = 64 * 2**20  # bytes; an answer is a few KB, a bigger "entry" is not one


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
                      check_circular=False)


def cache_key(provider: str, model: str, request: LLMRequest, include_variables: bool = False,
              rule_version: str = "") -> str:
    """sha256 over everything that decides the answer.

    Generative providers see only ``system`` + ``prompt`` (plus decoding params, schema and the
    logprobs flag), so ``variables`` stay out of their key; providers that compute from the
    variables (embed, oracle) pass ``include_variables=True``, and the version of the rule they
    answer the task by (``Provider.rule_versions``); without one the key is as before.
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
    if rule_version:
        parts["rule"] = rule_version
    return hashlib.sha256(_canonical(parts).encode("utf-8")).hexdigest()


@dataclass
class StoredAnswer:
    """What one paid call returned; stored as a JSON object so old entries survive class changes."""

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
    cached_input_tokens: int = 0  # of input_tokens, served from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens, written to it

    @classmethod
    def from_dict(cls, data: Any) -> StoredAnswer:
        """The answer in ``data``; `MalformedEntry` for anything not of the stored shape."""
        if not isinstance(data, dict):
            raise MalformedEntry(f"a {type(data).__name__}, not an object")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise MalformedEntry(f"no {missing[0]!r}")
        # Fields this version does not know are dropped; every known one must have its type,
        # so a crafted entry cannot reach the client as, say, a string of tokens.
        kept = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for name, check in _CHECKS.items():
            if name in kept and not check(kept[name]):
                raise MalformedEntry(f"field {name!r} is {type(kept[name]).__name__} {_short(kept[name])}")
        return cls(**kept)


class MalformedEntry(Exception):
    """A cache entry that is not an answer stored by this store (read as a miss)."""


def _is_int(v: Any) -> bool:
    return type(v) is int and v >= 0


def _is_number(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and v >= 0


def _is_logprobs(v: Any) -> bool:
    return v is None or (isinstance(v, list) and all(
        isinstance(d, dict) and all(isinstance(t, str) and type(x) in (int, float) for t, x in d.items())
        for d in v))


_REQUIRED = ("text", "input_tokens", "output_tokens", "usage_reported", "cost", "elapsed", "model")
_CHECKS: dict[str, Callable[[Any], bool]] = {
    "text": lambda v: isinstance(v, str),
    "input_tokens": _is_int,
    "output_tokens": _is_int,
    "usage_reported": lambda v: type(v) is bool,
    "cost": _is_number,
    "elapsed": _is_number,
    "model": lambda v: isinstance(v, str),
    "logprobs": _is_logprobs,
    "tokens": lambda v: v is None or (isinstance(v, list) and all(isinstance(t, str) for t in v)),
    "created": _is_number,
    "cached_input_tokens": _is_int,
    "cache_write_tokens": _is_int,
}


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(obj: Any) -> Any:
    # numpy scalars and arrays from a provider's value: store their Python equivalents.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON data")


def encode_answer(answer: StoredAnswer) -> str:
    """JSON text of an answer (TypeError for a value that is not JSON data)."""
    # Shallow on purpose: asdict() would turn a parsed dataclass value into a dict.
    return json.dumps({f.name: getattr(answer, f.name) for f in fields(answer)}, ensure_ascii=False,
                      separators=(",", ":"), default=_jsonable)


def decode_answer(text: Any) -> StoredAnswer:
    if not isinstance(text, str):
        raise MalformedEntry(f"a {type(text).__name__} value, not JSON text")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedEntry(f"not JSON ({type(exc).__name__})") from None
    return StoredAnswer.from_dict(data)


class _TextDisk(diskcache.Disk):
    """Keys and values as text in the SQLite row: nothing is pickled, nothing unpickled, no file
    is written or deleted. Anything else found in the database is a `MalformedEntry`."""

    def __init__(self, directory: str, **_settings: Any) -> None:
        # disk_* settings come from the database itself: whoever wrote it chose them; ignore.
        super().__init__(directory, min_file_size=0, pickle_protocol=0)

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError("answer store keys are strings")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if raw and type(key) is str:
            return key
        raise MalformedEntry("a key that is not text")

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, None, Any]:
        if read or type(value) is not str:
            raise TypeError("answer store values are JSON text")
        return 0, MODE_RAW, None, value

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_RAW and type(value) is str and not read:
            return value
        # Above all never diskcache's own fetch: its MODE_PICKLE unpickles, its files may be anywhere.
        raise MalformedEntry(f"stored in diskcache mode {mode!r}, not as text")

    def filename(self, key: Any = UNKNOWN, value: Any = UNKNOWN) -> tuple[str, str]:
        raise TypeError("the answer store writes no files")

    def remove(self, file_path: str) -> None:
        # Our rows have no files; a planted row's filename ("../../home/...") must not be deleted
        # when its key is overwritten or expires.
        return None


# Settings diskcache reads from the database and would act on: pinned, whatever it says.
_SETTINGS: dict[str, Any] = {
    "size_limit": 2**62,  # no eviction: evicting paid answers would make a rerun pay again
    "eviction_policy": "none",
    "cull_limit": 0,
    "statistics": 0,
    "tag_index": 0,
    "sqlite_auto_vacuum": 1,
    "sqlite_cache_size": 2**13,
    "sqlite_journal_mode": "wal",
    "sqlite_mmap_size": 2**26,
    "sqlite_synchronous": 1,
}


def _check_settings(db: Path) -> None:
    """Refuse a database whose Settings table holds keys diskcache never writes: it would turn
    them into attributes of the cache or its Disk, or run them as PRAGMAs, as written."""
    if not db.exists():
        return
    try:
        with _read_only(db) as conn:
            keys = [row[0] for row in conn.execute("SELECT key FROM Settings")]
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return
        raise LLMHDError(f"{db}: not a readable answer store ({exc}); move the folder away or delete it") from None
    known = set(DEFAULT_SETTINGS) | set(METADATA)
    unknown = sorted(repr(k) for k in keys if k not in known)
    if unknown:
        raise LLMHDError(f"{db}: unexpected setting {unknown[0]} (not written by diskcache); "
                         "move the folder away or delete it")


class _read_only:
    """A read-only SQLite connection (no file is created or changed)."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=60)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


@dataclass
class Migration:
    """What `migrate_legacy` did."""

    copied: int = 0  # plain-data answers now in the JSON store
    skipped: int = 0  # entries that were not plain-data answers (never unpickled past the first class)
    present: int = 0  # keys the JSON store had already


class AnswerStore:
    """The diskcache-backed answer store (JSON text values, see `_TextDisk`).

    ``on_malformed(key, reason)`` is called for every entry that cannot be read; `get` then
    returns None (a miss) and ``malformed`` counts them.
    """

    def __init__(self, cache_dir: Path, on_malformed: Callable[[str, str], None] | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.path = self.cache_dir / ANSWERS_DIR
        self.on_malformed = on_malformed
        self.malformed = 0
        self.migration: Migration | None = None
        self._lock = threading.Lock()
        self._bad: set[str] = set()  # keys found malformed (until overwritten)
        _check_settings(self.path / "cache.db")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(self.path), disk=_TextDisk, **_SETTINGS)
        except (OSError, sqlite3.Error) as exc:
            raise LLMHDError(f"{self.path}: cannot open the answer store ({exc})") from None
        legacy = self.cache_dir / LEGACY_ANSWERS_DIR / "cache.db"
        if legacy.exists() and not (self.path / MIGRATED_MARKER).exists():
            self.migration = migrate_legacy(self.cache_dir, self)

    def get(self, key: str) -> StoredAnswer | None:
        if key in self._bad:  # counted once; a lookup before the re-ask must not count it again
            return None
        try:
            text = self._cache.get(key)
            return None if text is None else decode_answer(text)
        except Exception as exc:  # a planted or damaged entry: a miss, counted, never a crash
            self._malformed(key, str(exc) if isinstance(exc, MalformedEntry) else f"{type(exc).__name__}: {exc}")
            return None

    def put(self, key: str, answer: StoredAnswer) -> bool:
        """Store ``answer``; False (logged) when its value is not JSON data and so cannot be cached."""
        try:
            text = encode_answer(answer)
        except (TypeError, ValueError) as exc:
            log.warning("answer for %s not cached: %s", key[:12], exc)
            return False
        self._cache.set(key, text)
        with self._lock:
            self._bad.discard(key)
        return True

    def add_text(self, key: str, text: str) -> bool:
        """Store already-encoded JSON unless the key is present (used by the migration)."""
        return bool(self._cache.add(key, text))

    def _malformed(self, key: str, reason: str) -> None:
        with self._lock:
            self._bad.add(key)
            self.malformed += 1
            first = self.malformed == 1
        if first:
            log.warning("LLM cache %s: entry %s is not a stored answer (%s); read as a miss and asked again",
                        self.path, key[:12], reason)
        else:
            log.debug("LLM cache: entry %s is not a stored answer (%s)", key[:12], reason)
        if self.on_malformed is not None:
            self.on_malformed(key, reason)

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        if self.malformed > 1:
            log.warning("LLM cache %s: %d entries were not stored answers and were read as misses",
                        self.path, self.malformed)
        self._cache.close()


def _legacy_value(row: tuple[Any, ...], legacy_dir: Path) -> bytes:
    """The pickled bytes of one legacy row (inline, or its file inside the legacy folder)."""
    _, _, _, filename, value = row
    if value is not None:
        return bytes(value)
    if not isinstance(filename, str):
        raise MalformedEntry("no value")
    path = (legacy_dir / filename).resolve()
    if legacy_dir.resolve() not in path.parents:
        raise MalformedEntry(f"file {filename!r} outside the store")
    if path.stat().st_size > _LEGACY_MAX_ENTRY:
        raise MalformedEntry("file too large")
    return path.read_bytes()


def migrate_legacy(cache_dir: Path, store: AnswerStore) -> Migration:
    """Copy the old pickled store's answers into ``store``, never running a pickle.

    Old entries are dicts of strings, numbers, booleans, None and lists: pickle builds those
    from opcodes alone, so they are read with `no_globals`, and any entry that names a class
    (the only way a pickle runs code) is refused and skipped. The old folder is only read;
    a marker file in the new store records that it was copied.
    """
    legacy_dir = Path(cache_dir) / LEGACY_ANSWERS_DIR
    result = Migration()
    try:
        with _read_only(legacy_dir / "cache.db") as conn:
            rows = conn.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
    except sqlite3.Error as exc:
        log.warning("LLM cache %s: the old store cannot be read (%s); it is ignored", legacy_dir, exc)
        return result
    for row in rows:
        key, raw, mode = row[0], row[1], row[2]
        try:
            if not (type(key) is str and raw == 1 and mode == _LEGACY_PICKLE_MODE):
                raise MalformedEntry("not an answer entry")
            answer = StoredAnswer.from_dict(restricted_loads(_legacy_value(row, legacy_dir), no_globals))
            text = encode_answer(answer)
        except Exception as exc:  # refused classes, damaged pickles, odd rows: skipped
            result.skipped += 1
            log.debug("LLM cache: old entry %r skipped (%s)", str(key)[:12], exc)
            continue
        if store.add_text(key, text):
            result.copied += 1
        else:
            result.present += 1
    marker = store.path / MIGRATED_MARKER
    tmp = marker.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"from": LEGACY_ANSWERS_DIR, "copied": result.copied, "skipped": result.skipped,
                               "present": result.present, "time": time.time()}) + "\n")
    os.replace(tmp, marker)
    log.warning("LLM cache %s: copied %d answers from the old pickled store %s/ (%d entries skipped, not plain "
                "data); the old folder is no longer read and can be deleted",
                store.path, result.copied, LEGACY_ANSWERS_DIR, result.skipped)
    return result
