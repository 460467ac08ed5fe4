"""Plugin manager: built-in plugins plus third-party ones from the `llmhd` entry-point group.

Registries are filled lazily by calling each ``register_*`` hook once; every registered
object is recorded with the plugin that provided it, which is what ``llmhd plugins`` shows.
A registered backbone is checked against llmhd's contract then (`_CONTRACTS`): one that
lacks something fails at once with an error naming the plugin, not in the middle of a run.

Which entry-point plugins load: all installed, or those ``LLMHD_LOAD_PLUGINS`` names
(comma-separated; empty: none), less those ``LLMHD_DISABLE_PLUGINS`` names. The built-ins
always load: they are llmhd's own features. ``pm.register`` / ``pm.unregister`` (as tests
do) drop the registries built so far, so the next use sees the change.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from llmhd_cli import hookspecs
from llmhd_cli.errors import LLMHDError

log = logging.getLogger(__name__)

DEFAULT_PLUGINS: tuple[str, ...] = (
    "llmhd_plugins.backbones",
    "llmhd_plugins.rgcf",
    "llmhd_plugins.denoisers",
    "llmhd_plugins.llmhd",
    "llmhd_plugins.dcf_denoiser",
    "llmhd_plugins.datasets",
    "llmhd_plugins.providers_openai",
    "llmhd_plugins.providers_anthropic",
    "llmhd_plugins.providers_embed",
    "llmhd_plugins.providers_oracle",
    "llmhd_plugins.prompt_sets",
)

ENTRY_POINT_GROUP = "llmhd"
LOAD_ENV, DISABLE_ENV = "LLMHD_LOAD_PLUGINS", "LLMHD_DISABLE_PLUGINS"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager; a plugin registered or unregistered drops the registries built from
    the plugins before it (they are rebuilt, through the hooks, on next use)."""

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        _registries.clear()
        _commands_added.clear()
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        _registries.clear()
        _commands_added.clear()
        return removed


def new_manager() -> PluginManager:
    manager = PluginManager("llmhd")
    manager.add_hookspecs(hookspecs)
    return manager


pm = new_manager()
_loaded = False


def _env_names(variable: str) -> list[str] | None:
    value = os.environ.get(variable)
    return None if value is None else [n.strip() for n in value.split(",") if n.strip()]


def blocked_entry_points(installed: set[str]) -> set[str]:
    """The installed entry-point plugins that LLMHD_LOAD_PLUGINS / LLMHD_DISABLE_PLUGINS leave out.
    A name that is not an installed plugin is an error (a typo would silently load everything)."""
    load, disable = _env_names(LOAD_ENV), _env_names(DISABLE_ENV)
    for variable, names in ((LOAD_ENV, load), (DISABLE_ENV, disable)):
        for name in names or ():
            if name in DEFAULT_PLUGINS:
                raise LLMHDError(f"{variable}: '{name}' is built in and always loads; name installed plugins only")
            if name not in installed:
                known = ", ".join(sorted(installed)) or "none"
                raise LLMHDError(f"{variable}: no installed plugin '{name}' (installed: {known})")
    keep = installed if load is None else set(load)
    return (installed - keep) | set(disable or ())


def load_into(manager: pluggy.PluginManager) -> pluggy.PluginManager:
    """Register the built-in plugins, then the selected `llmhd` entry points, into ``manager``."""
    for name in DEFAULT_PLUGINS:
        if not manager.has_plugin(name):
            manager.register(importlib.import_module(name), name)
    installed = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    for name in blocked_entry_points(installed):
        manager.set_blocked(name)  # pluggy's loader skips blocked names
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return manager


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in plugins and the selected installed `llmhd` entry points (once)."""
    global _loaded
    if not _loaded:
        _loaded = True
        load_into(pm)
    return pm


@dataclass
class Registry:
    """Named things of one kind (backbones, denoisers, ...) and which plugin gave each."""

    kind: str
    items: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, flag: str) -> Any:
        if name not in self.items:
            known = ", ".join(sorted(self.items)) or "none"
            raise LLMHDError(f"{flag}: unknown {self.kind} '{name}' (known: {known})")
        return self.items[name]

    def names(self) -> list[str]:
        return sorted(self.items)


_registries: dict[str, Registry] = {}
_commands_added: set[int] = set()  # ids of the Click groups plugins' commands were added to


def _backbone_problems(obj: Any) -> list[str]:
    from llmhd_cli.backbones import Backbone

    if not isinstance(obj, Backbone):
        return [f"it is a {type(obj).__name__}, not a llmhd_cli.backbones.Backbone"]
    return obj.contract_problems()


# kind -> what a registered object lacks ([] when nothing).
_CONTRACTS: dict[str, Callable[[Any], list[str]]] = {"backbone": _backbone_problems}


def _collect(hook_name: str, kind: str) -> Registry:
    if hook_name in _registries:
        return _registries[hook_name]
    load_plugins()
    registry = Registry(kind)
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    providers = [i.plugin for i in impls if not (i.hookwrapper or i.wrapper)]  # wrappers wrap every call
    for plugin in providers:
        owner = str(pm.get_name(plugin) or getattr(plugin, "__name__", "?"))

        def register(obj: Any, _owner: str = owner) -> None:
            name = getattr(obj, "name", "?")
            if name in registry.items:
                raise LLMHDError(
                    f"plugin '{_owner}' registers {kind} '{name}', already registered by "
                    f"'{registry.owners[name]}'; uninstall one of them"
                )
            problems = _CONTRACTS[kind](obj) if kind in _CONTRACTS else []
            if problems:
                raise LLMHDError(f"plugin '{_owner}' registers {kind} '{name}' that llmhd cannot use: "
                                 + "; ".join(problems))
            registry.items[name] = obj
            registry.owners[name] = _owner

        # Through pluggy's hook calling (tracing, monitoring), one plugin at a time so that each
        # registration is known to come from that plugin.
        pm.subset_hook_caller(hook_name, remove_plugins=[p for p in providers if p is not plugin])(register=register)
    _registries[hook_name] = registry
    return registry


def registry(kind: str) -> Registry:
    """The registry for ``kind``: backbone, denoiser, dataset, provider, prompt set or cost estimator."""
    hooks = {
        "backbone": "register_backbones",
        "denoiser": "register_denoisers",
        "dataset": "register_datasets",
        "provider": "register_providers",
        "prompt set": "register_prompt_templates",
        "cost estimator": "register_cost_estimators",
    }
    if kind not in hooks:
        raise KeyError(kind)
    return _collect(hooks[kind], kind)


def all_registries() -> list[Registry]:
    return [registry(k) for k in ("backbone", "denoiser", "dataset", "provider", "prompt set", "cost estimator")]


def add_commands(cli: Any) -> None:
    """Let plugins add their subcommands to ``cli`` (once per group and set of plugins)."""
    load_plugins()
    if id(cli) not in _commands_added:
        _commands_added.add(id(cli))
        pm.hook.register_commands(cli=cli)


def plugin_names() -> list[str]:
    load_plugins()
    return [pm.get_name(p) or repr(p) for p in pm.get_plugins()]


Register = Callable[[Any], None]
