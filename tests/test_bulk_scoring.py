"""Bulk scoring by local providers (embed, oracle): the same scores as one request at a time.

`Provider.bulk` / `LLMClient.run_bulk` answer many score requests in one call from their
variables, skipping the prompts, the disk cache and the claims. Pinned here: bulk values equal
`complete`'s for the same pairs (embed over quoted, unquoted, reference and no-evidence cases,
with and without a dataset; the oracle over every training and held-out pair), the judge's
scores and counters through both paths, the memo and the simulated judge error on top, and a
provider without the capability still going through `LLMClient.run` (cache, ledger, dry run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.ledger import read_ledger
from llmhd_cli.llm.prompts import template_set_for
from llmhd_cli.prepare import PrepareOptions, prepare_dataset
from llmhd_plugins.llmhd.judge import LLMJudge
from llmhd_plugins.providers_embed import NO_EVIDENCE_SCORE, EmbedProvider, reference_texts
from llmhd_plugins.providers_oracle import OracleProvider

N_USERS = 60


class PerRequestEmbed(EmbedProvider):
    """embed without the bulk capability: every pair goes through `LLMClient.run` as before."""

    bulk_tasks = ()


class PerRequestOracle(OracleProvider):
    bulk_tasks = ()


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return prepare_dataset(tmp_path_factory.mktemp("ws"), PrepareOptions(name="ml-100k"))


@pytest.fixture(scope="module")
def provider() -> EmbedProvider:
    return EmbedProvider()


def train_pairs(dataset: Any) -> pd.DataFrame:
    frame = pd.read_csv(dataset.split_file("train"), sep="\t", dtype=str, keep_default_na=False)
    return frame.iloc[:, :2].set_axis(["user", "item"], axis=1)


def item_texts(dataset: Any) -> dict[str, str]:
    rows = [json.loads(line) for line in (Path(dataset.path) / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    return {str(r["item_id"]): r["text"] for r in rows if r.get("text")}


@pytest.fixture(scope="module")
def profiles(ml100k: Any, provider: EmbedProvider) -> dict[str, str]:
    """Extractive profiles of the first users, as summarize writes them, plus edge cases."""
    texts = item_texts(ml100k)
    train = train_pairs(ml100k)
    users = sorted(train["user"].unique())[:N_USERS]
    out = {u: provider._summarize({"item_profiles": [texts[i] for i in train[train["user"] == u]["item"] if i in texts]})
           for u in users}
    refs = reference_texts(Path(ml100k.path))
    out[users[0]] = "\n".join(refs[:8])  # quotes reference items: they leave their own evidence
    out[users[1]] = refs[20]  # one line: the item itself leaves no evidence (the median)
    out[users[2]] = "Loves slow European dramas. Dislikes loud action films."  # an LLM-written profile
    return out


def score_variables(ml100k: Any, profiles: dict[str, str], dataset_dir: bool = True) -> list[dict[str, Any]]:
    texts = item_texts(ml100k)
    items = sorted(texts)
    refs = reference_texts(Path(ml100k.path))
    rng = np.random.default_rng(0)
    out = []
    for u, profile in profiles.items():
        quoted = [t for t in texts.values() if t in profile.splitlines()]
        chosen = [texts[items[k]] for k in rng.choice(len(items), 25, replace=False)] + quoted + refs[18:22]
        for text in chosen:
            out.append({"user_profile": profile, "item_profile": text, "user_id": u, "item_id": "x",
                        **({"dataset_dir": str(ml100k.path)} if dataset_dir else {})})
    return out


def one_by_one(provider: EmbedProvider, variables: list[dict[str, Any]]) -> list[int]:
    template = template_set_for("movies").get("score")
    return [provider.complete(template.render(v)).value for v in variables]


@pytest.mark.parametrize("with_dataset", [True, False], ids=["calibrated", "default-cuts"])
def test_embed_bulk_scores_equal_the_per_request_scores(ml100k: Any, provider: EmbedProvider,
                                                        profiles: dict[str, str], with_dataset: bool) -> None:
    variables = score_variables(ml100k, profiles, with_dataset)
    fresh = EmbedProvider()  # empty profile cache: bulk builds the evidence itself
    bulk = fresh.bulk("score", variables)
    assert bulk == one_by_one(provider, variables)
    assert all(isinstance(s, int) and 1 <= s <= 10 for s in bulk) and len(set(bulk)) == 10
    quoted = [s for v, s in zip(variables, bulk, strict=True) if v["item_profile"] in v["user_profile"].splitlines()]
    assert len(quoted) > N_USERS  # the leave-one-out path is exercised
    single = [s for v, s in zip(variables, bulk, strict=True) if v["user_profile"] == v["item_profile"]]
    assert single and set(single) == {NO_EVIDENCE_SCORE}
    assert fresh.bulk("score", variables[::-1]) == bulk[::-1]  # order and grouping do not matter


def test_embed_bulk_refuses_other_tasks_and_missing_variables(provider: EmbedProvider) -> None:
    from llmhd_cli.llm.base import ProviderError

    with pytest.raises(ProviderError, match="cannot do task 'summarize'"):
        provider.bulk("summarize", [{"item_profiles": ["a"]}])
    with pytest.raises(ProviderError, match="lacks variable"):
        provider.bulk("score", [{"user_profile": "a"}])


def test_oracle_bulk_scores_equal_the_per_request_scores(ml100k: Any) -> None:
    held = pd.read_csv(ml100k.split_file("test"), sep="\t", dtype=str, keep_default_na=False).iloc[:, :2]
    frame = pd.concat([train_pairs(ml100k).iloc[::10], held.set_axis(["user", "item"], axis=1).iloc[::5],
                       pd.DataFrame({"user": ["1", "2"], "item": ["999999", "1"]})])  # unknown item, unrated pair
    template = template_set_for("movies").get("score")
    variables = [{"user_profile": "p", "item_profile": "t", "user_id": u, "item_id": i,
                  "dataset_dir": str(ml100k.path)} for u, i in zip(frame["user"], frame["item"], strict=True)]
    for model in ("train", "all-ratings"):
        oracle = OracleProvider(model=model)
        bulk = oracle.bulk("score", variables)
        assert bulk == [oracle.complete(template.render(v)).value for v in variables]
        assert len(set(bulk)) >= 4


# ------------------------------------------------------------------------------ the judge


def make_judge(dataset: Any, provider: Any, cache: Path, profiles: dict[str, str], accuracy: float = 1.0,
               dry: bool = False, scoring: str = "listwise") -> LLMJudge:
    users = np.array(sorted(profiles))
    items = np.array(sorted(item_texts(dataset)))
    client = None if dry else LLMClient(provider, cache, concurrency=2)
    return LLMJudge(client, template_set_for("movies"), users, items, profiles, item_texts(dataset), dataset.path,
                    judge_accuracy=accuracy, seed=3, dry=dry, dataset_version=dataset.fingerprint(), scoring=scoring)


def judged(judge: LLMJudge, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each user's training items and 20 random items, twice over in places (a batch repeats pairs)."""
    train = train_pairs(dataset)
    train = train[train["user"].isin(set(judge.user_tokens))]
    rng = np.random.default_rng(1)
    users = np.searchsorted(judge.user_tokens, train["user"].to_numpy())
    items = np.searchsorted(judge.item_tokens, train["item"].to_numpy())
    extra_u = rng.integers(0, len(judge.user_tokens), 20 * len(judge.user_tokens))
    extra_i = rng.integers(0, len(judge.item_tokens), len(extra_u))
    users, items = np.concatenate([users, extra_u, users[:50]]), np.concatenate([items, extra_i, items[:50]])
    return users, items


