"""Start-up cost: ``llmhd --version`` loads no plugin, torch or RecBole; ``--help`` loads the
plugins (their subcommands are listed) but builds no backbone registry, and no plugin module
imports torch, so neither torch nor RecBole is imported (``train --help`` too);
commands' plugin-made flags (each denoiser's options) appear when the command is used.

Each case runs in a fresh interpreter (what a user's shell starts), through a small driver
that calls ``llmhd_cli.cli.main`` and then reports which heavy modules got imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Runs `main(argv)`, optionally after registering a plugin object that adds a command, then
# prints the exit code and the heavy modules now in sys.modules as one JSON line on stderr.
DRIVER = r"""
import json, sys
argv = json.loads(sys.argv[1])
if sys.argv[2] == "with-command-plugin":
    import types
    import click
    from llmhd_cli import plugins
    from llmhd_cli.hookspecs import hookimpl

    @hookimpl
    def register_commands(cli):
        @cli.command("hello-plugin")
        def hello():
            "Say hello (a plugin's command)."
            click.echo("hello from a plugin")

    module = types.ModuleType("command-plugin")
    module.register_commands = register_commands
    plugins.load_plugins().register(module, "command-plugin")
from llmhd_cli.cli import main
code = 0
try:
    main(argv)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
heavy = sorted(m for m in ("torch", "recbole", "llmhd_plugins") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def drive(*argv: str, plugin: bool = False) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, stdout) of ``llmhd ARGV`` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMHD_")}
    env["LLMHD_CONFIG"] = "/nonexistent/llmhd-config.toml"
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(argv)),
                             "with-command-plugin" if plugin else "plain"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], report["heavy"], result.stdout


def test_version_imports_no_plugin_torch_or_recbole() -> None:
    code, heavy, out = drive("--version")
    assert code == 0 and out.strip() == "llmhd, version 0.1.0"
    assert heavy == [], heavy


def test_help_lists_plugin_commands_without_building_registries() -> None:
    code, heavy, out = drive("--help", plugin=True)
    assert code == 0, out
    assert "hello-plugin" in out and "Say hello" in out and "train" in out
    # Listing commands loads the plugins' modules, not RecBole (only the backbone registry needs it).
    assert "recbole" not in heavy, heavy


@pytest.mark.parametrize("argv", [("--help",), ("train", "--help")])
def test_help_imports_no_torch_or_recbole(argv: tuple[str, ...]) -> None:
    """Every plugin module is loaded (commands listed, denoisers' flags built) and none imports
    torch: the registrations (rgcf, dcf_denoiser, the llmhd package) import their torch code when used."""
    code, heavy, out = drive(*argv)
    assert code == 0, out
    assert heavy == ["llmhd_plugins"], heavy
    if argv[0] == "train":
        for flag in ("--eps-l-max", "--variant", "--dcf-drop-rate", "--drop-rate", "--beta"):
            assert flag in out, (flag, out)


EVERY_HELP = r"""
import contextlib, io, json, sys
import click
from llmhd_cli.cli import cli, main

def names(group, ctx):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield [name]
        if isinstance(command, click.Group):
            yield from ([name, *sub] for sub in names(command, click.Context(command, parent=ctx)))

shown = []
for argv in list(names(cli, click.Context(cli))):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*argv, "--help"])
        except SystemExit:
            pass
    shown.append(" ".join(argv) if "Usage:" in out.getvalue() else "no help: " + " ".join(argv))
print(json.dumps({"shown": shown, "heavy": sorted(m for m in ("torch", "recbole") if m in sys.modules)}))
"""


def test_no_subcommand_help_imports_torch_or_recbole() -> None:
    """``llmhd <command> [<subcommand>] --help`` for every command, in one fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMHD_")}
    env["LLMHD_CONFIG"] = "/nonexistent/llmhd-config.toml"
    result = subprocess.run([sys.executable, "-c", EVERY_HELP], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"train", "cost", "prepare", "evaluate", "experiment run"} <= set(report["shown"]), report["shown"]
    assert not [s for s in report["shown"] if s.startswith("no help")], report["shown"]
    assert report["heavy"] == [], report["heavy"]


def test_a_plugin_command_runs() -> None:
    code, heavy, out = drive("hello-plugin", plugin=True)
    assert code == 0 and out.strip() == "hello from a plugin"


@pytest.mark.parametrize("command,flags", [("train", ("--drop-rate", "--beta", "--eps-v")), ("cost", ("--eps-v",))])
def test_plugin_made_flags_appear_with_the_command(command: str, flags: tuple[str, ...]) -> None:
    code, heavy, out = drive(command, "--help")
    assert code == 0, out
    for flag in flags:
        assert flag in out, (flag, out)


def test_the_plugin_contract_modules_import_no_torch() -> None:
    """What every plugin imports at module level (the Backbone and DenoiserSpec types), and the
    built-ins that need torch only inside functions, stay light: ``--help`` imports them all."""
    modules = ["llmhd_cli.backbones", "llmhd_cli.denoising", "llmhd_cli.hookspecs", "llmhd_plugins.backbones",
               "llmhd_plugins.denoisers", "llmhd_plugins.prompt_sets", "llmhd_plugins.providers_openai",
               "llmhd_plugins.rgcf", "llmhd_plugins.dcf_denoiser", "llmhd_plugins.llmhd"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('torch' in sys.modules, 'recbole' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
