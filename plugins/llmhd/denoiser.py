"""The ``llmhd`` denoiser: LLM-enhanced hard-sample denoising (the paper's method).

Per mini-batch (see ../shared/METHOD.md for the equations and the named ambiguities):

1. LD (Eq. 5-7): B_N = the largest-loss eps_l(T) fraction of the batch (noise candidates).
2. VS (Eq. 8-10): B_HC = samples of B_N whose positive item is in the top eps_v fraction of
   B_N's positives by score variance over the last m epochs, union those whose negative is in
   the top eps_v fraction of B_N's negatives (BCE: each sample ranked in its label's group).
   ``--pruning random`` draws as many samples uniformly from B_N instead (ablation RS).
3. LMS (Eq. 11-16): the LLM scores B_HC's pairs 1..10 (T_score); the hard-sample rule decides
   B_H, which is kept; the rest of B_N is dropped.
4. PU (Eq. 17-22), once per epoch: low-variance positives are flagged false positives,
   high-variance sampled negatives false negatives; a pair flagged eps_gamma times rewrites its
   user's profile (T_fp / T_fn), and later scores use the new profile.
5. Loss (Eq. 23-24): mean over (B \\ B_N) + B_H.

The LLM is consulted once the score history holds two epochs (a variance needs two points).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from llmhd_cli.denoising import Decision, Denoiser, SampleBatch, TrainContext
from llmhd_cli.errors import LLMHDError
from llmhd_plugins.llmhd.judge import SCORING, JudgeStats, LLMJudge, check_judge_accuracy
from llmhd_plugins.llmhd.negative_pool import NegativePool, mean_by_sample

# The option declarations live in options.py, the registration in __init__.py (torch-free, for llmhd --help).
from llmhd_plugins.llmhd.options import OPTIONS as OPTIONS
from llmhd_plugins.llmhd.options import VARIANTS
from llmhd_plugins.llmhd.score_history import ScoreHistory

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------- schedules (Eq. 7, 13, 14, 16)


def ld_rate(step: int, alpha: float, eps_max: float, schedule: str = "tce") -> float:
    """eps_l(T). tce: eps_max * min(T / alpha, 1), the first author's code; paper: min(T / alpha,
    eps_max) as printed, which saturates after eps_max * alpha iterations (METHOD.md A1)."""
    if schedule == "paper":
        return min(step / alpha, eps_max)
    return eps_max * min(step / alpha, 1.0)


def falling(step: int, alpha: float, start: float, floor: float) -> float:
    """max(start - T / alpha, floor): eps_pos (8 -> 6) and eps_pair (7 -> 3)."""
    return max(start - step / alpha, floor)


def rising(step: int, alpha: float, start: float, ceiling: float) -> float:
    """min(start + T / alpha, ceiling): eps_neg (2 -> 4)."""
    return min(start + step / alpha, ceiling)


def hard_pointwise(scores: np.ndarray, labels: np.ndarray, eps_pos: float, eps_neg: float, rule: str) -> np.ndarray:
    """Eq. 12: the paper's rule keeps positives the LLM doubts and negatives it likes (ambiguous = hard).

    ``agreement`` keeps the samples whose label the LLM confirms instead (METHOD.md A3); for
    pointwise samples ``literal`` is the paper's rule. NaN scores are never hard.
    """
    known = ~np.isnan(scores)
    s = np.nan_to_num(scores)
    if rule == "agreement":
        hard = np.where(labels > 0, s >= eps_pos, s <= eps_neg)
    else:
        hard = np.where(labels > 0, s < eps_pos, s > eps_neg)
    return hard & known


def hard_pairwise(pos_scores: np.ndarray, neg_scores: np.ndarray, eps_pair: float, rule: str) -> np.ndarray:
    """Eq. 15. paper (the text): hard when s+ - s- < eps_pair; literal (the printed formula):
    s+ - s- > eps_pair; agreement: s+ - s- >= eps_pair (METHOD.md A2, A3)."""
    known = ~(np.isnan(pos_scores) | np.isnan(neg_scores))
    gap = np.nan_to_num(pos_scores) - np.nan_to_num(neg_scores)
    if rule == "paper":
        hard = gap < eps_pair
    elif rule == "literal":
        hard = gap > eps_pair
    else:
        hard = gap >= eps_pair
    return hard & known


def top_fraction(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ceil(fraction * n) largest values."""
    k = math.ceil(fraction * len(values))
    if k <= 0 or len(values) == 0:
        return torch.zeros(0, dtype=torch.long, device=values.device)
    return torch.topk(values, min(k, len(values))).indices


