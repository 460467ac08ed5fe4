"""Hook specifications: the only way features enter llmhd.

Built-in backbones, denoisers, dataset sources and cost estimators are registered through
these same hooks (see the `llmhd_plugins` package), exactly as a third-party plugin registers
its own through the `llmhd` setuptools entry-point group. Each hook receives a `register` callback; call it
once per thing you provide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from llmhd_cli.backbones import Backbone
    from llmhd_cli.datasets import DatasetSource
    from llmhd_cli.denoising import DenoiserSpec
    from llmhd_cli.llm.base import Provider
    from llmhd_cli.llm.estimate import CostEstimator
    from llmhd_cli.llm.prompts import TemplateSet

hookspec = pluggy.HookspecMarker("llmhd")
hookimpl = pluggy.HookimplMarker("llmhd")


@hookspec
def register_backbones(register: Callable[[Backbone], None]) -> None:
    """Register recommendation backbones.

    Call ``register(backbone)`` with an `llmhd_cli.backbones.Backbone` for each model. A
    backbone names a RecBole general recommender class, its default hyperparameters and
    how to score (user, item) pairs from it.
    """


@hookspec
def register_denoisers(register: Callable[[DenoiserSpec], None]) -> None:
    """Register denoisers.

    Call ``register(spec)`` with an `llmhd_cli.denoising.DenoiserSpec`: a name, a factory
    building the denoiser from its options, and the options (each one becomes a
    ``llmhd train`` flag and a key of the ``[denoiser_params]`` table of a train config file).
    """


@hookspec
def register_datasets(register: Callable[[DatasetSource], None]) -> None:
    """Register dataset sources and built-in datasets.

    Call ``register(source)`` with an `llmhd_cli.datasets.DatasetSource`: something that
    turns files (or a built-in resource) into raw interactions and item texts for
    ``llmhd prepare``.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``llmhd`` Click group ``cli`` (e.g. with ``@cli.command()``)."""


@hookspec
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    """Register LLM providers.

    Call ``register(provider_class)`` with a subclass of `llmhd_cli.llm.base.Provider` (its
    ``name`` attribute is the provider name used by ``--provider``). The class is the whole
    contract: `complete` makes one call; `token_counter`, ``context_windows``,
    ``any_model_with_base_url``, `check_model`, `key_required` and ``is_default`` tell the core
    what it would otherwise have to know about the provider (docs/plugins.md, "Writing a
    provider"). Shared HTTP helpers: `llmhd_cli.llm.http`.
    """


@hookspec
def register_prompt_templates(register: Callable[[TemplateSet], None]) -> None:
    """Register prompt template sets.

    Call ``register(template_set)`` with an `llmhd_cli.llm.prompts.TemplateSet` (a named set
    of TOML templates for one domain, e.g. a folder of ``*.toml`` files).
    """


@hookspec
def register_cost_estimators(register: Callable[[CostEstimator], None]) -> None:
    """Register cost estimators: rows that ``llmhd cost`` adds to an estimate.

    Call ``register(estimator)`` with an `llmhd_cli.llm.estimate.CostEstimator`: a name, an
    ``applies(ctx)`` test (does it add rows for this estimate, e.g. a training configuration
    with its denoiser) and ``rows(ctx)`` returning `EstimateRow`s for the prompts it would send.
    An estimator that dry-runs training also names its denoiser, the denoiser options that
    change its prompts (``llmhd cost`` offers them as flags) and how to build the run's config.
    """
