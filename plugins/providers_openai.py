"""Built-in LLM provider plugin (providers_openai); being written."""

from llmhd_cli.hookspecs import hookimpl


@hookimpl
def register_providers(register):
    return None
