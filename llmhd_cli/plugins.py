"""Plugin manager: built-in plugins plus third-party ones from the `llmhd` entry-point group.

Registries are filled lazily by calling each ``register_*`` hook once; every registered
object is recorded with the plugin that provided it, which is what ``llmhd plugins`` shows.
A registered backbone is checked against llmhd's contract then (`_CONTRACTS`): one that
lacks something fails at once with an error naming the plugin, not in the middle of a run.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

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

pm = pluggy.PluginManager("llmhd")
pm.add_hookspecs(hookspecs)
_loaded = False


def load_plugins() -> pluggy.PluginManager:
    """Register the built-in plugins and every installed `llmhd` entry point (once)."""
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for name in DEFAULT_PLUGINS:
        module = importlib.import_module(name)
        pm.register(module, name)
    pm.load_setuptools_entrypoints("llmhd")
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
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        owner = pm.get_name(impl.plugin) or getattr(impl.plugin, "__name__", "?")

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

        impl.function(register=register)
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
    load_plugins()
    pm.hook.register_commands(cli=cli)


def plugin_names() -> list[str]:
    load_plugins()
    return [pm.get_name(p) for p in pm.get_plugins()]


Register = Callable[[Any], None]
