"""Built-in prompt template sets (books, businesses, games, movies, generic ``items``).

Registered through ``register_prompt_templates``, the hook a third-party plugin uses to add
its own sets; each sub-folder of the ``llmhd_prompts`` package is one set.
"""

from llmhd_cli.hookspecs import hookimpl


@hookimpl
def register_prompt_templates(register):
    from llmhd_cli.llm.prompts import TemplateSet, builtin_prompts_dir

    root = builtin_prompts_dir()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.toml"))):
        register(TemplateSet.from_dir(folder, origin="built-in"))
