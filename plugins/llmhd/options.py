"""The ``llmhd`` denoiser's option declarations (``llmhd train`` flags), its variants and rules.

Torch-free on purpose: ``llmhd --help`` and ``llmhd train --help`` load every plugin module to
list its commands and build the denoisers' flags; the package (`llmhd_plugins.llmhd`) registers
these options with a factory that imports the implementation (`llmhd_plugins.llmhd.denoiser`,
torch) only when a run calls it.
"""

from __future__ import annotations

from llmhd_cli.denoising import Option

# Table 2's ablation rows: which modules run.
VARIANTS = {
    "ld": dict(lms=False, pruning=None, pu=False),
    "ld-rs-lms": dict(lms=True, pruning="random", pu=False),
    "ld-vs-lms": dict(lms=True, pruning="variance", pu=False),
    "full": dict(lms=True, pruning="variance", pu=True),
}
HARD_RULES = ("paper", "literal", "agreement")

OPTIONS = [
    Option("variant", str, "full", "llmhd: modules to run, Table 2's rows: ld, ld-rs-lms, ld-vs-lms, full (LD+VS+LMS+PU)",
           choices=tuple(VARIANTS)),
    Option("alpha", float, 10000.0, "llmhd: schedule speed: eps_l(T) reaches eps_l_max after alpha iterations; thresholds move by 1 per alpha iterations"),
    Option("eps_l_max", float, 0.05, "llmhd: maximum fraction of a batch taken as noise candidates (LD)"),
    Option("ld_schedule", str, "tce", "llmhd: LD rate: tce = eps_l_max * min(T/alpha, 1) (the authors' code); paper = min(T/alpha, eps_l_max) as printed",
           choices=("paper", "tce")),
    Option("ld_candidates", str, "positives", "llmhd: BCE only, which samples LD may take as noise candidates: "
           "positives (T-CE's truncation: observed pairs only; measured best, docs/llmhd.md) or all (the paper: "
           "sampled negatives too, judged by the pointwise rule's --eps-neg)", choices=("positives", "all")),
    Option("eps_v", float, 0.5, "llmhd: top fraction of candidates by score variance sent to the LLM (VS)"),
    Option("pruning", str, None, "llmhd: variance (VS) or random (RS); default from --variant", choices=("variance", "random")),
    Option("history", int, 5, "llmhd: epochs of score history for the variance (m)"),
    Option("eps_gamma", int, 5, "llmhd: flags before a false positive/negative updates the user's profile (PU)"),
    Option("hard_rule", str, "agreement", "llmhd: hard-sample rule: agreement (keep a candidate the LLM confirms; measured best, "
           "docs/llmhd.md), paper (the text: keep what the LLM doubts), literal (Eq. 15 as printed)",
           choices=HARD_RULES),
    Option("eps_pos_max", float, 8.0, "llmhd: pointwise positive threshold start (falls to --eps-pos-min)"),
    Option("eps_pos_min", float, 6.0, "llmhd: pointwise positive threshold floor"),
    Option("eps_neg_min", float, 2.0, "llmhd: pointwise negative threshold start (rises to --eps-neg-max)"),
    Option("eps_neg_max", float, 4.0, "llmhd: pointwise negative threshold ceiling"),
    Option("eps_pair_max", float, 7.0, "llmhd: pairwise threshold start (falls to --eps-pair-min)"),
    Option("eps_pair_min", float, 3.0, "llmhd: pairwise threshold floor"),
    Option("provider", str, None, "llmhd: LLM provider for scoring [default: LLMHD_PROVIDER or config [llm], else embed]"),
    Option("model", str, None, "llmhd: LLM model [default: the provider's first]"),
    Option("base_url", str, None, "llmhd: base URL of an OpenAI-compatible server"),
    Option("concurrency", int, None, "llmhd: concurrent LLM calls"),
    Option("max_cost", float, None, "llmhd: LLM budget in dollars; when reached, training goes on without LLM scoring"),
    Option("structured", bool, False, "llmhd: ask for structured (JSON schema) scores where the provider supports it"),
    Option("prompts", str, None, "llmhd: folder of prompt templates overriding the shipped ones"),
    Option("scoring", str, "listwise", "llmhd: how T_score asks: listwise = one prompt scores all of a user's pairs of "
           "a batch (at most --list-size; profile and instructions paid once), pairwise = one prompt per pair "
           "(the paper's); the same pairs either way (docs/cost.md)", choices=("listwise", "pairwise")),
    Option("list_size", int, 8, "llmhd: most items in one listwise T_score prompt"),
    Option("negatives", str, "fresh", "llmhd: what the LLM scores as a judged sample's negative: pool = the mean of the "
           "user's seeded pool of --neg-pool unseen items, recurring across epochs (each scored once per profile "
           "version); fresh = the sample's own sampled negative, new every epoch (the paper's; docs/cost.md)",
           choices=("pool", "fresh")),
    Option("neg_pool", int, 1, "llmhd: items in each user's reference negative pool (--negatives pool)"),
    Option("score_from", int, 1, "llmhd: send a sample to the LLM once its positive has been a hard candidate in this "
           "many batches (1: at once, the paper's; earlier appearances are dropped as LD drops them; docs/cost.md)"),
    Option("pu_min_items", int, 1, "llmhd: rewrite a user's profile (PU) once this many confident items of a kind "
           "are waiting (collected over epochs; 1: every epoch with a new one, the paper's; docs/cost.md)"),
    Option("judge_accuracy", float, 1.0, "llmhd: simulated judge error: with probability 1 - p a score is replaced "
           "by a uniform random one in 1..10 (seeded; sweeps how accurate the LLM must be, e.g. with the oracle)"),
]
