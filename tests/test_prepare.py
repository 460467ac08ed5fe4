"""``llmhd prepare``: data invariants, formats, the CLI's errors, and that RecBole loads the output.

CLI tests call `llmhd_cli.cli.main` (the console-script entry point, which turns `LLMHDError`
into one line on stderr and exit code 2) and catch its SystemExit.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from cli_helpers import run_cli

from llmhd_cli.datasets import DatasetInfo, PreparedDataset, open_dataset
from llmhd_cli.errors import LLMHDError
from llmhd_cli.prepare import PrepareOptions, _split_per_user, ensure_prepared, prepare_dataset

AMAZON = Path("/work/shared/data/rlmrec/amazon-books")


# ------------------------------------------------------------------------------- helpers


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame.iloc[:, 0], frame.iloc[:, 1], strict=True))


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def load(folder: Path) -> dict[str, pd.DataFrame]:
    name = folder.name
    out = {s: read_tsv(folder / f"{name}.{s}.inter") for s in ("train", "valid", "test")}
    out["noise"] = read_tsv(folder / "noise.tsv")
    if (folder / "ratings.tsv").exists():
        out["ratings"] = read_tsv(folder / "ratings.tsv")
    return out


def assert_nothing_left(workspace: Path, name: str) -> None:
    folder = workspace / "datasets"
    leftovers = [p.name for p in folder.iterdir()] if folder.exists() else []
    assert [p for p in leftovers if p == name or p.startswith(f".{name}.")] == []


def write_rated(folder: Path, name: str = "synth", n_users: int = 60, n_items: int = 50, per_user: int = 25,
                seed: int = 0, rating: bool = True, item_file: bool = True) -> Path:
    """A RecBole atomic dataset with ratings 1..5 (about 30% below 3) and a .item file."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.15, 0.2, 0.25, 0.25])), u * 1000 + i))
    frame = pd.DataFrame(rows, columns=["user_id:token", "item_id:token", "rating:float", "timestamp:float"])
    if not rating:
        frame = frame.drop(columns=["rating:float"])
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    if item_file:
        items = pd.DataFrame({
            "item_id:token": [f"i{i}" for i in range(n_items)],
            "title:token_seq": [f"Item number {i}" for i in range(n_items)],
            "genre:token": ["rock" if i % 2 else "jazz" for i in range(n_items)],
        })
        items.to_csv(folder / f"{name}.item", sep="\t", index=False)
    return folder


def write_rlmrec(folder: Path, shape: tuple[int, int] = (30, 20), seed: int = 0, profiles: bool = False) -> Path:
    """Disjoint train/valid/test matrices (about 3:1:1) of a random implicit dataset."""
    rng = np.random.default_rng(seed)
    dense = rng.random(shape) < 0.4
    dense[:, 0] = True  # every user has at least one interaction
    which = rng.choice(3, size=shape, p=[0.6, 0.2, 0.2])
    folder.mkdir(parents=True, exist_ok=True)
    for k, fname in enumerate(("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl")):
        matrix = sp.coo_matrix((dense & (which == k)).astype(np.float64))
        (folder / fname).write_bytes(pickle.dumps(matrix))
    if profiles:
        (folder / "itm_prf.pkl").write_bytes(pickle.dumps({i: {"profile": f"book {i}"} for i in range(shape[1])}))
        (folder / "usr_prf.pkl").write_bytes(pickle.dumps({u: {"profile": f"reader {u}"} for u in range(shape[0])}))
    return folder


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = tmp_path_factory.mktemp("ws")
    return prepare_dataset(workspace, PrepareOptions(name="ml-100k")).path


@pytest.fixture
def synth(tmp_path: Path) -> Path:
    return write_rated(tmp_path / "src")


# ---------------------------------------------------------------------------- invariants


