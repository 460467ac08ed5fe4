"""Built-in prompt template sets; being written."""

from llmhd_cli.hookspecs import hookimpl


@hookimpl
def register_prompt_templates(register):
    return None
