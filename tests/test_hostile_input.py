"""Hostile and careless input: nothing llmhd reads can run code, and no secret is echoed.

Every crafted file here carries a payload that would create a marker file if it ever ran;
the marker must never appear, and the command must answer with one line (or a counted
cache miss), never a traceback.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from cli_helpers import assert_user_error, run_cli

from llmhd_cli.errors import LLMHDError
from llmhd_cli.safe_pickle import RefusedClass, no_globals, restricted_loads

AMAZON = Path("/work/shared/data/rlmrec/amazon-books")


# ------------------------------------------------------------------------------- payloads


class _Call:
    """Pickles as ``func(*args)``: what a crafted pickle runs on load."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path) -> dict[str, object]:
    """Objects whose unpickling would create ``marker`` (each through a different door)."""
    return {
        "os.system": _Call(os.system, f"touch {marker}"),
        "builtins.exec": _Call(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.open": _Call(builtins.open, str(marker), "w"),
        "os.mkdir": _Call(os.mkdir, str(marker)),
    }


def write_rlmrec(folder: Path, shape: tuple[int, int] = (12, 9), profiles: bool = True) -> Path:
    """A small valid RLMRec folder: disjoint train/valid/test matrices and profile dicts."""
    rng = np.random.default_rng(0)
    dense = rng.random(shape) < 0.5
    dense[:, 0] = True
    which = rng.choice(3, size=shape, p=[0.6, 0.2, 0.2])
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl")):
        (folder / name).write_bytes(pickle.dumps(sp.coo_matrix((dense & (which == k)).astype(np.float64))))
    if profiles:
        (folder / "itm_prf.pkl").write_bytes(pickle.dumps({i: {"profile": f"book {i}"} for i in range(shape[1])}))
        (folder / "usr_prf.pkl").write_bytes(pickle.dumps({u: {"profile": f"reader {u}"} for u in range(shape[0])}))
    return folder


# ------------------------------------------------------------------------------- RLMRec pickles


def _hide(payload: object, where: str) -> object:
    """The payload as the whole file, or tucked inside what the file legitimately holds."""
    if where == "top":
        return payload
    if where == "profile":
        return {0: {"profile": payload}}
    matrix = sp.coo_matrix(np.eye(12, 9))
    matrix.__dict__["extra"] = payload  # an attribute of an allowed class
    return matrix


CASES = [(file, name, where) for file in ("trn_mat.pkl", "tst_mat.pkl", "itm_prf.pkl", "usr_prf.pkl")
         for name in ("os.system", "builtins.exec", "builtins.open", "os.mkdir")
         for where in ("top", "matrix" if file.endswith("mat.pkl") else "profile")]


@pytest.mark.parametrize("file,name,where", CASES, ids=["-".join(c) for c in CASES])
def test_crafted_rlmrec_pickle_never_runs(tmp_path: Path, capsys: pytest.CaptureFixture, file: str, name: str,
                                          where: str) -> None:
    marker = tmp_path / "pwned"
    src = write_rlmrec(tmp_path / "src")
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        (src / file).write_bytes(pickle.dumps(_hide(payloads(marker)[name], where), protocol=protocol))
        code, out, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src))
        assert not marker.exists(), f"payload ran (protocol {protocol})"
        func = payloads(marker)[name].func  # type: ignore[attr-defined]
        qualified = f"{func.__module__}.{func.__name__}"  # os.system pickles as posix.system
        assert_user_error(code, out, err, file, f"refuses to load class {qualified}", "scipy sparse matrices")
    assert not (tmp_path / "ws" / "datasets" / "d").exists()


