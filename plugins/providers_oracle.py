"""The ``oracle`` provider: a research diagnostic that scores from the ground-truth ratings.

UPPER BOUND, not a model: it reads ``ratings.tsv`` of the prepared dataset (every rated pair,
held-out and low-rated ones included), so it knows what no recommender can. Use it to measure
how well LLMHD would denoise with a perfect judge; never as a default.

- ``score``: rating r on the dataset's scale [lo, hi] (1..5 for MovieLens/Yelp) maps linearly
  onto 1..10: score = 1 + floor(9 (r - lo) / (hi - lo) + 1/2), so 1->1, 2->3, 3->6, 4->8, 5->10. A pair the user never rated scores `UNRATED_SCORE` (1): the user did not choose it.
- ``summarize``/``update_*``/``item_profile``: it has nothing to say; it returns the user's
  current profile (or a placeholder naming the user) and the item text unchanged, so a
  pipeline runs end to end with it.

It needs ``variables['dataset_dir']``, ``user_id`` and ``item_id`` on score requests.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError

UNRATED_SCORE = 1


def rating_to_score(rating: float, lo: float = 1.0, hi: float = 5.0) -> int:
    """Linear map of a rating on [lo, hi] onto 1..10 (clipped)."""
    if hi <= lo:
        return 10
    return int(min(10, max(1, 1 + math.floor(9 * (float(rating) - lo) / (hi - lo) + 0.5))))


class RatingTable:
    """(user, item) -> rating for one dataset, with its rating scale."""

    def __init__(self, dataset_dir: Path) -> None:
        import pandas as pd

        path = Path(dataset_dir) / "ratings.tsv"
        if not path.exists():
            raise ProviderError(f"provider 'oracle' needs ratings: {path} does not exist "
                                "(the dataset has no explicit ratings)", fatal=True)
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        cols = list(frame.columns)
        ratings = frame[cols[2]].astype(float)
        self.ratings = dict(zip(zip(frame[cols[0]], frame[cols[1]]), ratings))
        # MovieLens and Yelp use 1..5; a source with another scale keeps its own range.
        self.lo = min(1.0, float(ratings.min())) if len(ratings) else 1.0
        self.hi = max(5.0, float(ratings.max())) if len(ratings) else 5.0

    def score(self, user: str, item: str) -> int:
        rating = self.ratings.get((str(user), str(item)))
        return UNRATED_SCORE if rating is None else rating_to_score(rating, self.lo, self.hi)


class OracleProvider(Provider):
    name = "oracle"
    description = ("UPPER BOUND diagnostic, not a model: scores from the dataset's ground-truth ratings "
                   "(ratings.tsv, held-out and low-rated included; unrated pairs score 1)")
    models = ("ratings",)
    key_env = None
    generative = False
    needs_key = False
    upper_bound = True

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, base_url, api_key, options)
        self._tables: dict[str, RatingTable] = {}
        self._lock = threading.Lock()

    def table(self, dataset_dir: str) -> RatingTable:
        with self._lock:
            if dataset_dir not in self._tables:
                self._tables[dataset_dir] = RatingTable(Path(dataset_dir))
            return self._tables[dataset_dir]

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
