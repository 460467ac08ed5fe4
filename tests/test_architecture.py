"""The import contracts in pyproject.toml cover every module (lint-imports checks them in CI)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CLI_LAYER = {"__main__", "cli", "commands"}


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def test_every_library_module_is_below_the_cli_layer():
    # A module added to llmhd_cli must be named in the CLI-on-top contract (or be the CLI itself),
    # otherwise it could import the commands unchecked.
    contract = next(c for name, c in _contracts().items() if name.startswith("The CLI layer is on top"))
    named = {m.removeprefix("llmhd_cli.") for m in contract["source_modules"] if m.startswith("llmhd_cli.")}
    modules = {p.stem for p in (ROOT / "llmhd_cli").glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in (ROOT / "llmhd_cli").iterdir() if (p / "__init__.py").is_file()}
    missing = modules - CLI_LAYER - named
    assert not missing, f"add these to the CLI-on-top contract in pyproject.toml: {sorted(missing)}"
    assert "llmhd_plugins" in contract["source_modules"]
    assert {f"llmhd_cli.{m}" for m in CLI_LAYER} == set(contract["forbidden_modules"])


def test_the_core_never_imports_a_plugin_contract_is_there():
    contract = _contracts()["The core never imports a plugin"]
    assert contract["source_modules"] == ["llmhd_cli"] and contract["forbidden_modules"] == ["llmhd_plugins"]
