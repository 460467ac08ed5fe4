"""The price table: dollars per million input and output tokens, per provider and model.

The built-in table is ``prices.toml`` beside this module; a user file (``[llm] prices`` in the
user config, or ``LLMHD_PRICES``) overrides it model by model. A model with no entry (and no
``"*"`` entry for its provider) costs 0, with one warning: the budget cannot guard it.

The ``[batch]`` table gives, per provider, the fraction of these prices a request sent through
its batch API pays (``cost(..., batch=True)``; 1.0 for a provider without an entry).

Prompt-prefix caching: an entry may also give ``cached_input`` (the price of input tokens the
provider served from its prompt cache: OpenAI's cached input, Anthropic's cache reads) and
``cache_write`` (input tokens written to the cache: Anthropic's cache writes). A call whose
provider reports such tokens (`LLMResponse.cached_input_tokens`, ``cache_write_tokens``, both
part of ``input_tokens``) pays those prices for them; without an entry they cost the input price.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from llmhd_cli.config import read_toml
from llmhd_cli.errors import LLMHDError

log = logging.getLogger(__name__)

WILDCARD = "*"
BATCH_TABLE = "batch"  # provider -> fraction of the list price a batch API request pays


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens; cached input and cache writes at their own prices when given."""

    input: float
    output: float
    cached_input: float | None = None  # input tokens read from the provider's prompt cache
    cache_write: float | None = None  # input tokens written to it (Anthropic)

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """Dollars for a call; ``cached_input_tokens`` and ``cache_write_tokens`` are part of ``input_tokens``."""
        cached = min(max(int(cached_input_tokens), 0), input_tokens)
        written = min(max(int(cache_write_tokens), 0), input_tokens - cached)
        read_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        return ((input_tokens - cached - written) * self.input + cached * read_rate + written * write_rate
                + output_tokens * self.output) / 1_000_000


@dataclass
class PriceTable:
    """provider -> model -> Price."""

    prices: dict[str, dict[str, Price]] = field(default_factory=dict)
    batch_factors: dict[str, float] = field(default_factory=dict)
    _warned: set[tuple[str, str]] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "price table") -> PriceTable:
        table = cls()
        table.update(data, source)
        return table

    def update(self, data: dict[str, Any], source: str = "price table") -> None:
        """Merge ``{provider: {model: {input, output}}}`` into this table (later wins)."""
        for provider, models in data.items():
            if provider == BATCH_TABLE and isinstance(models, dict):
                for name, factor in models.items():
                    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor <= 1:
                        raise LLMHDError(f"{source}: [batch] {name} must be a number from 0 to 1 (the fraction of "
                                         f"the list price a batch request pays), got {factor!r}")
                    self.batch_factors[name] = float(factor)
                continue
            if not isinstance(models, dict):
                raise LLMHDError(f"{source}: [{provider}] must be a table of models")
            for model, entry in models.items():
                raw = [entry.get(k) if isinstance(entry, dict) else None for k in ("input", "output")]
                # TOML reads nan and inf as floats, and a bool would pass float(): none is a price.
                values = [float(v) for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)]
                if len(values) != 2:
                    raise LLMHDError(f"{source}: {provider}.{model} needs numeric 'input' and 'output' "
                                     "($ per million tokens)")
                if not all(math.isfinite(v) and v >= 0 for v in values):
                    raise LLMHDError(f"{source}: {provider}.{model}: prices must be finite and not negative, "
                                     f"got input {raw[0]}, output {raw[1]}")
                cache_prices: list[float | None] = []
                for key in ("cached_input", "cache_write"):
                    value = entry.get(key)
                    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                              or not math.isfinite(value) or value < 0):
                        raise LLMHDError(f"{source}: {provider}.{model}: '{key}' must be a finite, not negative "
                                         f"number ($ per million tokens), got {value!r}")
                    cache_prices.append(None if value is None else float(value))
                self.prices.setdefault(provider, {})[model] = Price(values[0], values[1], *cache_prices)

    def get(self, provider: str, model: str) -> Price | None:
        models = self.prices.get(provider, {})
        return models.get(model) or models.get(WILDCARD)

    def batch_factor(self, provider: str) -> float:
        """The fraction of the list price a request through ``provider``'s batch API pays."""
        return self.batch_factors.get(provider, 1.0)

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int, batch: bool = False, *,
             cached_input_tokens: int = 0, cache_write_tokens: int = 0) -> float:
        """Dollars for these tokens; ``batch``: sent through the provider's batch API; the cached and
        cache-write tokens (part of ``input_tokens``) at the entry's cache prices."""
        price = self.get(provider, model)
        if price is None:
            if (provider, model) not in self._warned:
                self._warned.add((provider, model))
                log.warning("no price for %s/%s in the price table: its cost counts as 0 and "
                            "--max-cost cannot limit it", provider, model)
            return 0.0
        return (price.cost(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens)
                * (self.batch_factor(provider) if batch else 1.0))

    def rows(self) -> list[tuple[str, str, Price]]:
        return [(p, m, price) for p, models in sorted(self.prices.items()) for m, price in sorted(models.items())]


def builtin_prices() -> PriceTable:
    text = resources.files("llmhd_cli.llm").joinpath("prices.toml").read_text(encoding="utf-8")
    from llmhd_cli.config import tomllib  # tomli before Python 3.11

    return PriceTable.from_dict(tomllib.loads(text), "built-in prices.toml")


def load_prices(override: Path | str | None = None) -> PriceTable:
    """The built-in table, updated with the user's file when one is given."""
    table = builtin_prices()
    if override:
        path = Path(override).expanduser()
        table.update(read_toml(path, "price file"), str(path))
    return table
