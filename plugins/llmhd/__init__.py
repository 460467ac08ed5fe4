"""LLMHD, the paper's method, as one plugin: everything the ``llmhd`` denoiser needs.

- `options`: the ``llmhd`` denoiser's option declarations, torch-free.
- `denoiser`: the ``llmhd`` denoiser (LD, VS, LMS, PU), imported when a run builds it.
- `judge`: the LLM side during training (T_score, T_fp, T_fn), dry for cost estimates.
- `score_history`: per-epoch embedding snapshots and score variances (VS, PU).
- `dry_run`: ``llmhd cost``'s training dry run and its rows, a registered cost estimator.

Registered as ``llmhd_plugins.llmhd`` (`llmhd_cli.plugins.DEFAULT_PLUGINS`); the core reaches
it only through the hooks below. Importing this package imports no torch (``llmhd --help``
loads every plugin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmhd_cli.denoising import DenoiserSpec
from llmhd_cli.hookspecs import hookimpl
from llmhd_plugins.llmhd.dry_run import register_cost_estimators
from llmhd_plugins.llmhd.options import OPTIONS

if TYPE_CHECKING:
    from llmhd_cli.denoising import Denoiser, TrainContext
    from llmhd_cli.plugins import Register

__all__ = ["SPEC", "register_cost_estimators", "register_denoisers"]


def build(options: dict[str, Any], context: TrainContext) -> Denoiser:
    """Build the denoiser for one run (imports the torch implementation now)."""
    from llmhd_plugins.llmhd.denoiser import build_denoiser

    return build_denoiser(options, context)


SPEC = DenoiserSpec(
    "llmhd",
    "LLMHD (the paper): loss-based candidates, variance pruning, LLM hard-sample scoring, preference updates",
    build,
    OPTIONS,
)


@hookimpl
def register_denoisers(register: Register) -> None:
    register(SPEC)
