"""The ``oracle`` provider: a research diagnostic that scores from ground-truth labels.

UPPER BOUND, not a model. Two models:

- ``train`` (default): a perfect judge of the TRAINING data and nothing else. It reads the
  training split (``<name>.train.inter``, injected noise included) and ``noise.tsv``: a clean
  training positive scores by its rating (10 when the data is implicit), an injected noise
  pair by its rating (1 when it has none: random noise), and every other pair, held-out
  valid/test positives and pairs the rating filter removed included, is *unobserved* and
  scores `UNRATED_SCORE`. Where the training file has no rating column (random noise on
  rating data), the clean pairs' ratings are looked up in ``ratings.tsv`` for those pairs only.
- ``all-ratings``: LEAKS held-out labels (listed in ``leaky_models``). On top of the above it
  reads every rated pair of ``ratings.tsv`` and the valid/test splits (10 when unrated), so a
  sampled negative that is a held-out positive scores high. Only as a named diagnostic of how
  much that knowledge is worth; runs that use it are warned about and marked.

Ratings on the dataset's scale [lo, hi] (1..5 for MovieLens/Yelp) map linearly onto 1..10:
score = 1 + floor(9 (r - lo) / (hi - lo) + 1/2), so 1->1, 2->3, 3->6, 4->8, 5->10.

``summarize``/``update_*``/``item_profile``: it has nothing to say; it returns the user's
current profile (or a placeholder naming the user) and the item text unchanged, so a pipeline
runs end to end with it. Score requests need ``variables['dataset_dir']``, ``user_id`` and
``item_id``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmhd_cli.datasets import PreparedDataset
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError

UNRATED_SCORE = 1  # an unobserved pair: the user did not choose it
NOISE_SCORE = 1  # injected noise without a rating (random noise)
IMPLICIT_SCORE = 10  # an observed positive of implicit data: the user chose it
TRAIN_MODEL = "train"
LEAKY_MODEL = "all-ratings"


def rating_to_score(rating: float, lo: float = 1.0, hi: float = 5.0) -> int:
    """Linear map of a rating on [lo, hi] onto 1..10 (clipped)."""
    return int(ratings_to_scores(np.array([float(rating)]), lo, hi)[0])


def ratings_to_scores(ratings: np.ndarray, lo: float = 1.0, hi: float = 5.0) -> np.ndarray:
    """`rating_to_score` over an array (NaN ratings are left to the caller)."""
    if hi <= lo:
        return np.full(len(ratings), 10, dtype=np.int64)
    raw = 1 + np.floor(9 * (np.asarray(ratings, dtype=float) - lo) / (hi - lo) + 0.5)
    return np.clip(np.nan_to_num(raw, nan=UNRATED_SCORE), 1, 10).astype(np.int64)


def _read_pairs(path: Path) -> pd.DataFrame:
    """A tab-separated interaction file as columns user, item[, rating] (string ids)."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    cols = list(frame.columns)
    out = pd.DataFrame({"user": frame[cols[0]], "item": frame[cols[1]]})
    if len(cols) > 2 and cols[2].startswith("rating"):
        out["rating"] = pd.to_numeric(frame[cols[2]], errors="coerce")
    return out


def _scale(ratings: pd.Series) -> tuple[float, float]:
    # MovieLens and Yelp use 1..5; a source with another scale keeps its own range.
    known = ratings.dropna()
    if not len(known):
        return 1.0, 5.0
    return min(1.0, float(known.min())), max(5.0, float(known.max()))