@pytest.mark.parametrize("accuracy", [1.0, 0.6])
def test_judge_bulk_path_gives_the_per_request_scores_and_counts_local_calls(
        ml100k: Any, profiles: dict[str, str], tmp_path: Path, accuracy: float) -> None:
    bulk_judge = make_judge(ml100k, EmbedProvider(), tmp_path / "bulk", profiles, accuracy)
    slow_judge = make_judge(ml100k, PerRequestEmbed(), tmp_path / "slow", profiles, accuracy)
    users, items = judged(bulk_judge, ml100k)
    half = len(users) // 2
    bulk, slow = (np.concatenate([j.scores(users[:half], items[:half]), j.scores(users[half:], items[half:])])
                  for j in (bulk_judge, slow_judge))
    np.testing.assert_array_equal(bulk, slow)
    assert bulk_judge.memo == slow_judge.memo or all(
        (np.isnan(a) and np.isnan(slow_judge.memo[k])) or a == slow_judge.memo[k] for k, a in bulk_judge.memo.items())
    b, s = bulk_judge.stats, slow_judge.stats
    assert b.score_requests == s.score_requests == b.calls == s.calls > 0
    assert (b.memo_hits, b.unscorable, b.failures, b.simulated_errors) == (s.memo_hits, s.unscorable, s.failures,
                                                                        s.simulated_errors)
    assert b.memo_hits >= 50 and (b.simulated_errors > 0) == (accuracy < 1)
    assert b.cache_hits == 0 and b.input_tokens == b.output_tokens == 0 and b.cost == 0.0
    assert s.input_tokens > 0  # the per-request path estimates embed's tokens, as before
    # The client counts each bulk-scored pair as a call; nothing is cached, the ledger has the calls.
    client = bulk_judge.client
    assert (client.stats.requests, client.stats.calls, client.stats.cache_hits) == (b.calls, b.calls, 0)
    assert len(client.store) == 0 and len(slow_judge.client.store) == s.calls
    for judge in (bulk_judge, slow_judge):
        judge.client.close()
    (row,) = read_ledger(tmp_path / "bulk")
    assert (row.provider, row.calls, row.cache_hits, row.input_tokens, row.cost) == ("embed", b.calls, 0, 0, 0.0)
    # Asked again: all memo hits, no call.
    again = make_judge(ml100k, EmbedProvider(), tmp_path / "again", profiles, accuracy)
    first = again.scores(users, items)
    calls = again.stats.calls
    np.testing.assert_array_equal(again.scores(users, items), first)
    assert again.stats.calls == calls and again.stats.memo_hits >= len(users)
    again.client.close()


