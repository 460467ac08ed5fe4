"""Built-in dataset sources (filled in by the data work)."""

from llmhd_cli.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    return None
