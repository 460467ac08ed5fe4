"""Built-in backbones."""

from llmhd_cli.hookspecs import hookimpl


@hookimpl
def register_backbones(register):
    return None
