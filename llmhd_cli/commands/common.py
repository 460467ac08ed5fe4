"""What the command modules share: the group's `State`, flags that plugins' registries make
(added when a command is parsed, not at import), and flag sets used by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from llmhd_cli.errors import LLMHDError


class State:
    """Options of the top-level group, passed to every command."""

    def __init__(self, workspace: str | None, verbose: int, resolve: Callable[[str | None], Path]) -> None:
        self._workspace_flag = workspace
        self._resolve = resolve
        self.verbose = verbose

    @property
    def workspace(self) -> Path:
        return self._resolve(self._workspace_flag)


pass_state = click.make_pass_decorator(State)


def lazy_options(add: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """Mark a command for the flags ``add`` makes from plugins' registries (each denoiser's
    options, say), added when the command is parsed or its help shown instead of at import:
    building them loads every plugin (torch, RecBole), which ``llmhd --version`` must not."""

    def mark(f: Callable) -> Callable:
        f.__llmhd_lazy_options__ = [*getattr(f, "__llmhd_lazy_options__", []), add]  # type: ignore[attr-defined]
        return f

    return mark


class LazyCommand(click.Command):
    """A command whose `lazy_options` flags appear on first use, after its other flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = list(getattr(self.callback, "__llmhd_lazy_options__", []))

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if self._lazy:
            def holder() -> None:  # collects the options as click's decorators do on a function
                return None

            for add in self._lazy:
                holder = add(holder)
            self._lazy = []
            self.params.extend(reversed(getattr(holder, "__click_params__", [])))  # click's own order
        return super().get_params(ctx)


def command(name: str) -> Callable[[Callable], LazyCommand]:
    """``@click.command(name)`` for a built-in subcommand (one that may have `lazy_options`)."""
    return click.command(name, cls=LazyCommand)


class PathArg(click.Path):
    """click.Path that refuses an empty value: ``--run-dir ''`` would otherwise be the current
    folder (Path('') is '.'), and a run, a cache or plots would land there unasked."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path: name a file or folder, or leave the option out for its default", param, ctx)
        return super().convert(value, param, ctx)


def writable_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback of folder options llmhd writes into: a file in the way or a folder that
    cannot be written is a one-line error while the flags are read, before anything runs."""
    from llmhd_cli.workspace import check_writable_dir

    return None if value is None else check_writable_dir(value, param.opts[0])


def split_csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def parse_settings(pairs: tuple[str, ...]) -> dict:
    """--set key=value words into a dict, values read as TOML scalars/lists when they parse."""
    from llmhd_cli.config import tomllib

    settings = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise LLMHDError(f"--set: expected KEY=VALUE, got '{pair}'")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        settings[key.strip()] = value
    return settings


class RegistryHelpOption(click.Option):
    """An option whose help text names what plugins registered (the providers, say): written
    when the help is shown, so defining the flag loads no plugin."""

    def __init__(self, *args: Any, help_from: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._help_from: Callable[[], str] | None = help_from

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if self._help_from is not None:
            self.help, self._help_from = self._help_from(), None
        return super().get_help_record(ctx)


def provider_names(**marks: bool) -> list[str]:
    """Registered providers whose class attributes equal ``marks`` (e.g. ``supports_batch=True``)."""
    from llmhd_cli import plugins

    registry = plugins.registry("provider")
    return [name for name in registry.names()
            if all(bool(getattr(registry.items[name], key, False)) == value for key, value in marks.items())]


def _provider_help() -> str:
    """--provider's help: every registered provider, marked as its class says (`Provider.upper_bound`,
    `Provider.generative`), and the default one (`Provider.is_default`)."""
    from llmhd_cli import plugins
    from llmhd_cli.llm.settings import default_provider

    registry = plugins.registry("provider")
    names = []
    for name in registry.names():
        cls = registry.items[name]
        if cls.upper_bound:
            names.append(f"{name} (UPPER BOUND diagnostic: a perfect judge of the training labels)")
        elif not cls.generative:
            names.append(f"{name} (offline, NOT a generative LLM)")
        else:
            names.append(name)
    try:
        default = default_provider()
    except LLMHDError:
        default = "none: pass one"
    return (f"LLM provider: {', '.join(names)} (`llmhd providers` describes them) "
            f"[default: LLMHD_PROVIDER or config [llm] provider, else {default}].")


def batch_help(text: str) -> Callable[[], str]:
    """A --batch help that ends naming the providers with a batch API (`Provider.supports_batch`)."""
    return lambda: f"{text} (providers with one: {', '.join(provider_names(supports_batch=True)) or 'none loaded'})."


def llm_options(command):
    """Flags shared by the commands that call an LLM (summarize) or price one (cost)."""
    options = [
        click.option("--provider", default=None, cls=RegistryHelpOption, help_from=_provider_help),
        click.option("--model", default=None, help="Model name [default: the provider's first model, see `llmhd providers`]."),
        click.option("--cache-dir", type=PathArg(file_okay=False, path_type=Path), default=None,
                     help="LLM answer cache and ledger [default: config [llm] cache_dir, else <workspace>/llm-cache]."),
        click.option("--prompts", "prompts_dir", type=PathArg(file_okay=False), default=None,
                     help="Folder of prompt templates overriding the shipped ones (see `llmhd prompts export`) "
                     "[default: config key 'prompts']."),
        click.option("--max-items", type=int, default=None,
                     help="Training items per T_sum prompt; users with more get a seeded sample [default: 50]."),
        click.option("--items", is_flag=True, help="Item profiles from raw attributes first (item_profile template): "
                     "summarize generates them, cost counts their prompts."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
