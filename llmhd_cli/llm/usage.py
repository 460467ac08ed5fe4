"""One counter type for LLM use: `Usage`, and `UsageMeter`, its per-phase totals.

Every place that counts what the LLM was asked and what it cost (the client's `RunStats`,
the ledger's rows, summarize's table rows, what ``llmhd cost --spent`` shows, the llmhd
judge's epoch counters in ``log.jsonl``) carries these counters, with these names:

- ``calls``: provider calls that were answered (paid), re-asks included;
- ``cache_hits``: answers served from the cache (free);
- ``failures``: requests that ended without a usable answer (budget stops not included);
- ``input_tokens`` / ``output_tokens``: tokens of the paid calls;
- ``cost``: US dollars paid;
- ``estimated_calls``: paid calls whose tokens were counted by llmhd, not reported by the API.

A *phase* is the template a request was rendered from (``books/summarize`` is T_sum,
``books/score`` T_score, ``books/update_fp`` / ``books/update_fn`` T_fp / T_fn); `phase_of`
names it the way the paper's Table 4 does. `UsageMeter` is the one way to get a phase's
usage over a stretch of work: ``before = meter.snapshot()`` ... ``meter.since(before)``.

Serialized as a flat JSON object of the counter names (`Usage.as_dict`), read back leniently
(`Usage.from_mapping`: unknown keys ignored, a missing or non-numeric counter is 0), so ledger
rows, ``llm_spent.jsonl`` lines and ``log.jsonl`` records of older versions stay readable.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

COUNTERS: tuple[str, ...] = ("calls", "cache_hits", "failures", "input_tokens", "output_tokens", "cost",
                             "estimated_calls")

# Task of a template (the part after the set name) -> the paper's name of its phase.
PHASE_NAMES: dict[str, str] = {
    "summarize": "T_sum",
    "item_profile": "T_item",
    "score": "T_score",
    "score_list": "T_score",  # listwise: several items of one user per prompt
    "update_fp": "T_fp",
    "update_fn": "T_fn",
}


def phase_of(template: str) -> str:
    """The paper's name of a template's phase (``books/score`` -> ``T_score``); else the template's task."""
    task = template.rsplit("/", 1)[-1]
    return PHASE_NAMES.get(task, task)


def _number(value: object, kind: type) -> int | float:
    """``value`` as ``kind`` when it is a finite number (not a bool), else 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return kind(0)
    return kind(value)


@dataclass
class Usage:
    """What LLM calls used: counts, tokens, dollars. Add with ``+``, subtract with ``-``.

    Classes that carry more (a row's template and model, the client's retries) subclass it;
    ``+`` and ``-`` give a plain `Usage` of the counters, `add` adds into any of them in place.
    """

    calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    estimated_calls: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, object] | None) -> Usage:
        """The counters in a JSON-like mapping; missing or non-numeric ones are 0, others ignored."""
        if not isinstance(data, Mapping):
            return Usage()
        counts = {name: _number(data.get(name, 0), float if name == "cost" else int) for name in COUNTERS}
        return Usage(int(counts["calls"]), int(counts["cache_hits"]), int(counts["failures"]),
                     int(counts["input_tokens"]), int(counts["output_tokens"]), float(counts["cost"]),
                     int(counts["estimated_calls"]))

    def usage(self) -> Usage:
        """Just the counters (a copy), whatever subclass ``self`` is."""
        return Usage(**{name: getattr(self, name) for name in COUNTERS})

    def as_dict(self) -> dict[str, int | float]:
        """The counters as a flat mapping (the serialized form)."""
        return {name: getattr(self, name) for name in COUNTERS}

    def add(self, other: Usage | Mapping[str, object]) -> None:
        """Add ``other``'s counters (a `Usage`, or a mapping read with `from_mapping`) into ``self``."""
        more = other if isinstance(other, Usage) else Usage.from_mapping(other)
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(more, name))

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in COUNTERS})

    def __sub__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(**{name: getattr(self, name) - getattr(other, name) for name in COUNTERS})

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    @property
    def empty(self) -> bool:
        """True when every counter is 0 (nothing was asked)."""
        return not any(getattr(self, name) for name in COUNTERS)


def usage_sum(items: Iterable[Usage]) -> Usage:
    """The sum of the counters of `Usage`s (subclasses too)."""
    total = Usage()
    for item in items:
        total.add(item)
    return total


class UsageMeter:
    """Usage per phase (template name), safe to add to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[str, Usage] = {}

    def add(self, phase: str, usage: Usage | None = None, **counts: int | float) -> None:
        """Add ``usage`` and/or named counters (``calls=1, cost=0.002``) to ``phase``."""
        unknown = set(counts) - set(COUNTERS)
        if unknown:
            raise KeyError(f"unknown usage counters: {sorted(unknown)}")
        with self._lock:
            total = self._phases.setdefault(phase, Usage())
            if usage is not None:
                total.add(usage)
            for name, value in counts.items():
                setattr(total, name, getattr(total, name) + value)

    def snapshot(self) -> dict[str, Usage]:
        """A copy of every phase's usage so far."""
        with self._lock:
            return {phase: usage.usage() for phase, usage in self._phases.items()}

    def since(self, before: Mapping[str, Usage]) -> dict[str, Usage]:
        """Each phase's usage after the ``before`` snapshot (phases with nothing new left out)."""
        out = {}
        for phase, usage in self.snapshot().items():
            delta = usage - before.get(phase, Usage())
            if not delta.empty:
                out[phase] = delta
        return out

    def phase(self, phase: str) -> Usage:
        """One phase's usage so far (a copy; zero for a phase never used)."""
        with self._lock:
            return self._phases.get(phase, Usage()).usage()

    def total(self) -> Usage:
        """All phases together."""
        return usage_sum(self.snapshot().values())
