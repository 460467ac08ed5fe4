"""DCF, the Double Correction Framework (He et al., KDD 2024, arXiv:2405.11272).

Rules as in the paper and the authors' code (github.com/bruno686/DCF, ``loss.py``
``PLC_uncertain_discard`` and ``main.py``); see docs/denoisers.md for where this follows which.
Per mini-batch, for each positive (BCE) or (u, i+, i-) triple (BPR), keyed by its training row:

1. Damped loss (sample dropping correction): phi(l) = log(1 + l + l^2 / 2), a non-decreasing
   function that is ~l for small losses and grows only logarithmically for large ones, so one
   outlying loss moves the average little.
2. Mean over time: mu = mean of phi(l) over the sample's last ``dcf_time_step`` epochs
   (the current loss included); n = how many losses that window holds.
3. Lower bound (cautious hard-sample search, Catoni-style concentration bound):
   ``l* = relu(mu - v (t + v log(2t) / t^2) / (n + 1 - v))`` with t = epoch + 1 and v the
   variance term: ``dcf_sigma2`` (the code's ``co_lambda``, "sigma^2") or, with
   ``--dcf-variance empirical``, the sample's own variance of phi(l) over the window. v falls
   linearly to 0 over ``dcf_sigma_decay`` epochs (the code's ``co_lambda_plan``) and is capped at
   n so the denominator stays >= 1. A high-variance (hard) sample gets a lower bound and is kept.
4. Drop and relabel: with d(T) = dcf_drop_rate * min(T / dcf_num_gradual, 1) and N the batch's
   sample count (BCE: positives and negatives, as T-CE), the N - int((1 - d) N) eligible
   positives with the largest l* leave the plain loss; the largest N - int((1 - r d) N) of them
   (r = dcf_relabel_ratio) are relabelled, the rest dropped.
5. Progressive label correction: a relabelled positive is trained as a negative (BCE loss
   with label 0, or the BPR triple with positive and negative swapped). ``dcf_relabel batch``
   (the default) flips it in that batch only, so the flipped share r d(T) of each batch grows
   with d(T); ``persist`` keeps it flipped for the rest of the run (as a public copy of the
   authors' ``loss.py`` that writes label 0 into its training matrix); ``keep`` trains it with
   its observed label (what the released ``loss.py`` ends up doing). docs/denoisers.md has
   the measurements behind the default.

Sampled negatives are never dropped or relabelled and keep no history (they change each epoch).

This module is the registration (options, checks, the spec) and imports no torch: ``llmhd
--help`` loads every plugin. The denoiser itself is `llmhd_plugins.dcf.DoubleCorrection`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from llmhd_cli.denoising import DenoiserSpec, Option
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl

if TYPE_CHECKING:
    from llmhd_cli.denoising import Denoiser, TrainContext
    from llmhd_cli.plugins import Register

VARIANCES = ("fixed", "empirical")
RELABEL_MODES = ("persist", "batch", "keep")


# ------------------------------------------------------------------------------ registration


def _check(options: dict[str, Any]) -> None:
    o = options
    if not (0 <= o["dcf_drop_rate"] < 1):
        raise LLMHDError(f"--dcf-drop-rate: must be in [0, 1), got {o['dcf_drop_rate']}")
    if not (0 <= o["dcf_relabel_ratio"] <= 1):
        raise LLMHDError(f"--dcf-relabel-ratio: must be in [0, 1], got {o['dcf_relabel_ratio']}")
    if o["dcf_num_gradual"] < 1:
        raise LLMHDError(f"--dcf-num-gradual: must be at least 1, got {o['dcf_num_gradual']}")
    if o["dcf_time_step"] < 1:
        raise LLMHDError(f"--dcf-time-step: must be at least 1, got {o['dcf_time_step']}")
    if not (o["dcf_sigma2"] >= 0) or math.isinf(o["dcf_sigma2"]):  # also rejects NaN
        raise LLMHDError(f"--dcf-sigma2: must be a finite number >= 0, got {o['dcf_sigma2']}")
    if o["dcf_sigma_decay"] < 0:
        raise LLMHDError(f"--dcf-sigma-decay: must be >= 0, got {o['dcf_sigma_decay']}")
    if o["dcf_variance"] not in VARIANCES:
        raise LLMHDError(f"--dcf-variance: expected one of {', '.join(VARIANCES)}, got '{o['dcf_variance']}'")
    if o["dcf_relabel"] not in RELABEL_MODES:
        raise LLMHDError(f"--dcf-relabel: expected one of {', '.join(RELABEL_MODES)}, got '{o['dcf_relabel']}'")


def _factory(options: dict[str, Any], context: TrainContext) -> Denoiser:
    _check(options)
    from llmhd_plugins.dcf import DoubleCorrection  # torch: only when a run builds the denoiser

    is_noise = getattr(context.data, "is_noise", None)
    return DoubleCorrection(
        context.n_train, context.device,
        drop_rate=options["dcf_drop_rate"], num_gradual=options["dcf_num_gradual"],
        relabel_ratio=options["dcf_relabel_ratio"], time_step=options["dcf_time_step"],
        sigma2=options["dcf_sigma2"], variance=options["dcf_variance"], sigma_decay=options["dcf_sigma_decay"],
        relabel=options["dcf_relabel"], is_noise=is_noise,
    )


OPTIONS = [
    Option("dcf_drop_rate", float, 0.2, "DCF: maximum fraction of each batch taken out of the plain loss (dropped or relabelled)"),
    Option("dcf_num_gradual", int, 30000, "DCF: iterations over which that fraction rises to its maximum"),
    Option("dcf_relabel_ratio", float, 0.05, "DCF: share of the taken-out samples (the most certain ones) relabelled instead of dropped"),
    Option("dcf_time_step", int, 3, "DCF: epochs of each sample's loss history averaged (the time interval)"),
    Option("dcf_sigma2", float, 1e-4, "DCF: variance term sigma^2 of the lower bound (--dcf-variance fixed)"),
    Option("dcf_variance", str, "fixed", "DCF: variance in the bound: fixed (--dcf-sigma2, as the authors' code) or "
           "empirical (each sample's variance of damped losses over its window)", choices=VARIANCES),
    Option("dcf_sigma_decay", int, 10, "DCF: epochs over which the variance term falls linearly to 0 (0: constant)"),
    # batch: measured on ml-100k no worse than persist at the default ramp and clearly better once it
    # has risen, where persist flips a quarter to half of all positives (docs/denoisers.md).
    Option("dcf_relabel", str, "batch", "DCF: relabelled positives: batch (flipped in that batch only), persist "
           "(negatives for the rest of the run), keep (trained with their observed label, as the released code)",
           choices=RELABEL_MODES),
]

SPEC = DenoiserSpec(
    "dcf",
    "DCF, double correction (He et al. 2024): drop by a lower bound of the damped mean loss, relabel the most certain noise",
    _factory,
    OPTIONS,
)


@hookimpl
def register_denoisers(register: Register) -> None:
    register(SPEC)
