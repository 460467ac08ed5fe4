"""The cheaper scoring paths (docs/cost.md): listwise T_score, recurring negative pools, and
``llmhd cost``'s estimate against what a run through a local OpenAI-compatible server spends.

The server (`llm_servers.LocalServer`, a handler on 127.0.0.1) answers the T_score formats
(one ``<s>N</s>``, or ``<n>: <s>N</s>`` lines for a list), rewrites profiles with a 100-word
text (the length T_fp / T_fn allow), and reports prompt tokens counted the way llmhd counts
them offline (`count_prompt_tokens`), so the ledger's tokens and the estimate's are comparable.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import call_main, table_row, write_ml100k_cut
from llm_servers import LocalServer, Recorded, Reply, openai_completion

from llmhd_cli.denoising import SampleBatch, TrainContext
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.ledger import read_ledger
from llmhd_cli.llm.prompts import OutputSpec, template_set_for
from llmhd_cli.llm.tokens import count_prompt_tokens, count_tokens
from llmhd_plugins.llmhd.denoiser import OPTIONS, LLMHDDenoiser
from llmhd_plugins.llmhd.judge import JudgeStats, LLMJudge
from llmhd_plugins.llmhd.negative_pool import NegativePool
from llmhd_plugins.providers_openai import OpenAIProvider

LIST = OutputSpec("int_list", "s", "[0-9]{1,2}", (1, 10), None, "scores")
LIST_LINE = re.compile(r"^(\d+)\. (ITEM-(\d+)\b.*)$")


# ------------------------------------------------------------------ the parser


def test_parse_list_reads_every_valid_line() -> None:
    assert LIST.parse_list("1: <s>7</s>\n2: <s>3</s>\n3: <s>10</s>", 3) == {1: 7, 2: 3, 3: 10}
    assert LIST.parse_list("Item 2 - <s> 4 </s>\n  1) <s>9</s>  ", 2) == {1: 9, 2: 4}


@pytest.mark.parametrize("answer, expected", [
    ("1: <s>7</s>", {1: 7}),  # item 2 missing
    ("1: <s>7</s>\n2: <s>11</s>", {1: 7}),  # out of range
    ("1: <s>7</s>\n2: <s>x</s>", {1: 7}),  # not a number
    ("1: <s>7</s>\n2: <s>3</s>\n2: <s>3</s>", {1: 7}),  # given twice: neither is trusted
    ("1: <s>7</s>\n5: <s>3</s>", {1: 7}),  # no item 5 was listed
    ("1: <s>7</s> 2: <s>3</s>", {}),  # two on one line: not the format
    ("Sure! 1: <s>7</s>\n2: <s>5</s>", {2: 5}),  # a line with more than the format
])
def test_parse_list_leaves_out_what_is_not_exactly_the_format(answer: str, expected: dict[int, int]) -> None:
    if expected:
        assert LIST.parse_list(answer, 2) == expected
    else:
        with pytest.raises(ValueError, match="no valid"):
            LIST.parse_list(answer, 2)


def test_parse_list_structured_and_malformed() -> None:
    answer = json.dumps({"scores": [{"item": 2, "score": 8}, {"item": 1, "score": 0}, {"item": True, "score": 5}]})
    assert LIST.parse_list(answer, 2) == {2: 8}
    for bad in ("", "no scores here", "{not json", json.dumps({"scores": 7}), json.dumps({"other": []})):
        with pytest.raises(ValueError):
            LIST.parse_list(bad, 2)


def test_every_shipped_set_has_a_strict_score_list() -> None:
    for domain in ("books", "businesses", "games", "movies", "items"):
        template = template_set_for(domain).get("score_list")
        request = template.render({"user_profile": "likes things", "item_profiles": ["a", "b", "c"], "n_items": 3})
        assert "1. a\n2. b\n3. c" in request.prompt and "3 " in request.prompt
        assert request.parse("1: <s>2</s>\n3: <s>9</s>") == {1: 2, 3: 9}  # the list's own length
        with pytest.raises(ValueError):
            request.parse("<s>5</s>")


# ------------------------------------------------------------------ a local server


def item_score(item_id: int) -> int:
    return item_id % 10 + 1


REWRITE = " ".join(f"word{k}" for k in range(98))  # a rewritten profile: T_fp/T_fn's 100 words


class ScoringServer:
    """OpenAI chat completions answering T_score (pairwise or listwise) and T_fp / T_fn.

    ``omit_last``: users (profile marker) whose lists lose their last item when they list more
    than one; ``garbage``: users whose every answer is unparseable. Prompt tokens are counted as
    llmhd counts them offline; ``prompt_tokens`` sums what was reported.
    """

    def __init__(self, omit_last: tuple[str, ...] = (), garbage: tuple[str, ...] = ()) -> None:
        self.omit_last, self.garbage = omit_last, garbage
        self.prompt_tokens = self.completion_tokens = self.calls = 0
        self.listed: list[tuple[str, list[int]]] = []  # (user marker, listed item ids) per list call
        self._lock = threading.Lock()
        self.server = LocalServer(self.handle)

    def handle(self, rec: Recorded) -> Reply:
        messages = rec.body["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        prompt = next(m["content"] for m in messages if m["role"] == "user")
        user = (re.search(r"PROFILE-(\w+)", prompt) or re.search(r"(word)0", prompt) or [None, "?"])[1]
        if "<profile>" in prompt:
            answer = f"<profile>PROFILE-{user} {REWRITE}</profile>"
        elif "numbered:" in prompt:
            listed = [(int(m.group(1)), int(m.group(3))) for m in map(LIST_LINE.match, prompt.splitlines()) if m]
            with self._lock:
                self.listed.append((user, [i for _, i in listed]))
            if user in self.omit_last and len(listed) > 1:
                listed = listed[:-1]
            answer = "\n".join(f"{n}: <s>{item_score(i)}</s>" for n, i in listed)
        else:
            found = re.search(r"ITEM-(\d+)", prompt)
            answer = f"<s>{item_score(int(found.group(1)))}</s>" if found else "<s>5</s>"
        if user in self.garbage:
            answer = "I would rather not say."
        tokens_in, _ = count_prompt_tokens(system, prompt, "openai", rec.body["model"])
        tokens_out, _ = count_tokens(answer, "openai", rec.body["model"])
        with self._lock:
            self.calls += 1
            self.prompt_tokens += tokens_in
            self.completion_tokens += tokens_out
        return Reply(200, openai_completion(answer, tokens_in, tokens_out, rec.body["model"]))

    @property
    def url(self) -> str:
        return f"{self.server.url}/v1"

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def scoring_server() -> Any:
    server = ScoringServer(omit_last=("B",), garbage=("C",))
    yield server
    server.close()


def judge_for(server: ScoringServer, cache: Path, scoring: str, list_size: int = 8) -> LLMJudge:
    client = LLMClient(OpenAIProvider(model="gpt-4o-mini", base_url=server.url, api_key="unused"), cache, concurrency=2)
    users = np.array(["[PAD]", "A", "B", "C"])
    items = np.array(["[PAD]"] + [f"i{k}" for k in range(1, 13)])
    profiles = {u: f"PROFILE-{u} likes quiet films" for u in ("A", "B", "C")}
    texts = {f"i{k}": f"ITEM-{k} a film" for k in range(1, 13)}
    return LLMJudge(client, template_set_for("movies"), users, items, profiles, texts, cache,
                    scoring=scoring, list_size=list_size)


def test_listwise_scores_the_same_pairs_as_pairwise_and_reasks_missing_items_once(
        scoring_server: ScoringServer, tmp_path: Path) -> None:
    users = np.array([1, 1, 2, 2, 2, 1, 3, 3, 1])
    items = np.array([1, 2, 3, 4, 5, 1, 6, 7, 8])  # (1, 1) twice: asked once
    judge = judge_for(scoring_server, tmp_path / "list", "listwise", list_size=2)
    scores = judge.scores(users, items)
    expected = np.array([item_score(i) for i in items], dtype=float)
    # A: every item answered; B: each list's last item missing, re-asked once alone, answered;
    # C: every answer malformed (the client re-asks each list once, then fails it); its items are
    # re-asked once more as lists and stay unscored: NaN, not an error.
    np.testing.assert_array_equal(scores[users != 3], expected[users != 3])
    assert np.isnan(scores[users == 3]).all()
    s = judge.stats
    assert s.score_requests == 8  # unique (user, version, item) pairs
    # Lists of at most 2, in first-asked order per user: A (1, 2), (8); B (3, 4), (5); C (6, 7). B's
    # answer loses 4 (its 1-item list keeps 5), which is re-asked once alone; C's answer has no valid
    # line: the client re-asks that list once (malformed answers), then its items stay unscored.
    assert sorted(scoring_server.listed) == sorted([("A", [1, 2]), ("A", [8]), ("B", [3, 4]), ("B", [5]),
                                                    ("B", [4]), ("C", [6, 7]), ("C", [6, 7])])
    assert s.list_reasked == 1  # B's 4
    assert s.list_missing == 1 + 2  # B's 4, C's 6 and 7
    assert s.failures == 1  # C's list (after the client's re-ask)
    assert s.score_prompts == 5 + 1
    judge.client.close()

    pairwise = judge_for(scoring_server, tmp_path / "pair", "pairwise")
    pair_scores = pairwise.scores(users, items)
    assert pairwise.stats.score_requests == s.score_requests  # the same pairs
    np.testing.assert_array_equal(pair_scores[users != 3], scores[users != 3])
    assert pairwise.stats.score_prompts == 8
    pairwise.client.close()


def test_listwise_prompts_pay_the_profile_once(scoring_server: ScoringServer, tmp_path: Path) -> None:
    users, items = np.array([1, 1, 1, 1]), np.array([1, 2, 3, 4])
    tokens = {}
    for scoring in ("pairwise", "listwise"):
        before = scoring_server.prompt_tokens
        judge = judge_for(scoring_server, tmp_path / scoring, scoring)
        judge.scores(users, items)
        tokens[scoring] = scoring_server.prompt_tokens - before
        assert judge.stats.input_tokens == tokens[scoring]  # the judge counts what the server reported
        judge.client.close()
    assert tokens["listwise"] < 0.5 * tokens["pairwise"]


# ------------------------------------------------------------------ negative pools


class AskedJudge:
    """Scores item i as i % 10 + 1 and records what it was asked."""

    def __init__(self) -> None:
        self.stats = JudgeStats()
        self.exhausted = False
        self.asked: list[tuple[np.ndarray, np.ndarray]] = []

        self.rewrites: list[tuple[str, dict[int, list[int]]]] = []

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self.asked.append((users.copy(), items.copy()))
        return (items % 10 + 1).astype(float)

    def update_profiles(self, task: str, user_items: dict[int, list[int]], epoch: int) -> int:
        self.rewrites.append((task, {u: list(i) for u, i in user_items.items()}))
        return len(user_items)


def pool_denoiser(judge: AskedJudge, objective: str = "bpr", **options: Any) -> LLMHDDenoiser:
    opts = {o.name: o.default for o in OPTIONS}
    opts.update(alpha=1.0, eps_l_max=0.5, eps_v=1.0, negatives="pool")
    opts.update(options)
    train_users = np.repeat(np.arange(1, 5), 5)  # users 1..4 have items 1..5
    train_items = np.tile(np.arange(1, 6), 4)
    data = SimpleNamespace(is_noise=np.zeros(20, dtype=bool), train_users=train_users, train_items=train_items)
    context = TrainContext(objective, 5, 40, 20, 1, torch.device("cpu"), data=data, seed=11)
    denoiser = LLMHDDenoiser(opts, context, judge)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        denoiser.history.add(torch.randn(5, 4, generator=gen), torch.randn(40, 4, generator=gen))
    denoiser.start_epoch(2)
    return denoiser


def bpr_batch(step: int) -> SampleBatch:
    gen = torch.Generator().manual_seed(step)
    users = torch.tensor([1, 2, 3, 4, 1, 2, 3, 4])
    items = torch.randint(1, 6, (8,), generator=gen)
    negs = torch.randint(6, 40, (8,), generator=gen)
    losses = torch.rand(8, generator=gen)
    return SampleBatch("bpr", losses, -losses, torch.ones(8), users, items, negs, torch.arange(8), step, 2)


def test_pool_negatives_recur_and_replace_the_sampled_ones() -> None:
    judge = AskedJudge()
    denoiser = pool_denoiser(judge, neg_pool=2, hard_rule="agreement")
    pool = denoiser.pool
    assert isinstance(pool, NegativePool)
    for user in range(1, 5):
        items = pool.pool(user)
        assert len(items) == len(set(items.tolist())) == 2 and not set(items.tolist()) & set(range(1, 6))
    recorder: list[tuple[torch.Tensor, torch.Tensor]] = []
    denoiser.trace = lambda step, bn, bhc, bh, dropped: recorder.append((bhc, bh))
    batches = [bpr_batch(step) for step in (10, 11)]
    for batch in batches:
        denoiser.decide(batch)
    for batch, (asked_users, asked_items), (chosen, hard) in zip(batches, judge.asked, recorder, strict=True):
        users, pos = batch.users[chosen].numpy(), batch.items[chosen].numpy()
        n = len(users)
        # Positives first, then each sample's user's pool; the sampled negatives never reach the LLM.
        np.testing.assert_array_equal(asked_users[:n], users)
        np.testing.assert_array_equal(asked_items[:n], pos)
        expected_pool = np.concatenate([pool.pool(u) for u in users])
        np.testing.assert_array_equal(asked_items[n:], expected_pool)
        assert not set(batch.neg_items[chosen].tolist()) & set(asked_items[n:].tolist()) - set(expected_pool.tolist())
        # The negative side is the mean of the pool's scores: hard (agreement) iff s+ - mean >= eps_pair.
        mean = np.array([np.mean(pool.pool(u) % 10 + 1) for u in users])
        gap = (pos % 10 + 1) - mean
        eps_pair = max(7 - batch.step / 1.0, 3)
        assert set(hard.tolist()) == {int(c) for c, g in zip(chosen.tolist(), gap, strict=True) if g >= eps_pair}
    # The same pool in the next batch (and the next run with this seed).
    again = pool_denoiser(AskedJudge(), neg_pool=2).pool
    assert all((again.pool(u) == pool.pool(u)).all() for u in range(1, 5))
    other_seed = NegativePool(40, np.repeat(np.arange(1, 5), 5), np.tile(np.arange(1, 6), 4), 2, seed=12)
    assert any((other_seed.pool(u) != pool.pool(u)).any() for u in range(1, 5))


def test_fresh_negatives_are_the_sampled_ones() -> None:
    judge = AskedJudge()
    denoiser = pool_denoiser(judge, negatives="fresh")
    assert denoiser.pool is None
    batch = bpr_batch(10)
    chosen_box: list[torch.Tensor] = []
    denoiser.trace = lambda step, bn, bhc, bh, dropped: chosen_box.append(bhc)
    denoiser.decide(batch)
    (asked_users, asked_items), = judge.asked
    n = len(chosen_box[0])
    np.testing.assert_array_equal(asked_items[n:], batch.neg_items[chosen_box[0]].numpy())


def test_bce_pool_judges_negatives_by_the_pool() -> None:
    judge = AskedJudge()
    denoiser = pool_denoiser(judge, objective="bce", neg_pool=1, ld_candidates="all")  # negatives can be candidates
    users = torch.tensor([1, 2, 3, 4, 1, 2, 3, 4])
    items = torch.tensor([1, 2, 3, 4, 20, 21, 22, 23])
    labels = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])
    losses = torch.rand(8, generator=torch.Generator().manual_seed(0))
    batch = SampleBatch("bce", losses, losses, labels, users, items, None, torch.tensor([0, 1, 2, 3, -1, -1, -1, -1]),
                        10, 2)
    chosen_box: list[torch.Tensor] = []
    denoiser.trace = lambda step, bn, bhc, bh, dropped: chosen_box.append(bhc)
    denoiser.decide(batch)
    (asked_users, asked_items), = judge.asked
    chosen = chosen_box[0]
    negative = chosen[labels[chosen] == 0]
    assert len(negative) > 0
    assert not set(asked_items.tolist()) & set(items[negative].tolist())  # never the sampled negatives
    assert set(asked_items.tolist()) >= {int(denoiser.pool.pool(int(u))[0]) for u in users[negative]}


# ------------------------------------------------------------------ estimate vs a real run

DATASET = "small"
FLAGS = ("--epochs", "4", "--alpha", "50", "--eps-gamma", "2", "--batch-size", "1024", "--device", "cpu",
         "--seed", "5")


def profile_text(user: str) -> str:
    """A ~100-word profile (T_sum's limit), deterministic per user."""
    digest = hashlib.sha256(user.encode()).hexdigest()
    return f"PROFILE-{user} " + " ".join(f"taste{digest[k % 60:k % 60 + 3]}" for k in range(98))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = write_ml100k_cut(tmp_path_factory.mktemp("source"), DATASET, 150, with_items=True)
    ws = tmp_path_factory.mktemp("ws")
    assert call_main(ws, "prepare", "-d", DATASET, "--source", str(source), "--kcore", "10", "--domain", "movies") == 0
    path = ws / "datasets" / DATASET
    users = sorted({line.split("\t")[0] for line in (path / f"{DATASET}.train.inter").read_text().splitlines()[1:]})
    (path / "user_profiles.jsonl").write_text("".join(json.dumps({"user_id": u, "profile": profile_text(u)}) + "\n"
                                                      for u in users))
    # Item texts that name the item (the server scores by it).
    rows = [json.loads(line) for line in (path / "items.jsonl").read_text().splitlines()]
    (path / "items.jsonl").write_text("".join(json.dumps({**r, "text": f"ITEM-{n + 1} {r['text']}"}) + "\n"
                                              for n, r in enumerate(rows)))
    return ws


@pytest.mark.parametrize("scoring, negatives, more", [("listwise", "pool", ()), ("pairwise", "fresh", ()),
                                                     ("listwise", "pool", ("--score-from", "2", "--pu-min-items", "2"))])
def test_the_estimate_is_within_25_percent_of_what_the_run_spends(workspace: Path, tmp_path: Path, scoring: str,
                                                                  negatives: str, more: tuple[str, ...],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LLMHD_LLM_CACHE", str(tmp_path / "cache"))  # each run pays for everything it asks
    server = ScoringServer()
    llm = ("--provider", "openai", "--model", "gpt-4o-mini", "--base-url", server.url)
    means = ("--scoring", scoring, "--negatives", negatives, *more)
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert call_main(workspace, "cost", "-d", DATASET, *llm, *FLAGS, *means) == 0
        assert server.calls == 0  # the estimate sends nothing
        estimate = {name: _tokens(table_row(out.getvalue(), name)) for name in ("T_score", "T_fp", "T_fn")}
        run_dir = tmp_path / "run"
        capsys.readouterr()
        assert call_main(workspace, "train", "-d", DATASET, "--denoiser", "llmhd", *llm, *FLAGS, *means,
                         "--early-stop", "0", "--run-dir", str(run_dir)) == 0
        shown = " ".join(capsys.readouterr().out.split())
    finally:
        server.close()
    spent: dict[str, int] = {}
    for row in read_ledger(tmp_path / "cache"):
        task = row.template.rsplit("/", 1)[-1]
        name = {"score": "T_score", "score_list": "T_score", "update_fp": "T_fp", "update_fn": "T_fn"}.get(task)
        if name:
            spent[name] = spent.get(name, 0) + row.input_tokens + row.output_tokens
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    judged = sum((r["denoiser"].get("llm") or {}).get("input_tokens", 0)
                 + (r["denoiser"].get("llm") or {}).get("output_tokens", 0) for r in log)
    assert sum(spent.values()) == judged == server.prompt_tokens + server.completion_tokens  # all paid, all counted
    assert spent["T_score"] > 0 and spent.get("T_fp", 0) > 0
    total_estimate, total_spent = sum(estimate.values()), sum(spent.values())
    assert abs(total_estimate - total_spent) <= 0.25 * total_spent, (estimate, spent)
    assert abs(estimate["T_score"] - spent["T_score"]) <= 0.25 * spent["T_score"], (estimate, spent)
    # The progress display: each epoch's LLM tokens, the spend so far and the run's estimate; the last
    # epoch's "so far" is what the ledger shows.
    assert f"so far {total_spent:,} tok $" in shown and "run est." in shown, shown[-2000:]
    # llmhd plot adds the LLM panels (tokens and new pairs per epoch): a third row of plots.
    import matplotlib.image

    from llmhd_cli.plots import plot_runs

    with_llm = matplotlib.image.imread(plot_runs([run_dir], tmp_path / "llm.png"))
    assert with_llm.shape[0] == round(3 * 3.75 * 120)


def _tokens(cells: list[str]) -> int:
    numbers = [int(c.rstrip("~").replace(",", "")) for c in cells if re.fullmatch(r"[\d,]+~?", c)]
    _prompts, _cached, tokens_in, tokens_out = numbers[:4]
    return tokens_in + tokens_out


def test_score_from_waits_for_a_positive_to_recur() -> None:
    judge = AskedJudge()
    denoiser = pool_denoiser(judge, score_from=2)
    chosen_box: list[torch.Tensor] = []
    denoiser.trace = lambda step, bn, bhc, bh, dropped: chosen_box.append((bhc, bh))
    batch = bpr_batch(10)
    denoiser.decide(batch)
    first_chosen, first_hard = chosen_box[0]
    assert judge.asked == [] and len(first_hard) == 0  # first appearance: unscored, dropped as LD
    assert denoiser._counts["deferred"] == len(first_chosen) > 0
    denoiser.decide(batch)  # the same samples again: now they are asked
    (users, items), = judge.asked
    second_chosen, _ = chosen_box[1]
    np.testing.assert_array_equal(items[:len(second_chosen)], batch.items[second_chosen].numpy())


def test_pu_min_items_collects_confident_items_over_epochs() -> None:
    judge = AskedJudge()
    denoiser = pool_denoiser(judge, pu_min_items=2)
    assert denoiser._rewrite("update_fp", {1: [3], 2: [4, 5]}, 0) == 1
    assert judge.rewrites == [("update_fp", {2: [4, 5]})]
    assert denoiser._rewrite("update_fp", {1: [2]}, 1) == 1  # user 1's second item arrives
    assert judge.rewrites[-1] == ("update_fp", {1: [3, 2]})
    assert denoiser._rewrite("update_fn", {1: [30]}, 1) == 0  # kinds are collected apart
    default = pool_denoiser(AskedJudge())
    assert default._rewrite("update_fp", {1: [3]}, 0) == 1  # 1: every new confident item, the paper's
