"""The ``oracle`` provider knows the training data only; ``all-ratings`` is its named leak; the
judge's simulated error (``--judge-accuracy``).

Datasets are cuts of RecBole's bundled ml-100k prepared the way ``llmhd prepare`` does it:
with low-rating noise (ratings everywhere), random noise (the training file has no rating
column) and without ratings at all (implicit, like the RLMRec Amazon-books split).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_helpers import assert_user_error, call_main, run_cli, write_ml100k_cut

from llmhd_cli.datasets import PreparedDataset
from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import Provider
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.prompts import template_set_for
from llmhd_cli.prepare import PrepareOptions, prepare_dataset
from llmhd_plugins.llmhd.judge import LLMJudge, check_judge_accuracy
from llmhd_plugins.providers_oracle import (
    UNRATED_SCORE,
    OracleProvider,
    RatingTable,
    rating_to_score,
)

N_USERS = 200


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ml100k_cut(tmp_path_factory.mktemp("src"), "cut", N_USERS, with_items=True)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ws")


@pytest.fixture(scope="module")
def rated(ws: Path, source: Path) -> PreparedDataset:
    return prepare_dataset(ws, PrepareOptions(name="rated", source_dir=source, domain="movies"))


@pytest.fixture(scope="module")
def random_noise(ws: Path, source: Path) -> PreparedDataset:
    return prepare_dataset(ws, PrepareOptions(name="randnoise", source_dir=source, noise_source="random"))


@pytest.fixture(scope="module")
def implicit(ws: Path, source: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    folder = tmp_path_factory.mktemp("implicit")
    frame = pd.read_csv(source / "cut.inter", sep="\t")
    frame[["user_id:token", "item_id:token"]].to_csv(folder / "implicit.inter", sep="\t", index=False)
    return prepare_dataset(ws, PrepareOptions(name="implicit", source_dir=folder))


def pairs(dataset: PreparedDataset, split: str) -> pd.DataFrame:
    frame = pd.read_csv(dataset.split_file(split) if split != "noise" else dataset.path / "noise.tsv",
                        sep="\t", dtype=str)
    frame.columns = ["user", "item", "rating"][:len(frame.columns)]
    return frame


def ratings(dataset: PreparedDataset) -> dict[tuple[str, str], float]:
    frame = pd.read_csv(dataset.path / "ratings.tsv", sep="\t", dtype=str)
    return dict(zip(zip(frame.iloc[:, 0], frame.iloc[:, 1], strict=True), frame.iloc[:, 2].astype(float), strict=True))


def table_scores(table: RatingTable, frame: pd.DataFrame) -> np.ndarray:
    return np.array([table.score(u, i) for u, i in zip(frame["user"], frame["item"], strict=True)])


def oracle_score(provider: OracleProvider, dataset: PreparedDataset, user: str, item: str) -> int:
    request = template_set_for("movies").get("score").render({
        "user_profile": "-", "item_profile": "-", "user_id": user, "item_id": item,
        "dataset_dir": str(dataset.path)})
    return provider.complete(request).value


# ------------------------------------------------------------------ what the default oracle knows


def test_held_out_positives_score_as_unobserved_and_only_the_leaky_model_sees_them(rated: PreparedDataset) -> None:
    honest, leaky = OracleProvider(), OracleProvider(model="all-ratings")
    assert honest.model == "train"
    truth = ratings(rated)
    for split in ("valid", "test"):
        held = pairs(rated, split)
        assert len(held) > 100
        for user, item in zip(held["user"][:50], held["item"][:50], strict=True):
            assert oracle_score(honest, rated, user, item) == UNRATED_SCORE
            assert oracle_score(leaky, rated, user, item) == rating_to_score(truth[(user, item)]) >= 6
        # The whole split, through the loaded tables.
        assert set(table_scores(honest.table(str(rated.path)), held)) == {UNRATED_SCORE}
        assert min(table_scores(leaky.table(str(rated.path)), held)) >= 6


def test_pairs_the_rating_filter_removed_are_unobserved(rated: PreparedDataset) -> None:
    truth = ratings(rated)
    train = pairs(rated, "train")
    seen = set(zip(train["user"], train["item"], strict=True))
    removed = [(k, r) for k, r in truth.items() if r == 2 and k not in seen]  # low-rated, not drawn as noise
    assert len(removed) > 50
    honest = RatingTable(rated.path)
    leaky = RatingTable(rated.path, leaky=True)
    assert {honest.score(u, i) for (u, i), _ in removed} == {UNRATED_SCORE}
    assert {leaky.score(u, i) for (u, i), _ in removed} == {rating_to_score(2)} == {3}


def test_training_pairs_score_by_their_rating_and_noise_low(rated: PreparedDataset) -> None:
    table = RatingTable(rated.path)
    train, noise = pairs(rated, "train"), pairs(rated, "noise")
    assert len(noise) > 50
    expected = np.array([rating_to_score(float(r)) for r in train["rating"]])
    assert (table_scores(table, train) == expected).all()
    noise_scores = table_scores(table, noise)
    assert noise_scores.max() <= 3 and set(noise_scores) == {1, 3}
    clean = train.merge(noise, how="left", indicator=True)["_merge"].eq("left_only").to_numpy()
    assert table_scores(table, train[clean]).min() >= 6
    assert table.score(train["user"][0], "no-such-item") == UNRATED_SCORE


def test_random_noise_scores_low_and_clean_ratings_come_from_ratings_tsv(random_noise: PreparedDataset) -> None:
    train, noise = pairs(random_noise, "train"), pairs(random_noise, "noise")
    assert "rating" not in train.columns and len(noise) > 50  # random noise: the file has no ratings
    table = RatingTable(random_noise.path)
    truth = ratings(random_noise)
    assert set(table_scores(table, noise)) == {1}
    clean = train.iloc[:len(train) - len(noise)]  # prepare appends the noise after the clean pairs
    assert (table_scores(table, clean) == [rating_to_score(truth[k]) for k in zip(clean["user"], clean["item"], strict=True)]).all()
    assert set(table_scores(table, pairs(random_noise, "test"))) == {UNRATED_SCORE}


def test_implicit_data_clean_positives_high_noise_and_held_out_low(implicit: PreparedDataset) -> None:
    assert not (implicit.path / "ratings.tsv").exists()
    honest, leaky = RatingTable(implicit.path), RatingTable(implicit.path, leaky=True)
    train, noise, test = pairs(implicit, "train"), pairs(implicit, "noise"), pairs(implicit, "test")
    clean = train.iloc[:len(train) - len(noise)]
    assert set(table_scores(honest, clean)) == {10} and set(table_scores(honest, noise)) == {1}
    assert set(table_scores(honest, test)) == {UNRATED_SCORE}
    assert set(table_scores(leaky, test)) == {10} and set(table_scores(leaky, noise)) == {1}


def test_leaky_model_is_declared_warned_about_and_marked(rated: PreparedDataset, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert Provider.leaky_models == ()
    assert OracleProvider.leaky_models == ("all-ratings",) and OracleProvider.models[0] not in OracleProvider.leaky_models
    with pytest.raises(LLMHDError, match="'train'.*'all-ratings'.*leak"):
        OracleProvider.check_model("ratings")  # the old name of the leaking model
    OracleProvider.check_model("all-ratings")
    for model, warned in (("train", False), ("all-ratings", True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            make_judge(rated, model=model)
        assert any("LEAK" in r.getMessage() for r in caplog.records) == warned
    code, out, _ = run_cli(capsys, None, "providers")
    assert code == 0 and "LEAKS" in out


# ------------------------------------------------------------------ simulated judge error


class DirectClient:
    """The client's interface without its disk cache: each request goes to the provider."""

    def __init__(self, provider: OracleProvider) -> None:
        self.provider = provider

    def run(self, requests: list[Any]) -> list[SimpleNamespace]:
        return [SimpleNamespace(ok=True, cached=False, value=self.provider.complete(r).value, input_tokens=0,
                                output_tokens=0, cost=0.0) for r in requests]