def test_allowed_callables_cannot_be_abused(tmp_path: Path) -> None:
    from llmhd_plugins.datasets import _rlmrec_globals

    # _codecs.encode is allowed for protocol-0 bytes, but only with latin1.
    crafted = b"c_codecs\nencode\n(Vx\nVrot13\ntR."
    with pytest.raises(ValueError, match="rot13"):
        restricted_loads(crafted, _rlmrec_globals)
    # The module path of an allowed name is matched, never imported.
    with pytest.raises(RefusedClass, match="scipy.sparse.evil.system"):
        restricted_loads(b"cscipy.sparse.evil\nsystem\n.", _rlmrec_globals)
    with pytest.raises(RefusedClass, match="numpy.load"):
        restricted_loads(b"cnumpy\nload\n.", _rlmrec_globals)
    # A data-only pickle names no class at all; anything that does is refused.
    assert restricted_loads(pickle.dumps({"a": [1, 2.5, None, True, "x", b"y"]}), no_globals) == {
        "a": [1, 2.5, None, True, "x", b"y"]}
    with pytest.raises(RefusedClass):
        restricted_loads(pickle.dumps({"a": {1, 2}}, protocol=0), no_globals)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_real_formats_still_load(protocol: int) -> None:
    """Every sparse class, numpy ints as keys, and every protocol round-trip through the policy."""
    from llmhd_plugins.datasets import _rlmrec_globals

    dense = np.random.default_rng(1).random((7, 5)) < 0.4
    base = sp.csr_matrix(dense.astype(np.float32))
    objects = [base, base.tocoo(), base.tocsc(), base.todok(), base.tolil(), base.todia(), base.tobsr(),
               sp.csr_array(base), sp.coo_array(base), dense.astype(np.int64),
               {np.int64(3): {"profile": "p", "title": "t"}, 4: "plain"}]
    for obj in objects:
        loaded = restricted_loads(pickle.dumps(obj, protocol=protocol), _rlmrec_globals)
        if type(obj) is dict:  # (dok_matrix is a dict subclass)
            assert loaded == obj
        else:
            assert type(loaded) is type(obj)
            assert (sp.coo_matrix(loaded) != sp.coo_matrix(obj)).nnz == 0


def test_crafted_matrix_internals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_rlmrec(tmp_path / "src")
    bad = sp.coo_matrix(np.eye(12, 9))
    bad.row = np.array([0, 50])  # indices outside the shape, of an allowed class
    bad.col = np.array([0, 1])
    bad.data = np.array([1.0, 1.0])
    (src / "val_mat.pkl").write_bytes(pickle.dumps(bad))
    code, out, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src))
    assert_user_error(code, out, err, "val_mat.pkl", "not a valid numeric users x items matrix")
    strings = np.array([["a", "b"], ["c", "d"]], dtype=object)
    (src / "val_mat.pkl").write_bytes(pickle.dumps(strings))
    code, out, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src))
    assert_user_error(code, out, err, "val_mat.pkl", "not a valid numeric users x items matrix")


def test_small_rlmrec_folder_prepares(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = write_rlmrec(tmp_path / "src")
    code, out, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src))
    assert code == 0, err
    assert (tmp_path / "ws" / "datasets" / "d" / "items.jsonl").read_text().count("book") == 9


@pytest.mark.slow
def test_planted_recbole_dataset_pickle_never_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """RecBole's create_dataset unpickles <checkpoint_dir>/<name>-Dataset.pth if it exists; llmhd's
    checkpoint_dir is inside the dataset folder, which anyone shipping a dataset writes."""
    marker = tmp_path / "pwned"
    src = write_rlmrec(tmp_path / "src", shape=(40, 30))
    code, _, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src))
    assert code == 0, err
    planted = tmp_path / "ws" / "datasets" / "d" / ".recbole"
    planted.mkdir(exist_ok=True)
    for name in ("d-Dataset.pth", "d-for-LightGCN-dataloader.pth"):
        (planted / name).write_bytes(pickle.dumps(payloads(marker)["os.system"]))
    code, out, err = run_cli(capsys, tmp_path / "ws", "train", "--dataset", "d", "--backbone", "lightgcn",
                             "--epochs", "1", "--threads", "1")
    assert not marker.exists()
    assert code == 0, (out, err)