def check_invariants(folder: Path, kcore: int | None) -> dict[str, pd.DataFrame]:
    data = load(folder)
    info = DatasetInfo.from_json((folder / "dataset.json").read_text())
    train, valid, test, noise = (pairs(data[s]) for s in ("train", "valid", "test", "noise"))
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(train) == len(data["train"]) and len(noise) == len(data["noise"])  # no duplicates
    assert noise <= train
    clean_train = train - noise
    assert info.stats["train_clean"] == len(clean_train)
    assert info.stats["noise"] == len(noise) == round(info.options["noise_ratio"] * len(clean_train))
    # Noise users/items come from the clean data; every user keeps a clean training pair.
    clean = pd.DataFrame(sorted(clean_train | valid | test), columns=["user", "item"])
    assert {u for u, _ in noise} <= set(clean.user) and {i for _, i in noise} <= set(clean.item)
    assert {u for u, _ in clean_train} == set(clean.user)
    if kcore:
        assert clean.groupby("user").size().min() >= kcore
        assert clean.groupby("item").size().min() >= kcore
    return data


def test_ml100k_invariants_and_low_rating_noise(ml100k: Path) -> None:
    data = check_invariants(ml100k, kcore=5)
    info = DatasetInfo.from_json((ml100k / "dataset.json").read_text())
    assert info.domain == "movies" and info.options["noise_source"] == "low-rating" and info.has_ratings
    ratings = data["ratings"]
    assert len(ratings) == 100_000  # every raw rating, low ones included
    rated = dict(zip(zip(ratings.iloc[:, 0], ratings.iloc[:, 1], strict=True), ratings.iloc[:, 2].astype(float), strict=True))
    noise = pairs(data["noise"])
    assert noise and all(rated[p] < 3 for p in noise)
    assert all(rated[p] >= 3 for p in pairs(data["train"]) - noise)
    assert all(rated[p] >= 3 for s in ("valid", "test") for p in pairs(data[s]))
    # The noise file carries the true (low) ratings.
    assert (data["noise"]["rating:float"].astype(float) < 3).all()
    texts = open_dataset(ml100k.parent.parent, "ml-100k").item_texts()
    assert texts["1"] == "title: Toy Story; year: 1995; genres: Animation, Children's, Comedy"
    assert set(texts) == {i for s in ("train", "valid", "test") for _, i in pairs(data[s])}


def test_split_is_about_3_1_1_and_keeps_a_train_pair_per_user() -> None:
    users = np.repeat(np.arange(200), np.arange(1, 201))
    labels = _split_per_user(users.astype(str), np.random.default_rng(1))
    per_user = pd.crosstab(users, labels)
    assert (per_user[0] >= 1).all()
    shares = np.bincount(labels) / len(labels)
    assert np.allclose(shares, [0.6, 0.2, 0.2], atol=0.01)


def test_atomic_source_invariants_and_texts(tmp_path: Path, synth: Path) -> None:
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="synth", source_dir=synth, text_fields=["title"]))
    check_invariants(ds.path, kcore=5)
    assert ds.info.source == "atomic" and ds.info.domain == "items"
    assert ds.item_texts()["i3"] == "title: Item number 3"
    rows = [json.loads(line) for line in (ds.path / "items.jsonl").open()]
    assert rows[0]["attributes"] == {"title": rows[0]["text"].removeprefix("title: ")}


def test_random_noise_is_unobserved_anywhere(tmp_path: Path, synth: Path) -> None:
    ds = prepare_dataset(
        tmp_path / "ws",
        PrepareOptions(name="synth", source_dir=synth, noise_source="random", noise_ratio=0.2),
    )
    data = check_invariants(ds.path, kcore=5)
    observed = pairs(data["ratings"])  # every raw pair, low ratings included
    assert len(data["noise"]) > 0 and not (pairs(data["noise"]) & observed)
    assert list(data["noise"].columns) == ["user_id:token", "item_id:token"]
    # Injected pairs have no rating, so train carries none; the others keep theirs.
    assert list(data["train"].columns) == ["user_id:token", "item_id:token"]
    assert "rating:float" in data["valid"].columns


def test_split_and_noise_reproducible_by_seed(tmp_path: Path, synth: Path) -> None:
    def train(seed: int, name: str) -> str:
        ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name=name, source_dir=synth, seed=seed))
        return ds.split_file("train").read_text() + (ds.path / "noise.tsv").read_text()

    assert train(7, "a") == train(7, "b")
    assert train(7, "a2") != train(8, "c")


