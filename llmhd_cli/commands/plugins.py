"""``llmhd plugins`` and ``llmhd providers``: what the loaded plugins registered."""

from __future__ import annotations

from llmhd_cli.commands import render
from llmhd_cli.commands.common import command


@command("plugins")
def plugins_command() -> None:
    """List loaded plugins and what each registered."""
    from llmhd_cli import plugins

    render.console.print(render.plugins_table(plugins.plugin_names(), plugins.all_registries()))


@command("providers")
def providers_command() -> None:
    """List LLM providers: models (first is the default), the API key variable, and kind."""
    from llmhd_cli import plugins

    render.console.print(render.providers_table(plugins.registry("provider")))
