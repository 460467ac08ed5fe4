"""The LLM side of LLMHD during training: score pairs (T_score), rewrite profiles (T_fp, T_fn).

Pairs are identified by RecBole's internal ids and mapped to the dataset's tokens and texts
here. Every (user, profile version, item) is scored at most once per run (an in-memory memo);
the client's disk cache makes the same prompt free in later runs. A local provider that scores
in bulk (`Provider.bulk_tasks`: embed, oracle) gets each batch's new pairs in one call, as
variables, without rendered prompts or the disk cache; each pair counts as one call. In ``dry``
mode nothing is sent: the unique requests are only collected (rendered, for every provider),
which is what the pre-run cost estimate counts; a profile rewrite PU asks for is not sent
either, but it still starts a new profile version (its text a stand-in: the old one), so the
estimate counts the T_score prompts a real run's rewritten profiles cause.

Scoring (``scoring``): ``pairwise`` sends one T_score prompt per pair (the paper's Figure 6);
``listwise`` (default) groups the pairs one call of `scores` needs by (user, profile version)
and sends one ``score_list`` prompt per group of at most ``list_size`` items, so the profile
and the instructions are paid once per group. The pairs scored are the same either way. A
listed item whose score is missing or malformed in the answer (`OutputSpec.parse_list`) is
counted (``list_missing``, each answer's) and re-asked once, with the other missing items of that
user, in a new list (``list_reasked``); still missing, it is unscored (NaN), never an error. An
answer with no valid line at all is malformed: the client re-asks that list once (as any
malformed answer), and its items are counted missing, not asked a third time. Only
generative providers (and the dry run, which renders what they would be sent) get lists:
local providers score each pair in bulk or one by one as before.

Simulated judge error (``judge_accuracy`` p < 1): each score the judge hands out is, with
probability 1 - p, replaced by a uniform draw from 1..10. The draw is a hash of (run seed, user,
profile version, item), so a pair keeps one score within a run and reruns reproduce it; it is
applied after the memo and the cache, which keep the provider's true answers.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.usage import Usage

log = logging.getLogger(__name__)


SCORING = ("listwise", "pairwise")


@dataclass
class JudgeStats(Usage):
    """Counters of the judge's LLM use (deltas per epoch are taken by the denoiser).

    The `Usage` counters (``calls``: answered provider calls not from the cache, a bulk-scored
    pair being one; ``cache_hits``, ``failures``, tokens, ``cost``) plus the judge's own.
    """

    score_requests: int = 0  # pairs that needed a score (memo misses)
    memo_hits: int = 0  # pairs answered from this run's memo
    unscorable: int = 0  # pairs without a user profile or item text
    profile_updates: int = 0
    simulated_errors: int = 0  # scores handed out replaced by a random one (judge_accuracy < 1)
    score_prompts: int = 0  # T_score prompts sent (pairwise: one per pair; listwise: one per list)
    list_missing: int = 0  # listed items whose score was missing or malformed in an answer (each answer's)
    list_reasked: int = 0  # items asked again in a new list (once each; from partly valid answers)

    def minus(self, other: JudgeStats) -> JudgeStats:
        return JudgeStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def copy(self) -> JudgeStats:
        return JudgeStats(**asdict(self))


class LLMJudge:
    """Scores (user, item) pairs 1..10 and keeps each user's current preference profile."""

    def __init__(self, client: Any, template_set: Any, user_tokens: np.ndarray, item_tokens: np.ndarray,
                 user_profiles: dict[str, str], item_texts: dict[str, str], dataset_dir: Path,
                 run_dir: Path | None = None, structured: bool = False, dry: bool = False,
                 judge_accuracy: float = 1.0, seed: int = 0, dataset_version: str = "",
                 scoring: str = "listwise", list_size: int = 8) -> None:
        check_judge_accuracy(judge_accuracy)
        if scoring not in SCORING:
            raise LLMHDError(f"--scoring: must be one of {', '.join(SCORING)}, got {scoring!r}")
        if list_size < 1:
            raise LLMHDError(f"--list-size: must be at least 1, got {list_size}")
        self.scoring = scoring
        self.list_size = int(list_size)
        self.client = client
        self.tset = template_set
        self.user_tokens = user_tokens
        self.item_tokens = item_tokens
        self._initial = user_profiles
        self.item_texts = item_texts
        self.dataset_dir = str(dataset_dir)
        self.dataset_version = dataset_version  # PreparedDataset.fingerprint(): keys local scorers' cached answers
        self.run_dir = run_dir
        self.structured = structured
        self.dry = dry
        self.versions = np.zeros(len(user_tokens), dtype=np.int64)
        self.profiles: dict[int, str] = {}  # users whose profile was rewritten in this run
        self.memo: dict[tuple[int, int, int], float] = {}
        self.stats = JudgeStats()
        self.dry_requests: dict[str, LLMRequest] = {}  # dry mode: unique prompts by cache identity
        self.judge_accuracy = float(judge_accuracy)
        self.seed = int(seed)
        provider = getattr(client, "provider", None)
        if provider is not None and provider.model in getattr(provider, "leaky_models", ()):
            log.warning("provider %s model %s reads held-out labels (valid/test): this run's scores LEAK the "
                        "evaluation data; use it only as a diagnostic", provider.name, provider.model)

    # ------------------------------------------------------------------ profiles

    def profile(self, user: int) -> str | None:
        if user in self.profiles:
            return self.profiles[user]
        return self._initial.get(str(self.user_tokens[user]))

    @property
    def exhausted(self) -> bool:
        """True once the client's budget stopped it: LLM scoring is off for the rest of the run."""
        return bool(getattr(self.client, "stats", None) and self.client.stats.budget_exhausted)

    # ------------------------------------------------------------------ scoring

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of the pairs (NaN where no score could be had: failure, budget, missing text),
        with the simulated judge error of ``judge_accuracy`` < 1 applied."""
        out = self._true_scores(users, items)
        if self.judge_accuracy < 1.0 and len(out):
            users = np.asarray(users, dtype=np.int64)
            items = np.asarray(items, dtype=np.int64)
            replace, random_scores = simulated_error(self.seed, users, self.versions[users], items,
                                                     self.judge_accuracy)
            replace &= ~np.isnan(out)  # no score to get wrong
            out = np.where(replace, random_scores, out)
            self.stats.simulated_errors += int(replace.sum())
        return out

    def _true_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The provider's answers (memo, then cache, then calls)."""
        out = np.full(len(users), np.nan)
        todo: dict[tuple[int, int, int], list[int]] = {}
        for n, (u, i) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
            key = (u, int(self.versions[u]), i)
            if key in self.memo:
                out[n] = self.memo[key]
                self.stats.memo_hits += 1
            else:
                todo.setdefault(key, []).append(n)
        if not todo:
            return out
        keys: list[tuple[int, int, int]] = []
        variables: list[dict[str, Any]] = []
        template = self.tset.get("score")
        for key in todo:
            u, _, i = key
            profile, text = self.profile(u), self.item_texts.get(str(self.item_tokens[i]))
            if not profile or not text:
                self.stats.unscorable += 1
                self.memo[key] = math.nan
                continue
            keys.append(key)
            variables.append({
                "user_profile": profile, "item_profile": text, "user_id": str(self.user_tokens[u]),
                "item_id": str(self.item_tokens[i]), "dataset_dir": self.dataset_dir, "dataset_version": self.dataset_version,
            })
        self.stats.score_requests += len(variables)
        if self._bulk("score"):
            values = self._send_bulk("score", template.name, variables)
        elif self._listwise():
            values = self._send_lists(keys, variables)
        else:
            self.stats.score_prompts += len(variables)
            values = self._send([template.render(v, structured=self.structured) for v in variables],
                                [key[1] for key in keys])
        for key, value in zip(keys, values, strict=True):
            self.memo[key] = math.nan if value is None else float(value)
        for key, positions in todo.items():
            out[positions] = self.memo[key]
        return out

    def _listwise(self) -> bool:
        """Lists go to generative providers (and into the dry run's count of what they would be sent)."""
        if self.scoring != "listwise":
            return False
        provider = getattr(self.client, "provider", None)
        return self.dry or bool(getattr(provider, "generative", False))

    def _send_lists(self, keys: list[tuple[int, int, int]], variables: list[dict[str, Any]]) -> list[Any]:
        """Scores of the pairs (in order; None where missing) through ``score_list`` prompts, one
        per (user, profile version) group of at most ``list_size`` items, in first-asked order.
        Items an answer leaves out are re-asked once, grouped the same way."""
        values: list[Any] = [None] * len(keys)
        pending = list(range(len(keys)))
        for attempt in range(2):
            groups: dict[tuple[int, int], list[int]] = {}
            for n in pending:
                groups.setdefault(keys[n][:2], []).append(n)
            lists = [members[s:s + self.list_size] for members in groups.values()
                     for s in range(0, len(members), self.list_size)]
            if attempt:
                self.stats.list_reasked += sum(len(m) for m in lists)
            answers = self._send([self._list_request(variables, members) for members in lists],
                                 [keys[members[0]][1] for members in lists])
            self.stats.score_prompts += len(lists)
            if self.dry:
                break  # the dry run's answers are all unknown: nothing to re-ask
            missing: list[int] = []
            for members, answer in zip(lists, answers, strict=True):
                if not isinstance(answer, dict):
                    # No valid line at all: the client re-asked that list once already and it failed.
                    self.stats.list_missing += len(members)
                    continue
                for position, n in enumerate(members, 1):
                    if position in answer:
                        values[n] = answer[position]
                    else:
                        missing.append(n)
            self.stats.list_missing += len(missing)
            pending = missing
            if not pending:
                break
        return values

    def _list_request(self, variables: list[dict[str, Any]], members: list[int]) -> LLMRequest:
        first = variables[members[0]]
        return self.tset.get("score_list").render({
            "user_profile": first["user_profile"], "item_profiles": [variables[n]["item_profile"] for n in members],
            "n_items": len(members), "user_id": first["user_id"], "item_ids": [variables[n]["item_id"] for n in members],
            "dataset_dir": self.dataset_dir, "dataset_version": self.dataset_version,
        }, structured=self.structured)

    def _bulk(self, task: str) -> bool:
        """A local provider that answers ``task`` in bulk: no prompts rendered, no cache (the dry
        run renders as before: it counts prompts)."""
        supports = getattr(self.client, "supports_bulk", None)
        return not self.dry and supports is not None and bool(supports(task))

    def _send_bulk(self, task: str, template: str, variables: list[dict[str, Any]]) -> list[Any]:
        """Values in order (None for failures) from one bulk call; each counts as a local call."""
        if not variables:
            return []
        values = self.client.run_bulk(task, template, variables)
        failed = sum(v is None for v in values)
        self.stats.calls += len(values) - failed
        self.stats.failures += failed
        return values

    def _send(self, requests: list[LLMRequest], versions: list[int] | None = None) -> list[Any]:
        """Parsed values in order (None for failures); in dry mode only record the requests
        (unique by prompt and by the user's profile ``versions``: a dry run's rewritten profile
        keeps its text, but a real run's new text would make new prompts)."""
        if not requests:
            return []
        if self.dry:
            for r, version in zip(requests, versions or [0] * len(requests), strict=True):
                self.dry_requests.setdefault(f"{version}:{_identity(r)}", r)
            return [None] * len(requests)
        results = self.client.run(requests)
        for r in results:
            self.stats.cache_hits += int(r.cached)
            self.stats.calls += int(r.ok and not r.cached)
            self.stats.failures += int(not r.ok)
            self.stats.input_tokens += r.input_tokens if not r.cached else 0
            self.stats.output_tokens += r.output_tokens if not r.cached else 0
            self.stats.cost += r.cost
        return [r.value if r.ok else None for r in results]

    # ------------------------------------------------------------------ preference updates

    def update_profiles(self, task: str, user_items: dict[int, list[int]], epoch: int) -> int:
        """Rewrite each user's profile from confident FP (``update_fp``) or FN (``update_fn``) items.

        Returns how many profiles changed. A failed call leaves that user's profile as it was.
        """
        template = self.tset.get(task)
        users, requests = [], []
        for u, items in sorted(user_items.items()):
            profile = self.profile(u)
            texts = [self.item_texts[t] for t in (str(self.item_tokens[i]) for i in items) if t in self.item_texts]
            if not profile or not texts:
                continue
            users.append(u)
            requests.append(template.render({
                "user_profile": profile, "item_profiles": texts, "n_items": len(texts),
                "user_id": str(self.user_tokens[u]), "dataset_dir": self.dataset_dir, "dataset_version": self.dataset_version,
            }, structured=self.structured))
        changed = 0
        answers = self._send(requests, [int(self.versions[u]) for u in users])
        if self.dry:
            # Nothing was sent, but a real run's rewrite starts a new profile version, whose pairs
            # are scored anew: advance the version (the text stays: a stand-in of the same length).
            answers = [self.profile(u) for u in users]
        for u, value in zip(users, answers, strict=True):
            if not value:
                continue
            if self.versions[u] == 0:
                self._record(u, 0, epoch, "initial", [], self.profile(u))
            self.versions[u] += 1
            self.profiles[u] = str(value)
            self._record(u, int(self.versions[u]), epoch, task, user_items[u], self.profiles[u])
            changed += 1
        self.stats.profile_updates += changed
        return changed

    def _record(self, user: int, version: int, epoch: int, kind: str, items: list[int], profile: str | None) -> None:
        # Every version of every rewritten profile is kept with the run (a dry run's are stand-ins).
        if self.run_dir is None or self.dry:
            return
        row = {"user": str(self.user_tokens[user]), "version": version, "epoch": epoch, "kind": kind,
               "items": [str(self.item_tokens[i]) for i in items], "profile": profile}
        with (Path(self.run_dir) / "profiles.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def check_judge_accuracy(value: float) -> None:
    """Raise `LLMHDError` unless ``value`` is a probability."""
    if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
        raise LLMHDError(f"--judge-accuracy: must be in [0, 1] (the probability a score is the judge's own), "
                         f"got {value}")


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 arrays (wrapping arithmetic): a well-spread hash."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (x ^ (x >> np.uint64(31))) & _MASK64


def simulated_error(seed: int, users: np.ndarray, versions: np.ndarray, items: np.ndarray,
                    accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """(replace mask, random scores 1..10) per pair, a pure function of (seed, user, version, item).

    Counter-based rather than a generator, so a pair's draw does not depend on which batch it
    came in or in what order pairs were scored.
    """
    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        h = _mix(np.full(len(users), np.uint64(seed % 2**64)) + golden)
        for part in (users, versions, items):
            h = _mix(h ^ (np.asarray(part).astype(np.int64).astype(np.uint64) + golden))
        coin = (h >> np.uint64(11)).astype(np.float64) / float(2**53)  # uniform in [0, 1)
        draw = _mix(h + golden)
    return coin >= accuracy, (draw % np.uint64(10)).astype(np.float64) + 1.0


def _identity(request: LLMRequest) -> str:
    return json.dumps([request.template, request.template_hash, request.system, request.prompt], ensure_ascii=False)