def test_noise_ratio_zero(tmp_path: Path, synth: Path) -> None:
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="synth", source_dir=synth, noise_ratio=0))
    data = check_invariants(ds.path, kcore=5)
    assert len(data["noise"]) == 0 and ds.info.stats["noise"] == 0


def test_min_rating_and_kcore_flags(tmp_path: Path, synth: Path) -> None:
    ds = prepare_dataset(
        tmp_path / "ws", PrepareOptions(name="synth", source_dir=synth, min_rating=4, kcore=8, noise_ratio=0.1)
    )
    data = check_invariants(ds.path, kcore=8)
    ratings = data["ratings"]
    rated = dict(zip(zip(ratings.iloc[:, 0], ratings.iloc[:, 1], strict=True), ratings.iloc[:, 2].astype(float), strict=True))
    assert all(rated[p] >= 4 for p in pairs(data["valid"]) | pairs(data["test"]))
    assert all(rated[p] < 4 for p in pairs(data["noise"]))


# ------------------------------------------------------------------------------- formats


@pytest.mark.skipif(not AMAZON.exists(), reason="RLMRec amazon-books split not available")
def test_amazon_books_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(capsys, tmp_path, "prepare", "--dataset", "amazon-books", "--source", str(AMAZON))
    assert code == 0, err
    info = open_dataset(tmp_path, "amazon-books").info
    assert (info.stats["users"], info.stats["items"]) == (11_000, 9_332)
    assert (info.stats["train_clean"], info.stats["valid"], info.stats["test"]) == (120_464, 40_290, 40_106)
    assert info.stats["noise"] == round(0.05 * 120_464) and info.options["noise_source"] == "random"
    assert info.domain == "books" and info.source == "rlmrec" and not info.has_ratings
    assert any("itm_prf.pkl" in n and "summarize" in n for n in info.notes)
    assert "11,000" in out and "9,332" in out and "99.88%" in out  # the Table 3 row
    check_invariants(tmp_path / "datasets" / "amazon-books", kcore=None)


def test_rlmrec_with_profiles(tmp_path: Path) -> None:
    src = write_rlmrec(tmp_path / "src", profiles=True)
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="yelp", source_dir=src, noise_ratio=0.1))
    check_invariants(ds.path, kcore=None)
    assert ds.info.domain == "businesses" and ds.info.has_item_texts and ds.info.has_user_profiles
    assert ds.item_texts()["3"] == "book 3"
    profiles = [json.loads(line) for line in (ds.path / "user_profiles.jsonl").open()]
    assert {"user_id": "0", "profile": "reader 0"} in profiles
    # Pre-split: the source's split is kept exactly.
    train = sp.coo_matrix(pickle.loads((src / "trn_mat.pkl").read_bytes()))
    assert ds.info.stats["train_clean"] == train.nnz


def test_the_dataset_type_reads_back_what_prepare_wrote(tmp_path: Path) -> None:
    """PreparedDataset names every file prepare writes and reads each back as written."""
    src = write_rlmrec(tmp_path / "src", profiles=True)
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="yelp", source_dir=src, noise_ratio=0.1))
    written = {p.name for p in ds.path.iterdir()}
    named = {f.name for f in (ds.meta_file, ds.noise_file, ds.items_file, ds.user_profiles_file)}
    assert written == named | {ds.split_file(s).name for s in ("train", "valid", "test")}
    again = PreparedDataset.read(ds.path)
    assert again == ds and again.fingerprint() == ds.fingerprint()
    assert again.user_profiles() == {r["user_id"]: r["profile"]
                                     for r in map(json.loads, ds.user_profiles_file.open())}
    assert [r["item_id"] for r in again.read_items()] == sorted(again.item_texts())  # ids are string tokens
    noise_users, noise_items = again.read_noise()
    train_users, train_items = again.read_split("train")
    assert len(noise_users) == ds.info.stats["noise"] > 0
    assert list(zip(train_users[-len(noise_users):], train_items[-len(noise_items):], strict=True)) == \
        list(zip(noise_users, noise_items, strict=True))  # train ends with the injected noise
    with pytest.raises(LLMHDError, match="not a prepared dataset"):
        PreparedDataset.read(tmp_path / "src")


