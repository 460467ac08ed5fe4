"""The offline ``embed`` provider (and the ``oracle`` diagnostic) on real data: ml-100k.

The headline check: with profiles summarized by ``embed`` from each user's training items, a
user's own held-out test items score higher than random unobserved items. The AUC is
reported whatever pytest's capture mode (a junit property, a log record and a terminal line).

Scores are leave-one-out: an extractive profile quotes some of the user's items verbatim, and
an item must not score high because its own text is in the evidence (tests below pin that on
hand-made profiles and on ml-100k's summarized ones).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from llmhd_cli import plugins
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.cache import StoredAnswer, cache_key
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.pricing import PriceTable
from llmhd_cli.llm.prompts import template_set_for
from llmhd_cli.prepare import PrepareOptions, prepare_dataset
from llmhd_cli.summarize import summarize_requests
from llmhd_plugins.providers_embed import (
    DEFAULT_CUTS,
    NO_EVIDENCE_SCORE,
    SCORE_RULE,
    EmbedProvider,
    build_profile,
    model_path,
    reference_texts,
    score_from_cosine,
    score_from_cuts,
)
from llmhd_plugins.providers_oracle import OracleProvider, rating_to_score

log = logging.getLogger(__name__)

AUC_USERS = 120
NEGATIVES = 50


def report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture, record_property, name: str, value: float,
           line: str) -> None:
    """Report a measured number with or without ``-s``: junit property, log record, terminal line."""
    record_property(name, value)
    log.warning(line)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        with capsys.disabled():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("ws")
    return prepare_dataset(workspace, PrepareOptions(name="ml-100k"))


@pytest.fixture(scope="module")
def provider():
    return EmbedProvider()


def by_user(users: np.ndarray, items: np.ndarray) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        out.setdefault(u, []).append(i)
    return out


# ------------------------------------------------------------------------------ contract


def test_model_ships_in_the_installed_package_and_provider_is_offline():
    path = model_path()
    assert (path / "model.safetensors").exists() and (path / "modules.json").exists()
    cls = plugins.registry("provider").get("embed", "--provider")
    assert cls is EmbedProvider and cls.generative is False and cls.key_env is None and cls.needs_key is False
    assert "not a generative LLM" in cls.description and not cls.key_required(None)


def test_calibration_maps_random_items_evenly_onto_1_to_10():
    reference = np.linspace(-0.2, 0.8, 256)
    scores = [score_from_cosine(c, reference) for c in reference]
    counts = np.bincount(scores, minlength=11)[1:]
    assert counts.min() >= 24 and counts.max() <= 28  # 256 / 10 each
    assert score_from_cosine(-1.0, reference) == 1 and score_from_cosine(1.0, reference) == 10
    assert [score_from_cuts(c) for c in (0.0, DEFAULT_CUTS[4] + 1e-6, 1.0)] == [1, 6, 10]


def test_build_profile_respects_the_word_budget():
    texts = ["one two three"] * 3 + ["x " * 150]
    assert build_profile(texts[:3], np.array([0.1, 0.3, 0.2])).splitlines() == texts[:3]
    long = build_profile(texts[3:], np.array([1.0]))
    assert len(long.split()) == 100


# ------------------------------------------------------------------------------ tasks


def req(task: str, **variables) -> LLMRequest:
    t = template_set_for("movies").get(task)
    return t.render(variables)


def test_summarize_is_extractive_representative_first_and_short(provider):
    sci = [f"title: Space Saga {k}; genres: Sci-Fi, Adventure, space opera with starships" for k in range(6)]
    odd = "title: Grandma's Kitchen; genres: Documentary about baking bread"
    resp = provider.complete(req("summarize", item_profiles=[odd] + sci, n_items=7))
    profile = resp.value
    lines = profile.splitlines()
    assert resp.text == profile and set(lines) <= set(sci + [odd])
    assert lines[0] != odd and len(profile.split()) <= 100
    assert resp.input_tokens > 0 and resp.usage_reported is False


def test_update_fp_drops_and_update_fn_adds_evidence(provider):
    a = "title: Alien; genres: Horror, Sci-Fi"
    b = "title: Toy Story; genres: Animation, Children's, Comedy"
    c = "title: Aliens; genres: Action, Sci-Fi, Thriller"
    d = "title: Blade Runner; genres: Film-Noir, Sci-Fi"
    fp = provider.complete(req("update_fp", user_profile="\n".join([a, b, c]), item_profiles=[b])).value
    assert b not in fp.splitlines() and a in fp.splitlines() and c in fp.splitlines()
    fn = provider.complete(req("update_fn", user_profile="\n".join([a, c]), item_profiles=[d])).value
    assert d in fn.splitlines() and a in fn.splitlines()
    item = provider.complete(req("item_profile", item_text="  title: X;\n genres: Y ")).value
    assert item == "title: X; genres: Y"


def test_scores_are_integers_in_range_and_calibrated_per_dataset(provider, ml100k):
    refs = reference_texts(ml100k.path)
    assert len(refs) == 1024 and refs == reference_texts(ml100k.path)  # seeded: the same sample every time
    profile = provider.complete(req("summarize", item_profiles=refs[:12])).value
    provider.embed([" ".join(profile.split())] + refs)
    scores = [provider.complete(req("score", user_profile=profile, item_profile=r, dataset_dir=str(ml100k.path))).value
              for r in refs]
    counts = np.bincount(scores, minlength=11)[1:]
    # The reference items themselves spread evenly over 1..10: 102 or 103 each (ties aside), the
    # 12 the profile quotes included (each is scored by the rule its reference cosine was computed by).
    assert all(isinstance(s, int) and 1 <= s <= 10 for s in scores) and counts.max() <= 108 and counts.min() >= 97
    quoted = [s for r, s in zip(refs, scores, strict=True) if r in profile.splitlines()]
    assert len(quoted) == len(profile.splitlines()) and np.mean(quoted) < 9  # not all at the top


# ------------------------------------------------------------------------------ leave-one-out


def texts_of(ml100k, *ids: str) -> list[str]:
    texts = ml100k.item_texts()
    return [texts[i] for i in ids]


def test_quoting_an_item_does_not_raise_its_score(provider, ml100k):
    star_wars, jedi, *rest = texts_of(ml100k, "50", "181", "100", "273", "275", "1")  # + Fargo, Heat, ...
    t = template_set_for("movies").get("score")

    def score(lines: list[str], item: str) -> int:
        return provider.complete(t.render({"user_profile": "\n".join(lines), "item_profile": item, "user_id": "u",
                                           "item_id": "i", "dataset_dir": str(ml100k.path)})).value

    quotes_sw, quotes_jedi = [star_wars, *rest], [jedi, *rest]
    # Quoted or not, an item is judged by the same evidence: the profile's other lines.
    assert score(quotes_sw, star_wars) == score(rest, star_wars)
    assert provider.score_cosines("\n".join(quotes_sw), star_wars, str(ml100k.path))[0] == pytest.approx(
        provider.score_cosines("\n".join(rest), star_wars, str(ml100k.path))[0], abs=1e-6)
    # A quoted item scores no higher than when an item of the same kind is quoted instead: what
    # lifts it is evidence like it, not its own text (the old rule gave the quoted one a 10).
    assert score(quotes_sw, star_wars) <= score(quotes_jedi, star_wars)
    assert score(quotes_jedi, jedi) <= score(quotes_sw, jedi)
    assert score(quotes_jedi, star_wars) > score(rest, star_wars)  # evidence still counts
    assert score([star_wars], star_wars) == NO_EVIDENCE_SCORE  # nothing but itself: the median


def test_leave_one_out_excludes_exactly_the_scored_item(provider, ml100k):
    lines = texts_of(ml100k, "50", "100", "273", "275", "1", "183")  # Star Wars, ..., Alien
    profile = "\n".join(lines)
    emb = provider.embed(lines)

    def expected(item: str, drop: int | None) -> float:
        rows = [e for n, e in enumerate(emb) if n != drop]
        v = np.sum(rows, axis=0)
        return float(provider.embed([item])[0] @ (v / np.linalg.norm(v)))

    for n, line in enumerate(lines):  # each quoted item leaves out its own line and only that one
        assert provider.score_cosines(profile, line)[0] == pytest.approx(expected(line, n), abs=1e-6)
        spaced = "  " + line.replace(" ", "   ") + " \n"  # the same text, other whitespace
        assert provider.score_cosines(profile, spaced)[0] == pytest.approx(expected(line, n), abs=1e-6)
    aliens = texts_of(ml100k, "176")[0]  # near, but another item: nothing is left out
    assert provider.score_cosines(profile, aliens)[0] == pytest.approx(expected(aliens, None), abs=1e-6)
    long = "title: Long; " + " ".join(f"w{k}" for k in range(150))  # a profile line holds its first 100 words
    head = build_profile([long], np.array([1.0]))
    for quoted in (head, long):  # cut by the summary, or quoted whole (a profile from elsewhere)
        cos, _ = provider.score_cosines("\n".join([quoted, lines[1]]), long)
        assert cos == pytest.approx(float(provider.embed([long])[0] @ emb[1]), abs=1e-6)


def test_reference_items_in_the_profile_are_left_out_of_their_own_evidence(provider, ml100k):
    refs = reference_texts(ml100k.path)
    lines = refs[:5]
    profile = "\n".join(lines)
    ref_emb = provider.embed(refs)
    _, reference = provider.score_cosines(profile, refs[100], str(ml100k.path))  # an unquoted item
    total = ref_emb[:5].sum(axis=0)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    assert reference[3] == pytest.approx(float(ref_emb[3] @ unit(total - ref_emb[3])), abs=1e-6)
    assert reference[100] == pytest.approx(float(ref_emb[100] @ unit(total)), abs=1e-6)
    _, reference = provider.score_cosines(profile, refs[1], str(ml100k.path))  # a quoted one stays out too
    assert reference[3] == pytest.approx(float(ref_emb[3] @ unit(total - ref_emb[1] - ref_emb[3])), abs=1e-6)
    assert reference[1] == pytest.approx(float(ref_emb[1] @ unit(total - ref_emb[1])), abs=1e-6)


def test_profile_updates_still_move_scores(provider, ml100k):
    alien, aliens, terminator, blade, *rest = texts_of(ml100k, "183", "176", "195", "89", "275", "1", "483")
    profile = "\n".join([terminator, *rest])
    before = provider.score_cosines(profile, alien)[0]
    added = provider.complete(req("update_fn", user_profile=profile, item_profiles=[aliens, blade])).value
    assert aliens in added.splitlines()
    assert provider.score_cosines(added, alien)[0] > before + 0.02
    dropped = provider.complete(req("update_fp", user_profile=profile, item_profiles=[terminator])).value
    assert terminator not in dropped.splitlines()
    assert provider.score_cosines(dropped, alien)[0] < before - 0.02


def test_a_changed_score_rule_never_reuses_stored_answers(provider, ml100k, tmp_path, monkeypatch):
    lines = texts_of(ml100k, "100", "273", "275", "1")
    request = req("score", user_profile="\n".join(lines), item_profile=lines[0], user_id="u", item_id="100",
                  dataset_dir=str(ml100k.path))
    fresh = provider.complete(request).value
    stale = 1 if fresh != 1 else 10
    planted = StoredAnswer(text=str(stale), value=stale, input_tokens=1, output_tokens=1, usage_reported=False,
                           cost=0.0, elapsed=0.0, model=provider.model)
    with LLMClient(provider, tmp_path, prices=PriceTable.from_dict({})) as client:
        # What the rule before leave-one-out stored under the key without a rule version.
        client.store.put(cache_key(provider.name, provider.model, request, include_variables=True), planted)
        first = client.run([request])[0]
        assert first.ok and not first.cached and first.value == fresh
        assert client.run([request])[0].cached  # the new rule's answer is cached under its own key
        monkeypatch.setitem(EmbedProvider.rule_versions, "score", SCORE_RULE + "-next")
        assert not client.run([request])[0].cached  # a bumped rule misses again
    summary = req("summarize", item_profiles=lines, n_items=len(lines))
    # Tasks whose rule did not change keep their keys (stored summaries stay valid).
    assert cache_key(provider.name, provider.model, summary, True) == cache_key(
        provider.name, provider.model, summary, True, EmbedProvider.rule_versions.get("summarize", ""))


@pytest.fixture(scope="module")
def summarized(provider, ml100k) -> dict:
    """AUC_USERS seeded users of ml-100k with their embed profiles and T_sum requests."""
    texts = ml100k.item_texts()
    train = by_user(*ml100k.read_split("train"))
    test = by_user(*ml100k.read_split("test"))
    rng = np.random.default_rng(7)
    users = sorted(rng.choice(sorted(u for u in test if u in train), size=AUC_USERS, replace=False).tolist())
    tset = template_set_for(ml100k.info.domain)
    requests = {r.variables["user_id"]: r for r in summarize_requests(ml100k, tset, texts)[0]
                if r.variables["user_id"] in set(users)}
    provider.embed(sorted(set(texts.values())))  # one batch: much faster than item by item
    profiles = {u: provider.complete(r).value for u, r in requests.items()}
    return {"users": users, "texts": texts, "train": train, "test": test, "tset": tset, "requests": requests,
            "profiles": profiles, "valid": by_user(*ml100k.read_split("valid")), "rng": rng}


def test_held_out_items_score_higher_than_random_unobserved_items(provider, ml100k, summarized, request, capsys,
                                                                 record_property):
    users, texts, profiles, tset = (summarized[k] for k in ("users", "texts", "profiles", "tset"))
    train, valid, test = summarized["train"], summarized["valid"], summarized["test"]
    rng = np.random.default_rng(8)
    all_items = sorted(texts)
    aucs, pos_means, neg_means, random_scores = [], [], [], []
    for user in users:
        seen = set(train[user]) | set(valid.get(user, [])) | set(test[user])
        negatives = [i for i in rng.choice(all_items, size=NEGATIVES * 2, replace=False).tolist() if i not in seen][:NEGATIVES]
        positives = [i for i in test[user] if i in texts]

        def score(item: str, user: str = user) -> int:
            r = tset.get("score").render({"user_profile": profiles[user], "item_profile": texts[item], "user_id": user,
                                          "item_id": item, "dataset_dir": str(ml100k.path)})
            return provider.complete(r).value

        sp = np.array([score(i) for i in positives], dtype=float)[:, None]
        sn = np.array([score(i) for i in negatives], dtype=float)[None, :]
        aucs.append(float((sp > sn).mean() + 0.5 * (sp == sn).mean()))
        pos_means.append(sp.mean())
        neg_means.append(sn.mean())
        random_scores += sn.ravel().astype(int).tolist()
    auc = float(np.mean(aucs))
    share = np.bincount(random_scores, minlength=11)[1:] / len(random_scores)
    line = (f"embed provider on ml-100k: AUC {auc:.3f} (held-out test items vs {NEGATIVES} random unobserved items, "
            f"{len(users)} users); mean score held-out {np.mean(pos_means):.2f} vs random {np.mean(neg_means):.2f}; "
            f"random items per score 1..10: {' '.join(f'{x:.3f}' for x in share)}")
    report(request, capsys, record_property, "embed_auc", auc, line)
    assert np.mean(pos_means) > np.mean(neg_means)
    assert auc > 0.55, line
    # Calibration: random items spread over the whole scale, about a tenth per score (the fixed
    # sample of reference items shifts every user's cut points alike, hence the slack).
    assert share.min() > 0.075 and share.max() < 0.125, line


def test_quoted_training_items_score_as_if_summarized_without_them(provider, ml100k, summarized, request, capsys,
                                                                   record_property):
    """The counterfactual on real profiles: each quoted training item is scored again against the
    profile the user would have had without it (its T_sum request minus the item). Whatever
    quoting alone adds shows as a drop; the rule before leave-one-out lost about 1 point here."""
    texts, profiles, tset, requests = (summarized[k] for k in ("texts", "profiles", "tset", "requests"))
    score_t, sum_t = tset.get("score"), tset.get("summarize")

    def score(user: str, item: str, profile: str) -> int:
        return provider.complete(score_t.render({"user_profile": profile, "item_profile": texts[item], "user_id": user,
                                                 "item_id": item, "dataset_dir": str(ml100k.path)})).value

    quoted, again = [], []
    for user in summarized["users"][:60]:
        v = requests[user].variables
        lines = set(profiles[user].splitlines())
        for item in [i for i in v["item_ids"] if texts[i] in lines][:4]:
            keep = [k for k, i in enumerate(v["item_ids"]) if i != item]
            without = provider.complete(sum_t.render({**v, "item_ids": [v["item_ids"][k] for k in keep],
                                                      "item_profiles": [v["item_profiles"][k] for k in keep],
                                                      "n_items": len(keep)})).value
            quoted.append(score(user, item, profiles[user]))
            again.append(score(user, item, without))
    effect = float(np.mean(quoted) - np.mean(again))
    line = (f"embed quotation effect on ml-100k: {effect:+.3f} ({len(quoted)} quoted training items: mean score "
            f"{np.mean(quoted):.2f} quoted vs {np.mean(again):.2f} summarized without them)")
    report(request, capsys, record_property, "embed_quotation_effect", effect, line)
    assert len(quoted) >= 200 and abs(effect) < 0.3, line


# ------------------------------------------------------------------------------ oracle


def test_oracle_scores_from_ground_truth_ratings(ml100k):
    cls = plugins.registry("provider").get("oracle", "--provider")
    assert cls is OracleProvider and cls.upper_bound and not cls.generative and "UPPER BOUND" in cls.description
    assert [rating_to_score(r) for r in (1, 2, 3, 4, 5)] == [1, 3, 6, 8, 10]
    import pandas as pd

    ratings = pd.read_csv(ml100k.path / "ratings.tsv", sep="\t", dtype=str)
    low = ratings[ratings.iloc[:, 2].astype(float) < 3].iloc[0]  # low-rated pairs are in ratings.tsv too
    # The leaking model reads every rating, held-out ones included (tests/test_oracle.py: the default does not).
    oracle = OracleProvider(model="all-ratings")
    t = template_set_for("movies").get("score")

    def score(user: str, item: str) -> int:
        return oracle.complete(t.render({"user_profile": "-", "item_profile": "-", "user_id": user, "item_id": item,
                                         "dataset_dir": str(ml100k.path)})).value

    assert score(low.iloc[0], low.iloc[1]) == rating_to_score(float(low.iloc[2])) <= 3
    users, items = ml100k.read_split("test")
    assert score(users[0], items[0]) >= 6  # held-out pairs were rated >= 3
    assert score(users[0], "no-such-item") == 1
