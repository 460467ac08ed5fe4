"""Resolve LLM settings: command-line flag > environment variable > user config ``[llm]``.

User config keys (``~/.config/llmhd/config.toml`` or ``$LLMHD_CONFIG``)::

    [llm]
    provider = "openai"          # LLMHD_PROVIDER
    model = "gpt-4o-mini"        # LLMHD_MODEL (config model/base_url apply to the config's provider only)
    base_url = "http://127.0.0.1:8080/v1"   # LLMHD_BASE_URL, then OPENAI_BASE_URL / ANTHROPIC_BASE_URL
    cache_dir = "~/llmhd-cache"  # LLMHD_LLM_CACHE; default <workspace>/llm-cache
    concurrency = 4              # LLMHD_CONCURRENCY
    max_cost = 5.0               # LLMHD_MAX_COST (US dollars per run; unset: no limit)
    max_retries = 5              # LLMHD_MAX_RETRIES
    timeout = 60                 # LLMHD_TIMEOUT (seconds per call)
    prices = "~/my-prices.toml"  # LLMHD_PRICES (overrides the built-in price table)
    context_window = 8192        # LLMHD_CONTEXT_WINDOW: the model's tokens; prompts are cut to fit

    [llm.api_keys]
    openai = "sk-..."            # used only when OPENAI_API_KEY is not set

API keys come only from the environment or the user config, never from flags (which land in
shell history and process lists), and are never written anywhere by llmhd.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhd_cli.config import user_config, user_config_path
from llmhd_cli.errors import LLMHDError

DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_RETRIES = 5
DEFAULT_TIMEOUT = 60.0
CACHE_SUBDIR = "llm-cache"

ENV = {
    "provider": "LLMHD_PROVIDER",
    "model": "LLMHD_MODEL",
    "base_url": "LLMHD_BASE_URL",
    "cache_dir": "LLMHD_LLM_CACHE",
    "concurrency": "LLMHD_CONCURRENCY",
    "max_cost": "LLMHD_MAX_COST",
    "max_retries": "LLMHD_MAX_RETRIES",
    "timeout": "LLMHD_TIMEOUT",
    "prices": "LLMHD_PRICES",
    "context_window": "LLMHD_CONTEXT_WINDOW",
}
MIN_CONTEXT_WINDOW = 256


@dataclass
class LLMSettings:
    """Everything needed to build a provider and a client."""

    provider: str
    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed, logged or stored
    cache_dir: Path | None = None  # None: <workspace>/llm-cache
    concurrency: int = DEFAULT_CONCURRENCY
    max_cost: float | None = None
    refresh: bool = False
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    prices_file: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific extras
    context_window: int | None = None  # tokens; None: the model's entry in llmhd_cli.llm.tokens.CONTEXT_WINDOWS

    def resolved_cache_dir(self, workspace: Path) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(workspace) / CACHE_SUBDIR


def _llm_config() -> dict[str, Any]:
    section = user_config().get("llm", {})
    if not isinstance(section, dict):
        raise LLMHDError(f"{user_config_path()}: [llm] must be a table")
    return section


def _pick(name: str, flag: Any, config: dict[str, Any], config_ok: bool = True) -> tuple[Any, str]:
    """(value, where it came from) for one setting."""
    if flag is not None:
        return flag, f"--{name.replace('_', '-')}"
    env = ENV.get(name)
    if env and os.environ.get(env):
        return os.environ[env], env
    if config_ok and config.get(name) is not None:
        return config[name], f"[llm] {name} in {user_config_path()}"
    return None, ""


def _number(value: Any, where: str, kind: type, minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise LLMHDError(f"{where}: expected a number, got '{value}'") from None
    if not math.isfinite(number) or number < minimum:  # float() reads "nan" and "inf"
        raise LLMHDError(f"{where}: must be a finite number of at least {minimum}, got {value}")
    return number


def _default_name() -> str | None:
    from llmhd_cli import plugins

    registry = plugins.registry("provider")
    defaults = [name for name in registry.names() if getattr(registry.items[name], "is_default", False)]
    return defaults[0] if defaults else None


def default_provider() -> str:
    """The provider used when none is configured: the registered one whose class sets
    ``is_default`` (the built-in offline, keyless scorer), the first by name if several do."""
    name = _default_name()
    if name is None:
        raise LLMHDError("no LLM provider chosen and none is the default: pass --provider, or set LLMHD_PROVIDER "
                         f"or [llm] provider in {user_config_path()} (llmhd providers lists them)")
    return name


def _config_provider(config: dict[str, Any]) -> str | None:
    """The provider the user config's [llm] table is about (its model, base_url, context_window)."""
    value = config.get("provider")
    return str(value) if value else _default_name()