@pytest.mark.slow
def test_crafted_checkpoint_never_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``evaluate --recompute`` loads model.pt with weights_only=True: a pickled payload is refused."""
    import torch

    marker = tmp_path / "pwned"
    src = write_rlmrec(tmp_path / "src", shape=(40, 30))
    assert run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src))[0] == 0
    code, out, err = run_cli(capsys, tmp_path / "ws", "train", "--dataset", "d", "--backbone", "lightgcn",
                             "--epochs", "1", "--threads", "1", "--run-dir", str(tmp_path / "ws" / "runs" / "r"))
    assert code == 0, (out, err)
    checkpoint = tmp_path / "ws" / "runs" / "r" / "model.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["extra"] = payloads(marker)["os.system"]
    torch.save(state, checkpoint)
    code, out, err = run_cli(capsys, tmp_path / "ws", "evaluate", "--recompute", str(checkpoint.parent))
    assert_user_error(code, out, err, "model.pt", "not a checkpoint")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.skipif(not AMAZON.exists(), reason="needs the shared Amazon-books RLMRec split")
def test_real_amazon_books_loads_through_the_policy() -> None:
    from llmhd_plugins.datasets import load_rlmrec

    raw = load_rlmrec(AMAZON, {})
    assert raw.n_users == 11000 and len(raw.all_items) == 9332


# ------------------------------------------------------------------------------- the LLM cache

from llm_servers import LocalServer, Reply, openai_completion  # noqa: E402

from llmhd_cli.llm.base import LLMRequest  # noqa: E402
from llmhd_cli.llm.cache import (  # noqa: E402
    ANSWERS_DIR,
    LEGACY_ANSWERS_DIR,
    MIGRATED_MARKER,
    AnswerStore,
    StoredAnswer,
    cache_key,
)
from llmhd_cli.llm.client import LLMClient  # noqa: E402
from llmhd_cli.llm.ledger import Ledger, read_ledger  # noqa: E402
from llmhd_cli.llm.pricing import PriceTable  # noqa: E402
from llmhd_plugins.providers_openai import OpenAIProvider  # noqa: E402


def _score(text: str) -> int:
    if not (text.startswith("<s>") and text.endswith("</s>")):
        raise ValueError(text)
    return int(text[3:-4])


def llm_request(i: int) -> LLMRequest:
    return LLMRequest(task="score", template="t/score", template_hash="abc", system="sys", prompt=f"item {i}",
                      params={"max_tokens": 5}, parse=_score)


def key_of(i: int) -> str:
    return cache_key("openai", "local", llm_request(i))


class Answering:
    """An OpenAI-compatible handler answering '<s>7</s>'; counts the chat calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, rec) -> Reply:
        self.calls += 1
        return Reply(200, openai_completion("<s>7</s>", prompt_tokens=10, completion_tokens=3))


def client_for(server: LocalServer, cache: Path) -> LLMClient:
    provider = OpenAIProvider(model="local", base_url=server.url + "/v1", api_key="sk-test-unused")
    return LLMClient(provider, cache, prices=PriceTable.from_dict({}), backoff_base=0.01)


def rows(cache: Path, folder: str = ANSWERS_DIR) -> list[tuple]:
    with sqlite3.connect(cache / folder / "cache.db") as conn:
        return conn.execute("SELECT key, raw, mode, filename, value FROM Cache ORDER BY key").fetchall()


def test_answers_are_stored_as_json_text_and_round_trip(tmp_path: Path) -> None:
    with LocalServer(Answering()) as server:
        with client_for(server, tmp_path) as c:
            first = c.run([llm_request(i) for i in range(3)])
        with client_for(server, tmp_path) as c:
            again = c.run([llm_request(i) for i in range(3)])
        assert server.handler.calls == 3 and c.stats.cache_hits == 3 and c.stats.cache_malformed == 0
    assert [r.value for r in first] == [r.value for r in again] == [7, 7, 7]
    for key, raw, mode, filename, value in rows(tmp_path):
        assert type(key) is str and raw == 1 and mode == 1 and filename is None  # MODE_RAW text, no file
        assert type(value) is str and json.loads(value)["text"] == "<s>7</s>"
    # Everything a field can hold comes back as it went in.
    answer = StoredAnswer(text="t", value={"a": [1, 2.5, None, "x"]}, input_tokens=3, output_tokens=4,
                          usage_reported=True, cost=0.25, elapsed=1.5, model="m",
                          logprobs=[{"1": -0.5, "2": -1.0}], tokens=["1"], parsed=7)
    store = AnswerStore(tmp_path)
    assert store.put("k", answer) and store.get("k") == answer
    assert store.put("n", StoredAnswer("t", np.int64(4), 1, 1, False, 0.0, 0.0, "m"))  # numpy -> JSON
    assert store.get("n").value == 4 and type(store.get("n").value) is int
    assert not store.put("bad", StoredAnswer("t", object(), 1, 1, False, 0.0, 0.0, "m"))  # not data: not cached
    assert store.get("bad") is None and store.malformed == 0
    store.close()