def test_rename_keeps_the_data_under_the_new_name(tmp_path: Path, synth: Path) -> None:
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="synth", source_dir=synth))
    before = {s: ds.split_file(s).read_text() for s in ("train", "valid", "test")}
    renamed = ds.rename("synth-copy")
    assert renamed.path == ds.path and renamed.name == renamed.info.options["name"] == "synth-copy"
    assert {s: renamed.split_file(s).read_text() for s in before} == before
    assert not ds.split_file("train").exists()
    assert PreparedDataset.read(ds.path) == renamed


def test_format_flag_and_domain_flag(tmp_path: Path, synth: Path) -> None:
    write_rlmrec(synth)  # both formats in one folder: auto picks rlmrec, --format atomic overrides
    auto = prepare_dataset(tmp_path / "ws", PrepareOptions(name="x", source_dir=synth))
    forced = prepare_dataset(tmp_path / "ws", PrepareOptions(name="y", source_dir=synth, format="atomic", domain="music"))
    assert auto.info.source == "rlmrec" and forced.info.source == "atomic" and forced.info.domain == "music"


def test_implicit_atomic_without_rating_defaults_to_random(tmp_path: Path) -> None:
    src = write_rated(tmp_path / "src", rating=False, item_file=False)
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="synth", source_dir=src))
    check_invariants(ds.path, kcore=5)
    assert ds.info.options["noise_source"] == "random" and not ds.info.has_item_texts
    assert not (ds.path / "ratings.tsv").exists() and not (ds.path / "items.jsonl").exists()


def recbole_splits(data_path: Path, name: str, tmp_path: Path) -> tuple:
    from llmhd_cli import recbole_compat

    recbole_compat.apply()
    from recbole.config import Config
    from recbole.data import create_dataset

    config_dict = {
        "data_path": str(data_path),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]},
        "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"),
    }
    with recbole_compat.isolated_argv():
        config = Config(model="LightGCN", dataset=name, config_dict=config_dict)
    # As llmhd_cli.recbole_data does: RecBole's Config sends the name "ml-100k" to its bundled copy.
    config["data_path"] = str(data_path / name)
    return create_dataset(config).build()


def test_recbole_loads_prepared_dataset(tmp_path: Path, synth: Path) -> None:
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="synth", source_dir=synth))
    train, valid, test = recbole_splits(tmp_path / "ws" / "datasets", "synth", tmp_path)
    assert len(train.inter_feat) == ds.info.stats["train"]
    assert len(valid.inter_feat) == ds.info.stats["valid"] and len(test.inter_feat) == ds.info.stats["test"]


def test_recbole_loads_prepared_ml100k(ml100k: Path, tmp_path: Path) -> None:
    info = DatasetInfo.from_json((ml100k / "dataset.json").read_text())
    train, _, _ = recbole_splits(ml100k.parent, "ml-100k", tmp_path)
    assert len(train.inter_feat) == info.stats["train"]


# ------------------------------------------------------------------------------- the CLI


def test_cli_ml100k_table_and_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(capsys, tmp_path, "prepare", "--dataset", "ml-100k")
    assert code == 0, err
    for word in ("#users", "#items", "#interactions", "sparsity", "noise", "943"):
        assert word in out
    before = (tmp_path / "datasets" / "ml-100k" / "ml-100k.train.inter").read_text()
    code, out, err = run_cli(capsys, tmp_path, "prepare", "--dataset", "ml-100k", "--seed", "1")
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, tmp_path, "prepare", "--dataset", "ml-100k", "--seed", "1", "--force")
    assert code == 0, err
    after = (tmp_path / "datasets" / "ml-100k" / "ml-100k.train.inter").read_text()
    assert after != before
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["ml-100k"]  # no temp/old folders