class RatingTable:
    """(user, item) -> oracle score for one prepared dataset; ``leaky`` adds held-out labels."""

    def __init__(self, dataset_dir: Path, leaky: bool = False) -> None:
        dataset_dir = Path(dataset_dir)
        if not PreparedDataset.is_prepared(dataset_dir):
            raise ProviderError(f"provider 'oracle': {dataset_dir} is not a prepared dataset (no dataset.json)",
                                fatal=True)
        dataset = PreparedDataset.read(dataset_dir)
        ratings_path = dataset.ratings_file
        train = _read_pairs(dataset.split_file("train"))
        if "rating" not in train.columns and ratings_path.exists():
            # Only the training pairs' ratings: a left merge keeps train's rows and order.
            train = train.merge(_read_pairs(ratings_path), on=["user", "item"], how="left")
        noise_path = dataset.noise_file
        noise = _read_pairs(noise_path) if noise_path.exists() else train.iloc[:0]
        is_noise = pd.MultiIndex.from_frame(train[["user", "item"]]).isin(
            pd.MultiIndex.from_frame(noise[["user", "item"]]))
        # An unrated training pair: noise is low, a clean positive of implicit data is high.
        train["default"] = np.where(is_noise, NOISE_SCORE, IMPLICIT_SCORE)
        frames = [train]
        if leaky:
            held = [_read_pairs(dataset.split_file(s)) for s in ("valid", "test")]
            if ratings_path.exists():
                held.append(_read_pairs(ratings_path))
            frames = [f.assign(default=IMPLICIT_SCORE) for f in held] + frames
        # Training rows last, so they win where a held-out source lists the pair too.
        pairs = pd.concat(frames, ignore_index=True)
        rating = pairs["rating"] if "rating" in pairs.columns else pd.Series(np.nan, index=pairs.index)
        self.lo, self.hi = _scale(rating)
        scores = np.where(rating.notna().to_numpy(), ratings_to_scores(rating.to_numpy(), self.lo, self.hi),
                          pairs["default"].to_numpy())
        self.scores: dict[tuple[str, str], int] = dict(zip(zip(pairs["user"], pairs["item"], strict=True), scores.tolist(), strict=True))

    def score(self, user: str, item: str) -> int:
        return self.scores.get((str(user), str(item)), UNRATED_SCORE)


class OracleProvider(Provider):
    name = "oracle"
    description = ("UPPER BOUND diagnostic, not a model: scores from the training data's ground-truth labels "
                   "(clean positives by rating, injected noise low, everything else, held-out included, "
                   "unobserved = 1); model all-ratings also reads held-out ratings (a LEAK)")
    models = (TRAIN_MODEL, LEAKY_MODEL)
    leaky_models = (LEAKY_MODEL,)
    key_env = None
    generative = False
    needs_key = False
    upper_bound = True
    bulk_tasks = ("score",)

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, base_url, api_key, options)
        self._tables: dict[str, RatingTable] = {}  # loaded once per dataset by this instance
        self._lock = threading.Lock()

    @classmethod
    def check_model(cls, model: str, base_url: str | None = None) -> None:
        if model == "ratings":  # the name of the model that read held-out ratings, before the split
            raise LLMHDError(f"--model ratings: the oracle's models are now '{TRAIN_MODEL}' (training labels "
                             f"only, the default) and '{LEAKY_MODEL}' (also held-out ratings: a leak)")
        super().check_model(model, base_url)

    def table(self, dataset_dir: str) -> RatingTable:
        with self._lock:
            if dataset_dir not in self._tables:
                self._tables[dataset_dir] = RatingTable(Path(dataset_dir), leaky=self.model in self.leaky_models)
            return self._tables[dataset_dir]

    def bulk(self, task: str, variables: list[dict[str, Any]]) -> list[Any]:
        """Scores of many pairs: one table lookup each, as `complete` does one by one."""
        if task not in self.bulk_tasks:
            raise ProviderError(f"provider 'oracle' cannot do task '{task}' in bulk", fatal=True)
        try:
            tables = {d: self.table(d) for d in {str(v["dataset_dir"]) for v in variables}}
            return [tables[str(v["dataset_dir"])].score(v["user_id"], v["item_id"]) for v in variables]
        except KeyError as exc:
            raise ProviderError(f"provider 'oracle': score request lacks variable {exc}", fatal=True) from None

    def complete(self, request: LLMRequest) -> LLMResponse:
        v = request.variables
        if request.task == "score":
            try:
                value: Any = self.table(str(v["dataset_dir"])).score(v["user_id"], v["item_id"])
            except KeyError as exc:
                raise ProviderError(f"provider 'oracle': score request lacks variable {exc}", fatal=True) from None
        elif request.task in ("update_fp", "update_fn"):
            value = str(v.get("user_profile", ""))
        elif request.task == "summarize":
            value = f"(oracle: no summary; scores come from the ratings of user {v.get('user_id', '?')})"
        elif request.task == "item_profile":
            value = str(v.get("item_text", ""))
        else:
            raise ProviderError(f"provider 'oracle' cannot do task '{request.task}'", fatal=True)
        return LLMResponse(text=str(value), input_tokens=0, output_tokens=0, usage_reported=False,
                           model=self.model, value=value)


@hookimpl
def register_providers(register):
    register(OracleProvider)
