"""LLMHD, the paper's method, as one plugin: everything the ``llmhd`` denoiser needs.

- `options`: the ``llmhd`` denoiser's registration (its options and a factory), torch-free.
- `denoiser`: the ``llmhd`` denoiser (LD, VS, LMS, PU), imported when a run builds it.
- `judge`: the LLM side during training (T_score, T_fp, T_fn), dry for cost estimates.
- `score_history`: per-epoch embedding snapshots and score variances (VS, PU).
- `dry_run`: ``llmhd cost``'s training dry run and its rows, a registered cost estimator.

Registered as ``llmhd_plugins.llmhd`` (`llmhd_cli.plugins.DEFAULT_PLUGINS`); the core reaches
it only through the hooks below. Importing this package imports no torch (``llmhd --help``
loads every plugin).
"""

from llmhd_plugins.llmhd.dry_run import register_cost_estimators
from llmhd_plugins.llmhd.options import register_denoisers

__all__ = ["register_cost_estimators", "register_denoisers"]