def test_failed_write_leaves_nothing_and_keeps_old(tmp_path: Path, synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmhd_cli.prepare as prepare

    ws = tmp_path / "ws"
    first = prepare_dataset(ws, PrepareOptions(name="synth", source_dir=synth))
    before = first.split_file("train").read_text()

    def broken(folder: Path, *args: object) -> None:
        (folder / "half-written").write_text("x")
        raise LLMHDError("disk full")

    monkeypatch.setattr(prepare, "_write_dataset", broken)
    with pytest.raises(LLMHDError):
        prepare_dataset(ws, PrepareOptions(name="synth", source_dir=synth, seed=5, force=True))
    with pytest.raises(LLMHDError):
        prepare_dataset(ws, PrepareOptions(name="other", source_dir=synth))
    assert first.split_file("train").read_text() == before
    assert sorted(p.name for p in (ws / "datasets").iterdir()) == ["synth"]


def _corrupt(path: Path) -> None:
    path.write_bytes(b"not a pickle")


def _reshape(path: Path) -> None:
    path.write_bytes(pickle.dumps(sp.coo_matrix((31, 20))))


def _overlap(folder: Path) -> None:
    train = pickle.loads((folder / "trn_mat.pkl").read_bytes()).tocsr()
    test = pickle.loads((folder / "tst_mat.pkl").read_bytes()).tolil()
    test[0, train[0].indices[0]] = 1.0
    (folder / "tst_mat.pkl").write_bytes(pickle.dumps(test.tocoo()))


RLMREC_ERRORS = [
    ("missing", lambda d: (d / "val_mat.pkl").unlink(), [], ["val_mat.pkl", "not found"]),
    ("unreadable", lambda d: _corrupt(d / "tst_mat.pkl"), [], ["tst_mat.pkl", "cannot unpickle"]),
    ("shape", lambda d: _reshape(d / "val_mat.pkl"), [], ["val_mat.pkl", "shape (31, 20)", "(30, 20)"]),
    ("overlap", _overlap, [], ["overlap", "trn_mat.pkl and tst_mat.pkl", "disjoint"]),
    ("low-rating", lambda d: None, ["--noise-source", "low-rating"], ["low-rating", "no ratings", "random"]),
    ("bad-profile-id", lambda d: (d / "itm_prf.pkl").write_bytes(pickle.dumps({"abc": {"profile": "x"}})), [],
     ["itm_prf.pkl", "'abc'", "numeric item id"]),
]


@pytest.mark.parametrize("case,breaks,flags,words", RLMREC_ERRORS, ids=[c[0] for c in RLMREC_ERRORS])
def test_cli_rlmrec_errors(tmp_path: Path, capsys: pytest.CaptureFixture, case, breaks, flags, words) -> None:
    src = write_rlmrec(tmp_path / "src")
    breaks(src)
    code, out, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "d", "--source", str(src), *flags)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert_nothing_left(tmp_path / "ws", "d")


def _bad_rating(folder: Path) -> None:
    text = (folder / "synth.inter").read_text().splitlines()
    cells = text[3].split("\t")
    cells[2] = "five"
    text[3] = "\t".join(cells)
    (folder / "synth.inter").write_text("\n".join(text) + "\n")


def _drop_rating(folder: Path) -> None:
    write_rated(folder, rating=False)


ATOMIC_ERRORS = [
    ("non-numeric-rating", _bad_rating, [], ["synth.inter", "rating", "numeric", "'five'", "line 4"]),
    ("no-rating-low-noise", _drop_rating, ["--noise-source", "low-rating"],
     ["synth.inter", "low-rating", "no ratings", "random"]),
    ("kcore-empty", lambda d: None, ["--kcore", "1000"], ["no interactions left", "--kcore"]),
    ("pool-too-small", lambda d: None, ["--noise-ratio", "0.9"], ["--noise-ratio", "lower", "--noise-source random"]),
    ("text-field", lambda d: None, ["--text-fields", "title,nope"], ["synth.item", "'nope'", "--text-fields"]),
    ("no-user-col", lambda d: (d / "synth.inter").write_text("who:token\titem_id:token\nu\ti\n"), [],
     ["synth.inter", "user_id"]),
    ("bad-format", lambda d: None, ["--format", "parquet"], ["--format parquet", "unknown format"]),
    ("unreadable-inter", lambda d: (d / "synth.inter").write_bytes(b"user_id\titem_id\n\xff\xfe\t\x00\n"), [],
     ["synth.inter", "cannot read"]),
    ("missing-item-file", lambda d: (d / "synth.item").unlink(), ["--text-fields", "title"],
     ["synth.item", "not found", "--text-fields"]),
]