def make_judge(dataset: PreparedDataset, cache: Path | None = None, model: str = "train", accuracy: float = 1.0,
               seed: int = 0) -> LLMJudge:
    """A judge over the dataset's users and items with the oracle; with ``cache``, through the real client."""
    users = np.unique(np.concatenate([pairs(dataset, s)["user"] for s in ("train", "valid", "test")]))
    items = np.unique(np.concatenate([pairs(dataset, s)["item"] for s in ("train", "valid", "test")]))
    provider = OracleProvider(model=model)
    client = LLMClient(provider, cache, concurrency=1) if cache else DirectClient(provider)
    return LLMJudge(client, template_set_for("movies"), users, items, {u: "likes films" for u in users},
                    {i: "a film" for i in items}, dataset.path, judge_accuracy=accuracy, seed=seed,
                    dataset_version=dataset.fingerprint())


def judged_pairs(judge: LLMJudge, dataset: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """Internal ids of the training pairs plus as many held-out ones (in a shuffled order)."""
    frame = pd.concat([pairs(dataset, "train"), pairs(dataset, "test")], ignore_index=True)
    frame = frame.sample(frac=1.0, random_state=0)
    users = np.searchsorted(judge.user_tokens, frame["user"].to_numpy())
    items = np.searchsorted(judge.item_tokens, frame["item"].to_numpy())
    return users, items


@pytest.fixture(scope="module")
def truth(rated: PreparedDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    judge = make_judge(rated)
    users, items = judged_pairs(judge, rated)
    return users, items, judge.scores(users, items)


def test_accuracy_one_changes_nothing(rated: PreparedDataset, tmp_path: Path, truth: Any) -> None:
    users, items, true = truth
    assert len(set(true.tolist())) == 5  # 1, 3, 6, 8, 10: a spread to compare against
    judge = make_judge(rated, None, accuracy=1.0, seed=5)
    assert (judge.scores(users, items) == true).all()
    assert judge.stats.simulated_errors == 0


def test_accuracy_zero_is_uniform_and_independent_of_the_truth(rated: PreparedDataset, tmp_path: Path,
                                                               truth: Any) -> None:
    users, items, true = truth
    judge = make_judge(rated, None, accuracy=0.0)
    noisy = judge.scores(users, items)
    n = len(noisy)
    assert n > 5000 and judge.stats.simulated_errors == n
    counts = np.bincount(noisy.astype(int), minlength=11)[1:]
    assert counts.min() > 0.08 * n and counts.max() < 0.12 * n  # every value about 1/10
    assert abs(np.mean(noisy == true) - 0.1) < 0.02  # agreement only by chance
    assert abs(np.corrcoef(noisy, true)[0, 1]) < 0.05
    for value in (1, 10):  # the same spread whatever the true score
        assert abs(np.mean(noisy[true == value]) - 5.5) < 0.3
    # The memo keeps the provider's true answers.
    assert sorted(judge.memo.values()) == sorted(dict(zip(zip(users.tolist(), items.tolist(), strict=True), true, strict=True)).values())


def test_the_cache_keeps_the_true_answers(rated: PreparedDataset, tmp_path: Path, truth: Any) -> None:
    users, items, true = (a[:400] for a in truth)
    noisy = make_judge(rated, tmp_path, accuracy=0.0).scores(users, items)
    assert np.mean(noisy != true) > 0.5
    # Same cache dir: all true. The oracle scores in bulk (recomputed, not cached); a provider
    # that goes through the cache gets hits of the true answers (tests/test_bulk_scoring.py).
    again = make_judge(rated, tmp_path, accuracy=1.0)
    assert (again.scores(users, items) == true).all()
    assert again.stats.cache_hits + again.stats.calls == again.stats.score_requests > 0


def test_accuracy_p_keeps_about_a_p_fraction(rated: PreparedDataset, tmp_path: Path, truth: Any) -> None:
    users, items, true = truth
    for p in (0.3, 0.8):
        judge = make_judge(rated, None, accuracy=p)
        noisy = judge.scores(users, items)
        replaced = judge.stats.simulated_errors / len(noisy)
        assert abs(replaced - (1 - p)) < 0.02
        # A replacement equals the true score one time in ten.
        assert abs(np.mean(noisy == true) - (p + (1 - p) / 10)) < 0.02


def test_simulated_error_is_deterministic_per_seed_user_version_item(rated: PreparedDataset, tmp_path: Path,
                                                                     truth: Any) -> None:
    users, items, _ = truth
    a = make_judge(rated, None, accuracy=0.5, seed=3)
    first = a.scores(users, items)
    assert (a.scores(users, items) == first).all()  # memo path: a pair keeps its score within a run
    order = np.arange(len(users))[::-1]
    assert (a.scores(users[order], items[order]) == first[order]).all()  # whatever batch or order
    assert (a.scores(users[:7], items[:7]) == first[:7]).all()
    b = make_judge(rated, None, accuracy=0.5, seed=3)  # a rerun
    assert (b.scores(users, items) == first).all()
    c = make_judge(rated, None, accuracy=0.5, seed=4)  # another seed draws anew
    assert np.mean(c.scores(users, items) != first) > 0.2
    # A rewritten profile is a new judge question: its draw is new too.
    user = int(users[0])
    mask = users == user
    before = a.scores(users[mask], items[mask])
    a.versions[user] += 1
    a.profiles[user] = "likes other films"
    after = a.scores(users[mask], items[mask])
    assert mask.sum() > 20 and np.mean(after != before) > 0.2


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_judge_accuracy_out_of_range_is_a_user_error(value: float) -> None:
    with pytest.raises(LLMHDError, match=r"--judge-accuracy: must be in \[0, 1\]"):
        check_judge_accuracy(value)


def test_bad_judge_accuracy_flag_is_one_line_exit_2(ws: Path, rated: PreparedDataset, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert call_main(ws, "summarize", "-d", "rated", "--provider", "oracle") == 0
    code, out, err = run_cli(capsys, ws, "train", "-d", "rated", "--denoiser", "llmhd", "--provider", "oracle",
                             "--judge-accuracy", "1.5", "--epochs", "1", "--threads", "1",
                             "--run-dir", str(tmp_path / "run"))
    assert_user_error(code, out, err, "--judge-accuracy", "[0, 1]", "1.5")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ end to end


def oracle_run(ws: Path, run_dir: Path, *flags: str) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, ...]]]:
    """A 3-epoch llmhd run with the oracle; returns its log and every (users, items, scores) judged."""
    seen: list[tuple[np.ndarray, ...]] = []
    original = LLMJudge.scores

    def spy(self: LLMJudge, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = original(self, users, items)
        seen.append((self.user_tokens[users], self.item_tokens[items], out))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LLMJudge, "scores", spy)
        assert call_main(ws, "train", "-d", "rated", "--denoiser", "llmhd", "--provider", "oracle", "--alpha", "50",
                         "--epochs", "3", "--batch-size", "256", "--device", "cpu", "--threads", "1",
                         "--early-stop", "0", "--run-dir", str(run_dir), *flags) == 0
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return log, seen