def test_judge_with_the_oracle_scores_in_bulk_and_the_same(ml100k: Any, profiles: dict[str, str],
                                                           tmp_path: Path) -> None:
    bulk_judge = make_judge(ml100k, OracleProvider(), tmp_path / "bulk", profiles)
    slow_judge = make_judge(ml100k, PerRequestOracle(), tmp_path / "slow", profiles)
    users, items = judged(bulk_judge, ml100k)
    np.testing.assert_array_equal(bulk_judge.scores(users, items), slow_judge.scores(users, items))
    assert bulk_judge.stats.calls == slow_judge.stats.calls == bulk_judge.stats.score_requests > 0
    assert slow_judge.stats.cache_hits == 0 and len(bulk_judge.client.store) == 0
    for judge in (bulk_judge, slow_judge):
        judge.client.close()


def test_providers_without_bulk_and_the_dry_run_render_prompts_as_before(ml100k: Any, profiles: dict[str, str],
                                                                        tmp_path: Path) -> None:
    slow = make_judge(ml100k, PerRequestEmbed(), tmp_path / "c", profiles)
    assert not slow.client.supports_bulk("score") and not slow._bulk("score")
    users, items = judged(slow, ml100k)
    first = slow.scores(users, items)
    slow.client.close()
    rerun = make_judge(ml100k, PerRequestEmbed(), tmp_path / "c", profiles)  # the disk cache answers
    np.testing.assert_array_equal(rerun.scores(users, items), first)
    assert rerun.stats.cache_hits == rerun.stats.score_requests > 0 and rerun.stats.calls == 0
    rerun.client.close()
    # The dry run (llmhd cost) renders every unique prompt even for a provider that scores in bulk
    # (pairwise here: one T_score prompt per pair; the listwise dry run is tested in test_listwise.py).
    dry = make_judge(ml100k, EmbedProvider(), tmp_path / "d", profiles, dry=True, scoring="pairwise")
    assert not dry._bulk("score")
    assert np.isnan(dry.scores(users, items)).all()
    assert dry.stats.score_requests == slow.stats.score_requests  # same pairs asked
    assert 0.99 * dry.stats.score_requests < len(dry.dry_requests) <= dry.stats.score_requests  # texts may repeat
    assert all(r.prompt and r.template == "movies/score" for r in dry.dry_requests.values())


def test_a_fatal_bulk_error_stops_the_run_and_a_crash_fails_its_pairs(ml100k: Any, profiles: dict[str, str],
                                                                     tmp_path: Path) -> None:
    from llmhd_cli.llm.base import ProviderError

    class Broken(EmbedProvider):
        def bulk(self, task: str, variables: list[dict[str, Any]]) -> list[Any]:
            raise ProviderError("no model files", fatal=True)

    class Crashing(EmbedProvider):
        def bulk(self, task: str, variables: list[dict[str, Any]]) -> list[Any]:
            raise RuntimeError("bug")

    judge = make_judge(ml100k, Broken(), tmp_path / "a", profiles)
    users, items = judged(judge, ml100k)
    with pytest.raises(LLMHDError, match="no model files"):
        judge.scores(users[:10], items[:10])
    judge.client.close()
    judge = make_judge(ml100k, Crashing(), tmp_path / "b", profiles)
    assert np.isnan(judge.scores(users[:10], items[:10])).all()
    assert judge.stats.failures == judge.stats.score_requests == judge.client.stats.failures > 0
    assert judge.stats.calls == 0
    judge.client.close()


def test_a_dry_runs_profile_rewrite_makes_that_users_pairs_new(ml100k: Any, profiles: dict[str, str],
                                                               tmp_path: Path) -> None:
    """llmhd cost counts what a real run pays: a rewritten profile is a new version, so the
    user's pairs are scored again after the rewrite; other users' pairs stay memoised."""
    dry = make_judge(ml100k, EmbedProvider(), tmp_path / "d", profiles, dry=True, scoring="pairwise")
    users, items = judged(dry, ml100k)
    dry.scores(users, items)
    first = dry.stats.score_requests
    dry.scores(users, items)
    assert dry.stats.score_requests == first  # nothing new without a rewrite
    user = int(users[0])
    assert dry.update_profiles("update_fp", {user: [int(items[0])]}, epoch=1) == 1
    dry.scores(users, items)
    again = len({(int(u), int(i)) for u, i in zip(users, items, strict=True) if u == user})
    assert dry.stats.score_requests == first + again