class LLMHDDenoiser(Denoiser):
    """LD -> VS -> LMS per batch, PU per epoch. ``judge`` may be None (variant ``ld``)."""

    # Optional observer of every batch's sets, for tests and diagnostics: called as
    # trace(step, B_N, B_HC, B_H, dropped) with sample indices (B_*) and the dropped mask.
    # A class attribute so it can be set before the training loop builds the denoiser.
    trace: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None

    def __init__(self, options: dict[str, Any], context: TrainContext, judge: LLMJudge | None) -> None:
        self.o = options
        self.variant = dict(VARIANTS[options["variant"]])
        if options["pruning"] and self.variant["lms"]:
            self.variant["pruning"] = options["pruning"]
        self.context = context
        self.judge = judge
        self.history = ScoreHistory(options["history"])
        self.rng = torch.Generator().manual_seed(context.seed)
        self.step = 0
        self.llm_off_logged = False
        data = context.data
        self.is_noise = torch.as_tensor(data.is_noise, device=context.device) if data is not None else None
        self.n_items = context.n_items
        # --negatives pool: the LLM judges a sample's negative side by the user's recurring pool.
        self.pool = (NegativePool(context.n_items, data.train_users, data.train_items, options["neg_pool"], context.seed)
                     if options["negatives"] == "pool" and data is not None and self.variant["lms"] else None)
        # --score-from: how many batches each training positive has been a hard candidate in.
        self._appearances = np.zeros(context.n_train, dtype=np.int32)
        # --pu-min-items: confident items waiting for a user's next rewrite, by task.
        self._pending: dict[str, dict[int, list[int]]] = {"update_fp": {}, "update_fn": {}}
        # PU state: flag counts of training positives (by row) and of sampled negatives (by pair key).
        self.fp_counts = np.zeros(context.n_train, dtype=np.int32)
        self.fp_done = np.zeros(context.n_train, dtype=bool)
        self.fn_counts: dict[int, int] = {}
        self.fn_done: set[int] = set()
        self._epoch_negatives: list[tuple[torch.Tensor, torch.Tensor]] = []
        # PU's positives never change, so each snapshot scores them once when it is taken and the
        # variance reads these rows: one gather per epoch instead of m (same values as
        # ScoreHistory.variance, which rescores every snapshot).
        self._pos_scores: deque[torch.Tensor] = deque(maxlen=options["history"])
        self._pos_pairs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._counts: dict[str, float] = {}
        self._judge_before = JudgeStats()

    # ------------------------------------------------------------------ per batch

    def start_epoch(self, epoch: int) -> None:
        self._counts = dict(samples=0, candidates=0, hard_candidates=0, hard=0, noise_candidates=0,
                            noise_hard_candidates=0, noise_kept_hard=0, scored_pairs=0)
        self._epoch_negatives = []
        if self.judge is not None:
            self._judge_before = self.judge.stats.copy()

    def _llm_on(self) -> bool:
        if self.judge is None or not self.variant["lms"]:
            return False
        if self.judge.exhausted:
            if not self.llm_off_logged:
                log.warning("llmhd: the LLM budget (--max-cost) is reached at iteration %d; "
                            "training goes on with LLM scoring off (loss-based denoising only)", self.step)
                self.llm_off_logged = True
            return False
        return True

    def decide(self, batch: SampleBatch) -> Decision:
        self.step = batch.step
        n = batch.losses.shape[0]
        device = batch.losses.device
        c = self._counts
        c["samples"] += n
        if self.variant["pu"]:
            self._remember_negatives(batch)
        k = math.ceil(ld_rate(batch.step, self.o["alpha"], self.o["eps_l_max"], self.o["ld_schedule"]) * n)
        dropped = torch.zeros(n, dtype=torch.bool, device=device)
        none = torch.zeros(0, dtype=torch.long, device=device)
        if k == 0:
            if self.trace is not None:
                self.trace(batch.step, none, none, none, dropped)
            return Decision(torch.ones(n, device=device), dropped)
        candidates = self._candidates(batch, k)
        dropped[candidates] = True
        c["candidates"] += len(candidates)
        noise = self._noise_mask(batch)
        c["noise_candidates"] += int(noise[candidates].sum())
        hard_candidates = hard = none
        if self._llm_on() and self.history.ready and self.o["eps_v"] > 0:
            hard_candidates = self._prune(batch, candidates)
            hard = hard_candidates[self._judge_batch(batch, hard_candidates)]
            dropped[hard] = False
            c["hard_candidates"] += len(hard_candidates)
            c["hard"] += len(hard)
            c["noise_hard_candidates"] += int(noise[hard_candidates].sum())
            c["noise_kept_hard"] += int(noise[hard].sum())
        if self.trace is not None:
            self.trace(batch.step, candidates, hard_candidates, hard, dropped)
        return Decision((~dropped).float(), dropped)

    def _candidates(self, batch: SampleBatch, k: int) -> torch.Tensor:
        """LD: B_N, the k largest-loss samples; with ``ld_candidates = positives`` (BCE) only
        observed pairs compete, at most all of them, as T-CE truncates."""
        losses = batch.losses.detach()
        if batch.objective == "bce" and self.o["ld_candidates"] == "positives":
            positive = batch.labels > 0
            losses = torch.where(positive, losses, torch.full_like(losses, -math.inf))
            k = min(k, int(positive.sum()))
        return torch.topk(losses, min(k, len(losses))).indices

    def _noise_mask(self, batch: SampleBatch) -> torch.Tensor:
        """Per sample: is its positive pair injected noise (BCE negatives never are)."""
        index = batch.pair_index
        noise = torch.zeros(len(index), dtype=torch.bool, device=index.device)
        if self.is_noise is not None and len(self.is_noise):
            valid = index >= 0
            noise[valid] = self.is_noise[index[valid]]
        return noise

    def _prune(self, batch: SampleBatch, candidates: torch.Tensor) -> torch.Tensor:
        """VS (or RS): the hard candidates B_HC within B_N."""
        users = batch.users[candidates]
        if batch.objective == "bpr":
            assert batch.neg_items is not None  # BPR samples carry their negatives
            groups = [(candidates, batch.items[candidates]), (candidates, batch.neg_items[candidates])]
            groups = [(idx, self.history.variance(users, items)) for idx, items in groups]
        else:
            labels = batch.labels[candidates] > 0
            variance = self.history.variance(users, batch.items[candidates])
            groups = [(candidates[labels], variance[labels]), (candidates[~labels], variance[~labels])]
        chosen = torch.unique(torch.cat([idx[top_fraction(v, self.o["eps_v"])] for idx, v in groups]))
        if self.variant["pruning"] == "random":
            # RS: as many samples as VS would pick, uniformly from B_N.
            order = torch.randperm(len(candidates), generator=self.rng)[:len(chosen)].to(candidates.device)
            chosen = candidates[order]
        return chosen

    def _judge_batch(self, batch: SampleBatch, chosen: torch.Tensor) -> torch.Tensor:
        """LMS: which of the chosen samples are hard (a bool mask over ``chosen``).

        With ``score_from`` n > 1 a sample whose positive (a training pair) has been a hard
        candidate in fewer than n batches so far is not sent to the LLM: unscored, it is not
        hard (dropped, as LD drops it); BCE's negative samples are judged as before.
        """
        if len(chosen) == 0:
            return torch.zeros(0, dtype=torch.bool, device=chosen.device)
        if self.o["score_from"] > 1:
            rows = batch.pair_index[chosen].cpu().numpy()
            positive = rows >= 0
            np.add.at(self._appearances, rows[positive], 1)
            ready = ~positive
            ready[positive] = self._appearances[rows[positive]] >= self.o["score_from"]
            self._counts["deferred"] = self._counts.get("deferred", 0) + int((~ready).sum())
            hard = torch.zeros(len(chosen), dtype=torch.bool, device=chosen.device)
            if ready.any():
                index = torch.as_tensor(np.flatnonzero(ready), device=chosen.device)
                hard[index] = self._judge_scored(batch, chosen[index])
            return hard
        return self._judge_scored(batch, chosen)

    def _judge_scored(self, batch: SampleBatch, chosen: torch.Tensor) -> torch.Tensor:
        """The LLM's verdict on every chosen sample (a bool mask over ``chosen``)."""
        judge = self.judge
        assert judge is not None  # only called while the LLM is on
        users = batch.users[chosen].cpu().numpy()
        items = batch.items[chosen].cpu().numpy()
        step, a = batch.step, self.o["alpha"]
        n = len(users)
        if batch.objective == "bpr":
            assert batch.neg_items is not None  # BPR samples carry their negatives
            if self.pool is not None:
                # The negative side is the user's pool (asked after the positives, so a listwise
                # judge puts a user's positive and pool items in one list).
                index, pool_items = self.pool.items(users)
                scores = judge.scores(np.concatenate([users, users[index]]), np.concatenate([items, pool_items]))
                pos, neg = scores[:n], mean_by_sample(index, scores[n:], n)
            else:
                negs = batch.neg_items[chosen].cpu().numpy()
                scores = judge.scores(np.concatenate([users, users]), np.concatenate([items, negs]))
                pos, neg = scores[:n], scores[n:]
            eps_pair = falling(step, a, self.o["eps_pair_max"], self.o["eps_pair_min"])
            hard = hard_pairwise(pos, neg, eps_pair, self.o["hard_rule"])
            self._counts["scored_pairs"] += len(scores)
        else:
            labels = batch.labels[chosen].cpu().numpy()
            if self.pool is not None:
                # Positives are scored themselves; a negative by its user's pool.
                negative = np.flatnonzero(labels == 0)
                positive = np.flatnonzero(labels != 0)
                index, pool_items = self.pool.items(users[negative])
                scores = judge.scores(np.concatenate([users[positive], users[negative][index]]),
                                           np.concatenate([items[positive], pool_items]))
                judged = np.full(n, np.nan)
                judged[positive] = scores[:len(positive)]
                judged[negative] = mean_by_sample(index, scores[len(positive):], len(negative))
            else:
                scores = judged = judge.scores(users, items)
            self._counts["scored_pairs"] += len(scores)
            scores = judged
            eps_pos = falling(step, a, self.o["eps_pos_max"], self.o["eps_pos_min"])
            eps_neg = rising(step, a, self.o["eps_neg_min"], self.o["eps_neg_max"])
            hard = hard_pointwise(scores, labels, eps_pos, eps_neg, self.o["hard_rule"])
        return torch.as_tensor(hard, device=chosen.device)

    def _remember_negatives(self, batch: SampleBatch) -> None:
        if batch.objective == "bpr":
            assert batch.neg_items is not None
            self._epoch_negatives.append((batch.users, batch.neg_items))
        else:
            negative = batch.labels == 0
            self._epoch_negatives.append((batch.users[negative], batch.items[negative]))

    # ------------------------------------------------------------------ per epoch

    def end_epoch(self, epoch: int, model: torch.nn.Module) -> dict[str, Any]:
        users, items = self.context.backbone.embeddings(model)
        self.history.add(users, items)
        if self.variant["pu"]:
            self._pos_scores.append(self._score_positives(users, items))
        pu = self._update_preferences(epoch) if self.variant["pu"] and self._llm_on() and self.history.ready else {}
        out: dict[str, Any] = dict(self._counts)
        out["eps_l"] = ld_rate(self.step, self.o["alpha"], self.o["eps_l_max"], self.o["ld_schedule"])
        out.update(pu)
        if self.judge is not None:
            out["llm"] = asdict(self.judge.stats.minus(self._judge_before))
            out["llm_off"] = self.judge.exhausted
        return out

    def _positive_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos_pairs is None:
            data, device = self.context.data, self.context.device
            self._pos_pairs = (torch.as_tensor(data.train_users, device=device).long(),
                               torch.as_tensor(data.train_items, device=device).long())
        return self._pos_pairs

    @torch.no_grad()
    def _score_positives(self, users: torch.Tensor, items: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        pos_users, pos_items = self._positive_pairs()
        return torch.cat([(users[pos_users[s:s + chunk]] * items[pos_items[s:s + chunk]]).sum(-1)
                          for s in range(0, len(pos_users), chunk)])

    def positive_variance(self) -> torch.Tensor:
        """Population variance of every training positive's score over the recorded epochs."""
        return torch.stack(list(self._pos_scores)).var(dim=0, unbiased=False)

    def close(self) -> None:
        # The LLM client holds a thread pool and cache connections.
        if self.judge is not None and self.judge.client is not None:
            self.judge.client.close()

    def _update_preferences(self, epoch: int) -> dict[str, Any]:
        """PU: flag FP positives / FN negatives by variance, rewrite profiles once a pair is confident."""
        data = self.context.data
        eps_l = ld_rate(self.step, self.o["alpha"], self.o["eps_l_max"], self.o["ld_schedule"])
        gamma = self.o["eps_gamma"]
        # Positives: the lowest eps_l fraction of variance is flagged false positive.
        fp_rows = top_fraction(-self.positive_variance(), eps_l).cpu().numpy()
        self.fp_counts[fp_rows] += 1
        confident_fp = np.flatnonzero((self.fp_counts >= gamma) & ~self.fp_done)
        self.fp_done[confident_fp] = True
        # Sampled negatives: the highest eps_l fraction of variance is flagged false negative.
        confident_fn: list[int] = []
        if self._epoch_negatives:
            neg_users = torch.cat([u for u, _ in self._epoch_negatives])
            neg_items = torch.cat([i for _, i in self._epoch_negatives])
            keys = (neg_users.long() * self.n_items + neg_items.long()).cpu().numpy()
            keys, first = np.unique(keys, return_index=True)
            variance = self.history.variance(neg_users[first], neg_items[first])
            flagged = keys[top_fraction(variance, eps_l).cpu().numpy()]
            for key in flagged.tolist():
                count = self.fn_counts.get(key, 0) + 1
                self.fn_counts[key] = count
                if count >= gamma and key not in self.fn_done:
                    self.fn_done.add(key)
                    confident_fn.append(key)
        fp_by_user: dict[int, list[int]] = {}
        for row in confident_fp.tolist():
            fp_by_user.setdefault(int(data.train_users[row]), []).append(int(data.train_items[row]))
        fn_by_user: dict[int, list[int]] = {}
        for key in confident_fn:
            fn_by_user.setdefault(key // self.n_items, []).append(key % self.n_items)
        updated_fp = self._rewrite("update_fp", fp_by_user, epoch)
        updated_fn = self._rewrite("update_fn", fn_by_user, epoch)
        return {"fp_flagged": len(fp_rows), "fn_flagged": len(flagged) if self._epoch_negatives else 0,
                "fp_confident": len(confident_fp), "fn_confident": len(confident_fn),
                "profiles_updated_fp": updated_fp, "profiles_updated_fn": updated_fn}


    def _rewrite(self, task: str, confident: dict[int, list[int]], epoch: int) -> int:
        """Rewrite the profiles of users with at least ``pu_min_items`` confident items of ``task``
        waiting (collected over epochs; 1: every user with a new one, the paper's)."""
        pending = self._pending[task]
        for user, items in confident.items():
            pending.setdefault(user, []).extend(items)
        due = {u: items for u, items in pending.items() if len(items) >= self.o["pu_min_items"]}
        for user in due:
            del pending[user]
        if not due or self.judge is None:
            return 0
        return self.judge.update_profiles(task, due, epoch)


# ---------------------------------------------------------------------- construction


def build_judge(options: dict[str, Any], context: TrainContext, dry: bool = False,
                user_profiles: dict[str, str] | None = None) -> LLMJudge:
    """The LLM side for a run: settings (flags > env > config), client, templates, profiles.

    ``user_profiles`` replaces the stored ones (the cost estimate's stand-ins before summarize ran).
    """
    from llmhd_cli.llm.client import make_client
    from llmhd_cli.llm.profiles import ProfileStore
    from llmhd_cli.llm.prompts import prompts_dir_setting, template_set_for
    from llmhd_cli.llm.settings import resolve_settings

    settings = resolve_settings(provider=options["provider"], model=options["model"], base_url=options["base_url"],
                                concurrency=options["concurrency"], max_cost=options["max_cost"], require_key=not dry)
    # Recorded in the run's config.toml, so a rerun (and evaluate's leak check) sees the judge
    # that scored, even when it came from the environment or the user config.
    options["provider"], options["model"] = settings.provider, settings.model
    dataset = context.dataset
    store = ProfileStore(dataset)
    if user_profiles is not None:
        profiles, origin = user_profiles, "the caller (stand-ins)"
    else:
        profiles, origin = store.user_profiles(settings.provider, settings.model)
    if not profiles:
        profiles, origin = store.user_profiles()
    if not profiles:
        raise LLMHDError(
            f"dataset '{dataset.name}' has no user profiles for LLM scoring; "
            f"run: llmhd summarize --dataset {dataset.name} --provider {settings.provider}"
        )
    item_texts, _ = store.item_texts(settings.provider, settings.model)
    if not item_texts:
        raise LLMHDError(f"dataset '{dataset.name}' has no item texts ({dataset.items_file}); "
                         "LLM scoring needs them: prepare it from a source with item texts or profiles")
    log.info("llmhd: user profiles from %s", origin)
    tset = template_set_for(dataset.info.domain, prompts_dir_setting(options["prompts"]))
    tset = tset.for_model(settings.provider, settings.model, settings.context_window)  # prompts fit the model
    client = None if dry else make_client(settings, context.workspace)
    data = context.data
    return LLMJudge(client, tset, data.user_tokens, data.item_tokens, profiles, item_texts, dataset.path,
                    run_dir=context.run_dir, structured=options["structured"], dry=dry,
                    judge_accuracy=options["judge_accuracy"], seed=context.seed,
                    dataset_version=dataset.fingerprint(), scoring=options["scoring"],
                    list_size=options["list_size"])


def check_options(o: dict[str, Any]) -> None:
    from llmhd_cli.redact import mask_url

    check_judge_accuracy(o["judge_accuracy"])
    if o["base_url"] and mask_url(o["base_url"]) != o["base_url"]:
        # The run's config.toml records --base-url: a secret in it would be written to disk.
        raise LLMHDError(f"--base-url {mask_url(o['base_url'])}: holds a credential, which the run's config.toml "
                         "would record; give the URL without it and the key in the provider's environment "
                         "variable or [llm.api_keys] of the user config")
    if o["alpha"] <= 0:
        raise LLMHDError(f"--alpha: must be > 0, got {o['alpha']}")
    for name in ("eps_l_max", "eps_v"):
        if not 0 <= o[name] <= 1:
            raise LLMHDError(f"--{name.replace('_', '-')}: must be in [0, 1], got {o[name]}")
    if o["eps_gamma"] < 1:
        raise LLMHDError(f"--eps-gamma: must be at least 1, got {o['eps_gamma']}")
    if o["history"] < 2:
        raise LLMHDError(f"--history: a variance needs at least 2 epochs, got {o['history']}")
    if o["scoring"] not in SCORING:
        raise LLMHDError(f"--scoring: must be one of {', '.join(SCORING)}, got {o['scoring']!r}")
    for name in ("list_size", "neg_pool", "score_from", "pu_min_items"):
        if o[name] < 1:
            raise LLMHDError(f"--{name.replace('_', '-')}: must be at least 1, got {o[name]}")
    for high, low in (("eps_pos_max", "eps_pos_min"), ("eps_neg_max", "eps_neg_min"), ("eps_pair_max", "eps_pair_min")):
        if o[high] < o[low]:
            raise LLMHDError(f"--{high.replace('_', '-')} ({o[high]}) is below --{low.replace('_', '-')} ({o[low]})")


def _build(options: dict[str, Any], context: TrainContext, dry: bool,
           user_profiles: dict[str, str] | None = None) -> LLMHDDenoiser:
    check_options(options)
    if context.backbone is not None:
        # The score history snapshots final embeddings: refuse a backbone without them up front.
        context.backbone.require_embeddings("llmhd")
    needs_llm = VARIANTS[options["variant"]]["lms"]
    judge = build_judge(options, context, dry=dry, user_profiles=user_profiles) if needs_llm else None
    return LLMHDDenoiser(options, context, judge)


def build_denoiser(options: dict[str, Any], context: TrainContext) -> Denoiser:
    """The ``llmhd`` denoiser of a training run (the factory of the package's `SPEC` calls it)."""
    return _build(options, context, dry=False)


def build_dry_run(options: dict[str, Any], context: TrainContext,
                  user_profiles: dict[str, str] | None = None) -> LLMHDDenoiser:
    """The denoiser exactly as training builds it, but with a dry judge: nothing is sent, every
    score is unknown (so B_HC is dropped as in LD) and ``denoiser.judge.dry_requests`` collects
    the unique T_score / T_fp / T_fn requests a real run would send. Used by ``llmhd cost``."""
    return _build(options, context, dry=True, user_profiles=user_profiles)
