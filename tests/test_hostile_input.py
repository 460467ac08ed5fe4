"""Hostile and careless input: nothing llmhd reads can run code, and no secret is echoed.

Every crafted file here carries a payload that would create a marker file if it ever ran;
the marker must never appear, and the command must answer with one line (or a counted
cache miss), never a traceback.
"""

from __future__ import annotations

import builtins
import io
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
@pytest.mark.skipif(not AMAZON.exists(), reason="needs the shared Amazon-books RLMRec split")
def test_real_amazon_books_loads_through_the_policy() -> None:
    from llmhd_plugins.datasets import load_rlmrec

    raw = load_rlmrec(AMAZON, {})
    assert raw.n_users == 11000 and len(raw.all_items) == 9332