def context_window_setting(provider: str) -> int | None:
    """``LLMHD_CONTEXT_WINDOW`` or ``[llm] context_window`` (the config's for the config's provider only)."""
    config = _llm_config()
    value, where = _pick("context_window", None, config, _config_provider(config) == provider)
    return None if value is None else _number(value, where, int, MIN_CONTEXT_WINDOW)


def api_key_for(provider_cls: Any) -> str | None:
    """The API key from the provider's environment variable, else ``[llm.api_keys]``."""
    if provider_cls.key_env and os.environ.get(provider_cls.key_env):
        return os.environ[provider_cls.key_env]
    keys = _llm_config().get("api_keys", {})
    if isinstance(keys, dict) and keys.get(provider_cls.name):
        return str(keys[provider_cls.name])
    return None


def resolve_settings(*, provider: str | None = None, model: str | None = None, base_url: str | None = None,
                     cache_dir: str | Path | None = None, concurrency: int | None = None,
                     max_cost: float | None = None, refresh: bool = False, max_retries: int | None = None,
                     timeout: float | None = None, prices: str | Path | None = None,
                     require_key: bool = True) -> LLMSettings:
    """Settings from flags (the arguments; None = not given), environment and user config.

    Raises `LLMHDError` for an unknown provider or model (listing the known ones) and for a
    missing API key (naming the environment variable), unless ``require_key`` is False
    (e.g. for a dry-run cost estimate).
    """
    from llmhd_cli import plugins

    config = _llm_config()
    chosen_provider, _ = _pick("provider", provider, config)
    name = str(chosen_provider or default_provider())
    provider_cls = plugins.registry("provider").get(name, "--provider")
    # The config's model/base_url belong to the config's provider; don't apply them to another.
    config_ok = _config_provider(config) == name

    url, _ = _pick("base_url", base_url, config, config_ok)
    if not url and provider_cls.base_url_env and os.environ.get(provider_cls.base_url_env):
        url = os.environ[provider_cls.base_url_env]
    url = str(url).rstrip("/") if url else None

    chosen, _ = _pick("model", model, config, config_ok)
    chosen = str(chosen) if chosen else (provider_cls.models[0] if provider_cls.models else "")
    provider_cls.check_model(chosen, url)

    key = api_key_for(provider_cls)
    if require_key and not key and provider_cls.key_required(url):
        raise LLMHDError(f"provider '{name}' needs an API key: set {provider_cls.key_env} "
                         f"(or [llm.api_keys] {name} in {user_config_path()})")

    settings = LLMSettings(provider=name, model=chosen, base_url=url, api_key=key, refresh=bool(refresh))
    value, where = _pick("cache_dir", cache_dir, config)
    if value:
        from llmhd_cli.workspace import check_writable_dir

        settings.cache_dir = check_writable_dir(str(value), where)  # before anything runs or is written
    for key, flag, kind, minimum in (("concurrency", concurrency, int, 1), ("max_cost", max_cost, float, 0),
                                     ("max_retries", max_retries, int, 0), ("timeout", timeout, float, 0.001)):
        value, where = _pick(key, flag, config)
        if value is not None:
            setattr(settings, key, _number(value, where, kind, minimum))
    settings.context_window = context_window_setting(name)
    value, _ = _pick("prices", prices, config)
    if value:
        settings.prices_file = Path(str(value)).expanduser()
        from llmhd_cli.llm.pricing import load_prices

        load_prices(settings.prices_file)  # a bad table fails now, before a command writes anything
    options = config.get(name, {})  # [llm.openai] etc.: provider-specific extras (e.g. top_logprobs)
    if isinstance(options, dict):
        settings.options = dict(options)
    return settings