@pytest.mark.parametrize("case,breaks,flags,words", ATOMIC_ERRORS, ids=[c[0] for c in ATOMIC_ERRORS])
def test_cli_atomic_errors(tmp_path: Path, capsys: pytest.CaptureFixture, synth: Path, case, breaks, flags, words) -> None:
    breaks(synth)
    code, out, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "synth", "--source", str(synth), *flags)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert_nothing_left(tmp_path / "ws", "synth")


@pytest.mark.parametrize(
    "args,words",
    [
        (["--dataset", "steam"], ["--dataset steam", "not a built-in", "ml-100k", "--source"]),
        (["--dataset", "x", "--source", "/nonexistent/dir"], ["/nonexistent/dir", "not found"]),
        (["--dataset", "../evil"], ["--dataset", "not a usable dataset name"]),
        (["--dataset", "ml-100k", "--noise-ratio", "-0.1"], ["--noise-ratio", "between 0 and 1"]),
    ],
)
def test_cli_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], words: list[str]) -> None:
    code, out, err = run_cli(capsys, tmp_path, "prepare", *args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())


def test_cli_no_format_detected(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("nothing here")
    code, out, err = run_cli(capsys, tmp_path / "ws", "prepare", "--dataset", "x", "--source", str(tmp_path / "src"))
    assert code == 2 and "no known dataset format" in err and "--format" in err


# ------------------------------------------------------------------------- ensure_prepared


def test_ensure_prepared_builtin(tmp_path: Path) -> None:
    messages: list[str] = []
    ds = ensure_prepared(tmp_path, "ml-100k", notify=messages.append)
    assert ds.info.stats["users"] == 943 and len(messages) == 1 and "default options" in messages[0]
    again = ensure_prepared(tmp_path, "ml-100k", notify=messages.append)
    assert again.path == ds.path and len(messages) == 1  # already prepared: opened, not redone


def test_ensure_prepared_other_names_raise(tmp_path: Path) -> None:
    with pytest.raises(LLMHDError, match="llmhd prepare --dataset amazon-books --source DIR"):
        ensure_prepared(tmp_path, "amazon-books")


def test_sources_come_through_the_plugin_hook() -> None:
    from llmhd_cli import plugins

    registry = plugins.registry("dataset")
    assert {"ml-100k", "rlmrec", "atomic"} <= set(registry.names())
    assert {registry.owners[n] for n in ("ml-100k", "rlmrec", "atomic")} == {"llmhd_plugins.datasets"}
    assert registry.items["ml-100k"].builtin and registry.items["rlmrec"].detect is not None


def test_repeated_pairs_keep_the_latest_rating(tmp_path: Path, synth: Path) -> None:
    inter = synth / "synth.inter"
    first = inter.read_text().splitlines()[1].split("\t")
    with inter.open("a") as f:  # a later, low re-rating of the first pair
        f.write("\t".join([first[0], first[1], "1", str(int(first[3]) + 10**9)]) + "\n")
    ds = prepare_dataset(tmp_path / "ws", PrepareOptions(name="synth", source_dir=synth))
    ratings = read_tsv(ds.path / "ratings.tsv")
    row = ratings[(ratings.iloc[:, 0] == first[0]) & (ratings.iloc[:, 1] == first[1])]
    assert row.iloc[:, 2].tolist() == ["1"]
    assert any("repeated" in n for n in ds.info.notes)
