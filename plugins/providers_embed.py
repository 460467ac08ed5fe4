"""Built-in LLM provider plugin (providers_embed); being written."""

from llmhd_cli.hookspecs import hookimpl


@hookimpl
def register_providers(register):
    return None
