"""Built-in denoisers."""

from llmhd_cli.hookspecs import hookimpl


@hookimpl
def register_denoisers(register):
    return None