@pytest.mark.slow
def test_oracle_runs_no_longer_see_the_test_set_and_accuracy_zero_keeps_noise(
        ws: Path, rated: PreparedDataset, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert call_main(ws, "summarize", "-d", "rated", "--provider", "oracle") == 0
    held = set()
    for split in ("valid", "test"):
        frame = pairs(rated, split)
        held |= set(zip(frame["user"], frame["item"], strict=True))

    def held_out_scores(seen: list[tuple[np.ndarray, ...]]) -> np.ndarray:
        return np.array([s for users, items, scores in seen for u, i, s in zip(users, items, scores, strict=True)
                         if (u, i) in held])

    _, seen = oracle_run(ws, tmp_path / "honest", "--hard-rule", "agreement")
    honest = held_out_scores(seen)
    assert len(honest) > 20  # sampled negatives among the judged pairs are held-out positives...
    assert set(honest.tolist()) == {UNRATED_SCORE}  # ...and the default oracle cannot tell
    with caplog.at_level(logging.WARNING):
        log, seen = oracle_run(ws, tmp_path / "leaky", "--hard-rule", "agreement", "--model", "all-ratings")
    assert held_out_scores(seen).min() >= 6 and any("LEAK" in r.getMessage() for r in caplog.records)
    # A perfect judge under the agreement rule never keeps a noisy positive; a random one does.
    assert log[-1]["denoiser"]["noise_hard_candidates"] > 0 and log[-1]["denoiser"]["noise_kept_hard"] == 0
    log, _ = oracle_run(ws, tmp_path / "random", "--hard-rule", "agreement", "--judge-accuracy", "0")
    d = log[-1]["denoiser"]
    assert d["noise_kept_hard"] > 0 and d["llm"]["simulated_errors"] > 0


def test_a_dataset_prepared_again_under_its_name_gets_fresh_cached_answers(source: Path, tmp_path: Path) -> None:
    """The cache keys local scorers' answers by the dataset's fingerprint: after `prepare --force`
    with another split seed, a pair that moved from held-out into training scores by its rating,
    not as the unobserved pair the old split's cached answer says."""
    ws, cache = tmp_path / "ws", tmp_path / "cache"
    old = prepare_dataset(ws, PrepareOptions(name="again", source_dir=source, seed=1))
    old_fingerprint, old_judge = old.fingerprint(), make_judge(old, cache)
    held_out = pairs(old, "test")
    users = np.searchsorted(old_judge.user_tokens, held_out["user"].to_numpy())
    items = np.searchsorted(old_judge.item_tokens, held_out["item"].to_numpy())
    assert (old_judge.scores(users, items) == UNRATED_SCORE).all()
    old_judge.client.close()

    new = prepare_dataset(ws, PrepareOptions(name="again", source_dir=source, seed=2, force=True))
    assert new.fingerprint() != old_fingerprint
    moved = held_out.merge(pairs(new, "train"), on=["user", "item"])  # held out before, trained on now
    assert len(moved) > 100
    judge = make_judge(new, cache)
    scores = judge.scores(np.searchsorted(judge.user_tokens, moved["user"].to_numpy()),
                          np.searchsorted(judge.item_tokens, moved["item"].to_numpy()))
    assert (scores > UNRATED_SCORE).mean() > 0.9  # by their ratings (3..5 -> 6..10), noise aside
    judge.client.close()