def _plant_pickle(cache: Path, key: str, value: object, folder: str = ANSWERS_DIR) -> None:
    """What anyone with write access could do: store a value with diskcache's default (pickling) Disk."""
    import diskcache

    planted = diskcache.Cache(str(cache / folder))
    planted.set(key, value)
    planted.close()


def _plant_sql(cache: Path, key: str, mode: int, value: object, filename: str | None = None) -> None:
    with sqlite3.connect(cache / ANSWERS_DIR / "cache.db") as conn:
        conn.execute("UPDATE Cache SET mode = ?, value = ?, filename = ? WHERE key = ?", (mode, value, filename, key))


GOOD = {"text": "<s>7</s>", "value": None, "input_tokens": 1, "output_tokens": 1, "usage_reported": True,
        "cost": 0.0, "elapsed": 0.0, "model": "local"}

CRAFTED = {
    "pickle-os.system": lambda c, k, m, v: _plant_pickle(c, k, payloads(m)["os.system"]),
    "pickle-exec-in-dict": lambda c, k, m, v: _plant_pickle(c, k, {**GOOD, "text": payloads(m)["builtins.exec"]}),
    "pickle-open-file-mode": lambda c, k, m, v: _plant_pickle(c, k, {**GOOD, "text": payloads(m)["builtins.open"],
                                                                      "pad": "x" * 70000}),  # > 32 kB: a .val file
    "not-json": lambda c, k, m, v: _plant_sql(c, k, 1, "{not json"),
    "json-list": lambda c, k, m, v: _plant_sql(c, k, 1, "[1, 2]"),
    "wrong-types": lambda c, k, m, v: _plant_sql(c, k, 1, json.dumps({**GOOD, "input_tokens": "10"})),
    "missing-field": lambda c, k, m, v: _plant_sql(c, k, 1, json.dumps({"text": "<s>7</s>"})),
    "negative-cost": lambda c, k, m, v: _plant_sql(c, k, 1, json.dumps({**GOOD, "cost": -5})),
    "deep-nesting": lambda c, k, m, v: _plant_sql(c, k, 1, "[" * 100000 + "]" * 100000),
    "blob-value": lambda c, k, m, v: _plant_sql(c, k, 1, json.dumps(GOOD).encode()),
    "text-file-outside": lambda c, k, m, v: _plant_sql(c, k, 3, None, os.path.relpath(v, c / ANSWERS_DIR)),
    "abs-file": lambda c, k, m, v: _plant_sql(c, k, 2, None, str(v)),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_cache_entry_is_a_counted_miss(tmp_path: Path, case: str) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "pwned"
    victim = tmp_path / "victim.json"
    victim.write_text(json.dumps(GOOD))  # a file a planted row points at: never read, never deleted
    with LocalServer(Answering()) as server:
        with client_for(server, cache) as c:
            c.run([llm_request(0), llm_request(1)])
        CRAFTED[case](cache, key_of(0), marker, victim)
        with client_for(server, cache) as c:
            results = c.run([llm_request(0), llm_request(1)])
            assert not marker.exists()
            assert c.stats.cache_malformed == 1 and c.stats.cache_hits == 1 and c.stats.calls == 1
            assert all(r.ok and r.value == 7 for r in results) and not results[0].cached
        with client_for(server, cache) as c:  # the re-asked answer replaced the planted entry
            c.run([llm_request(0)])
            assert c.stats.cache_hits == 1 and c.stats.cache_malformed == 0
        assert server.handler.calls == 3
    assert not marker.exists() and victim.exists()


def test_crafted_entry_warns_once_with_the_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = AnswerStore(tmp_path)
    store.put("a", StoredAnswer("t", None, 1, 1, True, 0.0, 0.0, "m"))
    store.close()
    _plant_pickle(tmp_path, "b", payloads(tmp_path / "pwned")["os.system"])
    _plant_pickle(tmp_path, "c", payloads(tmp_path / "pwned")["os.mkdir"])
    store = AnswerStore(tmp_path)
    assert store.get("b") is None and store.get("c") is None and store.get("b") is None
    assert store.get("a") is not None and store.malformed == 2  # per entry, not per lookup
    store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("not a stored answer" in w for w in warnings) and any("2 entries" in w for w in warnings)
    assert not (tmp_path / "pwned").exists()


def test_old_pickled_cache_is_migrated_without_unpickling_code(tmp_path: Path) -> None:
    cache, marker = tmp_path / "cache", tmp_path / "pwned"
    # The previous llmhd's store: diskcache's default Disk (pickled dicts) under answers/.
    _plant_pickle(cache, key_of(0), dict(GOOD), folder=LEGACY_ANSWERS_DIR)
    _plant_pickle(cache, key_of(1), {**GOOD, "text": "<s>5</s>", "pad": "y" * 70000}, folder=LEGACY_ANSWERS_DIR)
    _plant_pickle(cache, key_of(2), payloads(marker)["os.system"], folder=LEGACY_ANSWERS_DIR)
    _plant_pickle(cache, key_of(3), {**GOOD, "value": payloads(marker)["builtins.exec"]}, folder=LEGACY_ANSWERS_DIR)
    _plant_pickle(cache, "not-a-hash", 12, folder=LEGACY_ANSWERS_DIR)
    legacy_before = sorted((p.name, p.stat().st_size) for p in (cache / LEGACY_ANSWERS_DIR).rglob("*") if p.is_file())
    with LocalServer(Answering()) as server:
        with client_for(server, cache) as c:
            assert (c.store.migration.copied, c.store.migration.skipped) == (2, 3)
            results = c.run([llm_request(i) for i in range(4)])
            assert not marker.exists()
        assert [r.value for r in results] == [7, 5, 7, 7] and [r.cached for r in results] == [True, True, False, False]
        assert server.handler.calls == 2
        with client_for(server, cache) as c:
            assert c.store.migration is None  # copied once: the marker says so
    assert json.loads((cache / ANSWERS_DIR / MIGRATED_MARKER).read_text())["copied"] == 2
    legacy_after = sorted((p.name, p.stat().st_size) for p in (cache / LEGACY_ANSWERS_DIR).rglob("*") if p.is_file())
    assert [n for n, _ in legacy_after if n.endswith(".val")] == [n for n, _ in legacy_before if n.endswith(".val")]
    assert not marker.exists()


@pytest.mark.parametrize("setting", ["sqlite_writable_schema", "disk_fetch", "_sql"])
def test_planted_store_settings_are_refused(tmp_path: Path, setting: str) -> None:
    AnswerStore(tmp_path).close()
    with sqlite3.connect(tmp_path / ANSWERS_DIR / "cache.db") as conn:
        conn.execute("INSERT INTO Settings VALUES (?, ?)", (setting, "1"))
    with pytest.raises(LLMHDError, match=f"unexpected setting '{setting}'"):
        AnswerStore(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ANSWERS_DIR).mkdir()
    (tmp_path / "other" / ANSWERS_DIR / "cache.db").write_bytes(b"garbage, not sqlite" * 100)
    with pytest.raises(LLMHDError, match="not a readable answer store"):
        AnswerStore(tmp_path / "other")


def test_ledger_reads_planted_values_as_numbers_and_refuses_other_databases(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.add("t", "openai", "m", calls=2, cost=0.5)
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        conn.execute("UPDATE ledger SET cost = 'a lot', input_tokens = x'8004', output_tokens = 7")
    [row] = read_ledger(tmp_path)
    assert (row.calls, row.cost, row.input_tokens, row.output_tokens) == (2, 0.0, 0, 7)
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "ledger.sqlite") as conn:
        conn.execute("CREATE TABLE ledger (x TEXT)")
    with pytest.raises(LLMHDError, match="not an llmhd ledger"):
        read_ledger(other)


# ------------------------------------------------------------------------------- secrets in messages

from llmhd_cli.redact import RedactingFilter, mask_secrets, mask_url, url_secrets  # noqa: E402

PASSWORD, QUERY_KEY = "hunter2-pw", "QK-8d7f6e5a4b"
BASIC = "dXNlcjpodW50ZXIyLXB3"  # base64("user:hunter2-pw"), what HTTP Basic sends for the user info
SECRETS = (PASSWORD, QUERY_KEY, BASIC)


def secret_url(port: int) -> str:
    return f"http://user:{PASSWORD}@127.0.0.1:{port}/v1?api_key={QUERY_KEY}"


def test_mask_url_and_text() -> None:
    assert mask_url("http://user:pw@host:8080/v1?api_key=abc&x=1#f") == "http://***@host:8080/v1?api_key=***&x=1#f"
    assert mask_url("https://ghp_token@host/v1") == "https://***@host/v1"
    assert mask_url("https://h/v1?key=AIza&max_tokens=5&access_token=t&X-Amz-Signature=s") == \
        "https://h/v1?key=***&max_tokens=5&access_token=***&X-Amz-Signature=***"
    assert mask_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1" and mask_url(None) is None
    text = f"cannot reach {secret_url(1)} (ConnectError); see ?token=abc&n=2 and max_tokens=5, eps=0.5"
    masked = mask_secrets(text)
    assert masked == ("cannot reach http://***@127.0.0.1:1/v1?api_key=*** (ConnectError); "
                      "see ?token=***&n=2 and max_tokens=5, eps=0.5")
    assert mask_secrets("no url, user 5 failed") == "no url, user 5 failed"
    assert set(url_secrets(secret_url(1))) >= set(SECRETS)
    assert "user" not in url_secrets(secret_url(1))  # a user name next to a password is just a name


def test_redacting_filter_masks_log_records_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("llmhd-test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("HTTP Request: POST %s/chat/completions", secret_url(9))
        try:
            raise RuntimeError(f"failed on {secret_url(9)}")
        except RuntimeError:
            logger.exception("crashed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "http://***@127.0.0.1:9/v1?api_key=***" in text and "RuntimeError" in text
    assert not any(s in text for s in SECRETS), text


def _echoing_401(rec) -> Reply:
    # A server that quotes back what it got: the path (with the query key) and the Basic credentials.
    return Reply(401, {"error": {"message": f"bad key on {rec.path}, auth={rec.headers.get('authorization')}"}})


def test_cli_masks_credentials_in_errors_and_logs(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "no-config.toml"))
    for env in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMHD_BASE_URL", "LLMHD_PROVIDER", "LLMHD_LLM_CACHE"):
        monkeypatch.delenv(env, raising=False)
    src = write_rlmrec(tmp_path / "src")
    code, _, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src))
    assert code == 0, err
    caplog.set_level(logging.INFO)
    with LocalServer(_echoing_401) as server:
        code, out, err = run_cli(capsys, tmp_path / "ws", "-v", "summarize", "--dataset", "d", "--provider", "openai",
                                 "--model", "local", "--base-url", secret_url(server.port))
        assert server.requests and server.requests[0].headers.get("authorization") == f"Basic {BASIC}"
    last = err.strip().splitlines()[-1]  # (the progress bar shares stderr)
    assert code == 2 and last.startswith("error: ") and "HTTP 401" in last and "api_key=***" in last, err
    assert "Traceback" not in out + err
    assert "HTTP Request: POST http://***@127.0.0.1" in caplog.text  # the HTTP library's line, masked
    shown = out + err + caplog.text
    assert not any(s in shown for s in SECRETS), shown
    files = [p for p in (tmp_path / "ws").rglob("*") if p.is_file()]
    assert files and not any(s.encode() in p.read_bytes() for p in files for s in SECRETS)


