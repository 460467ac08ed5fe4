"""The ``llmhd`` subcommands, one module per command group; `llmhd_cli.cli` holds the group.

Every module here parses flags, calls library functions and renders their results through
`render`; what the commands share (the group's `State`, flags made from plugins' registries
at parse time, the LLM flags) lives in `common`. No module imports torch, RecBole or a plugin
at import time: ``llmhd --version`` and ``--help`` load none of them.
"""

from __future__ import annotations

import click


def builtin_commands() -> list[click.Command]:
    """The built-in subcommands, in no particular order (click lists them sorted)."""
    from . import cost, data, evaluate, experiment, plugins, prompts, train

    return [
        plugins.plugins_command,
        plugins.providers_command,
        data.prepare_command,
        data.summarize_command,
        train.train_command,
        evaluate.evaluate_command,
        evaluate.plot_command,
        cost.cost_command,
        prompts.prompts_group,
        experiment.experiment_group,
    ]