def test_unreachable_server_message_masks_the_url(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from llm_servers import free_port

    caplog.set_level(logging.DEBUG)
    provider = OpenAIProvider(model="local", base_url=secret_url(free_port()), api_key="sk-test-unused")
    with LLMClient(provider, tmp_path, prices=PriceTable.from_dict({}), max_retries=1, backoff_base=0.01) as c:
        with pytest.raises(LLMHDError) as info:
            c.run([llm_request(0)])
    message = str(info.value)
    assert message.startswith("cannot reach http://***@127.0.0.1:") and "api_key=***" in message
    assert not any(s in message + caplog.text for s in SECRETS)
    # A provider's own exception is masked where it is raised.
    from llmhd_cli.llm.base import ProviderError

    assert PASSWORD not in str(ProviderError(f"openai: failed on {secret_url(1)}"))


def test_cli_masks_any_user_error_it_prints(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever raises a user error quoting a URL (a plugin, a settings check), the one line is masked.
    import llmhd_cli.cli as cli_module

    def refuse(flag: object) -> Path:
        raise LLMHDError(f"workspace on {secret_url(9)} is not supported")

    monkeypatch.setattr(cli_module, "resolve_workspace", refuse)
    code, out, err = run_cli(capsys, None, "prepare", "--dataset", "d")
    assert_user_error(code, out, err, "workspace on http://***@127.0.0.1:9/v1?api_key=***")
    assert not any(s in out + err for s in SECRETS)


# ------------------------------------------------------------------------------- properties (hypothesis)

try:
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st
except ImportError:  # the `test` extra installs it; without it these tests are skipped
    given = None

if given is None:
    def test_property_tests_need_hypothesis() -> None:
        pytest.skip("hypothesis is not installed (pip install -e '.[test]')")
else:
    PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

    def _valid_pickle(protocol: int) -> bytes:
        return pickle.dumps(sp.coo_matrix(np.eye(4, 3)), protocol=protocol)

    @st.composite
    def mutated_pickles(draw: st.DrawFn) -> bytes:
        """A valid matrix pickle with a few bytes replaced, cut short or extended."""
        data = bytearray(_valid_pickle(draw(st.sampled_from([0, 2, 4, 5]))))
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        cut = draw(st.integers(len(data) // 2, len(data)))
        return bytes(data[:cut]) + draw(st.binary(max_size=8))

    @pytest.mark.slow
    @PROPERTY
    @given(data=st.one_of(st.binary(max_size=200), mutated_pickles()))
    def test_property_any_matrix_file_loads_or_is_one_user_error(tmp_path: Path, data: bytes) -> None:
        from llmhd_plugins.datasets import _load_matrix

        path = tmp_path / "trn_mat.pkl"
        path.write_bytes(data)
        try:
            matrix = _load_matrix(path)
        except LLMHDError as exc:
            assert "\n" not in str(exc) and "trn_mat.pkl" in str(exc)
        else:
            assert sp.issparse(matrix) and matrix.nnz <= matrix.shape[0] * matrix.shape[1]

    @pytest.mark.slow
    @PROPERTY
    @given(profiles=st.one_of(
        st.dictionaries(st.one_of(st.integers(-3, 30), st.text(max_size=3), st.floats(allow_nan=True)),
                        st.one_of(st.text(max_size=5), st.dictionaries(st.text(max_size=8), st.text(max_size=5)),
                                  st.integers(), st.none()), max_size=6),
        st.lists(st.text(max_size=3), max_size=3), st.text(max_size=5)))
    @example(profiles={float("inf"): "x"})
    @example(profiles={2.7: "x"})
    def test_property_any_profile_dict_loads_or_is_one_user_error(tmp_path: Path, profiles: object) -> None:
        from llmhd_plugins.datasets import _load_profiles

        path = tmp_path / "itm_prf.pkl"
        path.write_bytes(pickle.dumps(profiles))
        try:
            texts, extras = _load_profiles(path, 9, "item")
        except LLMHDError as exc:
            assert "\n" not in str(exc) and "itm_prf.pkl" in str(exc)
        else:
            assert all(0 <= int(k) < 9 and isinstance(v, str) for k, v in texts.items())
            assert all(isinstance(k, str) or float(k).is_integer() for k in profiles)  # 2.7 is no id

    TSV_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=120)

    @pytest.mark.slow
    @PROPERTY
    @given(inter=st.one_of(TSV_TEXT, st.builds(lambda rows: "user_id\titem_id\trating\n" + "\n".join(rows),
                                                st.lists(TSV_TEXT, max_size=5))),
           item=st.one_of(st.none(), TSV_TEXT, st.builds(lambda body: "item_id\ttitle\n" + body, TSV_TEXT)))
    def test_property_any_atomic_file_loads_or_is_one_user_error(tmp_path: Path, inter: str, item: str | None) -> None:
        from llmhd_plugins.datasets import load_atomic

        folder = tmp_path / "atomic"
        folder.mkdir(exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        (folder / "x.inter").write_text(inter, encoding="utf-8")
        if item is not None:
            (folder / "x.item").write_text(item, encoding="utf-8")
        try:
            raw = load_atomic(folder, {})
        except LLMHDError as exc:
            assert "\n" not in str(exc)
        else:
            assert len(raw.users) == len(raw.items) > 0

    @pytest.mark.slow
    @PROPERTY
    @given(value=st.one_of(st.text(max_size=60), st.binary(max_size=30), st.integers(-2**63, 2**63 - 1), st.floats(),
                           st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                                        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(st.sampled_from(list(GOOD) + ["x"]), inner,
                                                                                max_size=9)),
                                        max_leaves=20).map(json.dumps)),
           mode=st.sampled_from([1, 2, 3, 4]))
    def test_property_any_planted_entry_is_an_answer_or_a_miss(tmp_path: Path, value: object, mode: int) -> None:
        cache = tmp_path / f"c{abs(hash((repr(value), mode)))}"
        store = AnswerStore(cache)
        store.put("k", StoredAnswer("t", None, 1, 1, True, 0.0, 0.0, "m"))
        store.close()
        with sqlite3.connect(cache / ANSWERS_DIR / "cache.db") as conn:
            conn.execute("UPDATE Cache SET mode = ?, value = ? WHERE key = 'k'", (mode, value))
        store = AnswerStore(cache)
        try:
            answer = store.get("k")
        finally:
            store.close()
        if answer is None:
            assert store.malformed == 1
        else:
            assert isinstance(answer.text, str) and type(answer.input_tokens) is int and answer.cost >= 0

    @PROPERTY
    @given(password=st.text("QZXJ#%/?@:", min_size=4, max_size=12), key=st.text("QZXJ", min_size=4, max_size=12),
           host=st.sampled_from(["127.0.0.1:8000", "proxy.local", "[::1]:9"]), path=st.sampled_from(["", "/v1", "/a/b"]))
    def test_property_masked_urls_show_no_secret(password: str, key: str, host: str, path: str) -> None:
        from urllib.parse import quote

        url = f"https://bob:{quote(password, safe='')}@{host}{path}?api_key={key}&n=1"
        for shown in (mask_url(url), mask_secrets(f"failed: {url} (retry)")):
            assert key not in shown and quote(password, safe="") not in shown and password not in shown, shown
            assert host in shown


def test_recbole_compat_leaves_torch_load_weights_only(tmp_path: Path) -> None:
    """No process-wide torch.load(weights_only=False): a tampered .pt is refused wherever it is loaded."""
    import torch

    from llmhd_cli import recbole_compat

    recbole_compat.apply()
    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2), "extra": payloads(marker)["os.system"]}, path)
    with pytest.raises(pickle.UnpicklingError, match="posix.system"):
        torch.load(path)
    assert not marker.exists()
