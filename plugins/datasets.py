"""Built-in dataset sources, registered through ``register_datasets`` like any plugin's.

- ``ml-100k``: MovieLens-100K as shipped inside the RecBole wheel (offline, rated, with titles,
  years and genres).
- ``rlmrec``: the RLMRec release format (pickled scipy user x item matrices, pre-split, optional
  LLM-written item/user profiles), read with a restricted unpickler that cannot run code.
- ``atomic``: RecBole atomic files (``NAME.inter`` and optional ``NAME.item``).

Each loader turns its input into `RawData` and raises `LLMHDError` naming the file for anything
malformed; cleaning, splitting and noise happen in `llmhd_cli.prepare`.
"""

from __future__ import annotations

import codecs
import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhd_cli.datasets import DatasetSource, RawData
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.safe_pickle import RefusedClass, restricted_load

if TYPE_CHECKING:
    import pandas as pd

# ------------------------------------------------------------------------ RecBole atomic files


def read_atomic_file(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file as strings, with the ``:type`` suffixes stripped from headers."""
    import pandas as pd

    try:
        # QUOTE_NONE: RecBole files are plain tab-separated; titles may contain quote marks.
        frame = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE, encoding="utf-8"
        )
    except FileNotFoundError:
        raise LLMHDError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas parser errors are ValueErrors
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise LLMHDError(f"{path}: cannot read as a tab-separated RecBole file ({reason})") from None
    names = [str(c).split(":", 1)[0].strip() for c in frame.columns]
    if len(set(names)) != len(names):
        raise LLMHDError(f"{path}: duplicate column names in header {list(frame.columns)}")
    frame.columns = names
    return frame


def numeric_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column as float64, or an error naming the first bad value and its line."""
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        first = bad[0]
        raise LLMHDError(
            f"{path}: column '{column}' must be numeric, found {frame[column].iloc[first]!r} on line "
            f"{first + 2} ({len(bad)} bad value(s))"
        )
    return values


def _pick_inter_file(source_dir: Path, name: str | None) -> Path:
    candidates = sorted(source_dir.glob("*.inter"))
    if not candidates:
        raise LLMHDError(f"{source_dir}: no RecBole .inter file found")
    if len(candidates) == 1:
        return candidates[0]
    for stem in (name, source_dir.name):
        if stem and source_dir / f"{stem}.inter" in candidates:
            return source_dir / f"{stem}.inter"
    listed = ", ".join(p.name for p in candidates)
    raise LLMHDError(
        f"{source_dir}: several .inter files ({listed}); name the dataset after one of them with --dataset"
    )


def _item_texts(
    item_path: Path, text_fields: list[str] | None, labels: dict[str, str], lists: set[str]
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Item text = "label: value; ..." over the chosen fields (empty values skipped)."""
    frame = read_atomic_file(item_path)
    if "item_id" not in frame.columns:
        raise LLMHDError(f"{item_path}: no item_id column (columns: {', '.join(frame.columns)})")
    fields = list(text_fields) if text_fields else [c for c in frame.columns if c != "item_id"]
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise LLMHDError(
            f"{item_path}: no column {missing[0]!r} for --text-fields (columns: {', '.join(frame.columns)})"
        )
    ids = frame["item_id"].tolist()
    columns = {f: frame[f].tolist() for f in fields}
    texts: dict[str, str] = {}
    attributes: dict[str, dict[str, str]] = {}
    for row, item in enumerate(ids):
        attrs = {f: columns[f][row].strip() for f in fields if columns[f][row].strip()}
        parts = [
            f"{labels.get(f, f)}: {', '.join(v.split()) if f in lists else v}" for f, v in attrs.items()
        ]
        if parts:
            texts[item] = "; ".join(parts)
            attributes[item] = attrs
    return texts, attributes


def load_atomic_files(
    inter_path: Path,
    item_path: Path | None,
    text_fields: list[str] | None,
    labels: dict[str, str] | None = None,
    lists: set[str] | None = None,
) -> RawData:
    """RawData from a RecBole ``.inter`` file (user_id, item_id[, rating][, timestamp]) and ``.item``."""
    frame = read_atomic_file(inter_path)
    for column in ("user_id", "item_id"):
        if column not in frame.columns:
            raise LLMHDError(f"{inter_path}: no {column} column (columns: {', '.join(frame.columns)})")
    if len(frame) == 0:
        raise LLMHDError(f"{inter_path}: no interactions")
    users = frame["user_id"].to_numpy(dtype=str)
    items = frame["item_id"].to_numpy(dtype=str)
    empty = np.flatnonzero((users == "") | (items == ""))
    if len(empty):
        raise LLMHDError(f"{inter_path}: empty user_id or item_id on line {empty[0] + 2}")
    ratings = numeric_column(frame, "rating", inter_path) if "rating" in frame.columns else None
    timestamps = numeric_column(frame, "timestamp", inter_path) if "timestamp" in frame.columns else None
    raw = RawData(
        users=users, items=items, ratings=ratings, timestamps=timestamps, files={"interactions": str(inter_path)}
    )
    if ratings is None:
        raw.notes.append(f"{inter_path.name} has no rating column: all interactions count as clean")
    if item_path is not None:
        raw.item_texts, raw.item_attributes = _item_texts(item_path, text_fields, labels or {}, lists or set())
    elif text_fields:
        raise LLMHDError(
            f"{inter_path.with_suffix('.item')}: file not found, but --text-fields asks for item text fields"
        )
    return raw


def detect_atomic(source_dir: Path) -> bool:
    return any(source_dir.glob("*.inter"))


def load_atomic(source_dir: Path | None, options: dict[str, Any]) -> RawData:
    if source_dir is None:
        raise LLMHDError("--source: the atomic format needs a folder with a RecBole .inter file")
    inter_path = _pick_inter_file(source_dir, options.get("name"))
    item_path = inter_path.with_suffix(".item")
    return load_atomic_files(inter_path, item_path if item_path.exists() else None, options.get("text_fields"))


# ------------------------------------------------------------------------------- ml-100k


ML100K_TEXT_FIELDS = ["movie_title", "release_year", "class"]


def ml100k_dir() -> Path:
    import recbole

    return Path(recbole.__file__).parent / "dataset_example" / "ml-100k"


def load_ml100k(source_dir: Path | None, options: dict[str, Any]) -> RawData:
    folder = source_dir or ml100k_dir()
    return load_atomic_files(
        folder / "ml-100k.inter",
        folder / "ml-100k.item",
        options.get("text_fields") or ML100K_TEXT_FIELDS,
        labels={"movie_title": "title", "release_year": "year", "class": "genres"},
        lists={"class"},  # genres are space-separated tokens ("Sci-Fi", "Film-Noir" have no spaces)
    )


# -------------------------------------------------------------------------------- RLMRec

RLMREC_SPLIT_FILES = {"train": "trn_mat.pkl", "valid": "val_mat.pkl", "test": "tst_mat.pkl"}


_SPARSE_CLASSES = frozenset(f"{kind}_{flavour}" for kind in ("coo", "csr", "csc", "dok", "lil", "bsr", "dia")
                           for flavour in ("matrix", "array"))
_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
                       "complex", "bool", "object"})
_REFUSAL = "RLMRec files hold only scipy sparse matrices, numpy arrays and dicts"


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol < 3 pickles bytes as _codecs.encode(text, "latin1"); no other codec is allowed.
    if encoding not in ("latin1", "latin-1"):
        raise ValueError(f"codec {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _rlmrec_globals(module: str, name: str) -> Any:
    """What an RLMRec pickle may name: scipy sparse classes, numpy's array and dtype
    rebuilders and plain builtins (under scipy's / numpy's old and new module paths)."""
    import copyreg

    import scipy.sparse as sp

    if (module == "scipy.sparse" or module.startswith("scipy.sparse.")) and name in _SPARSE_CLASSES:
        return getattr(sp, name)  # the class itself, whichever private module wrote it
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy 1
            from numpy.core import multiarray  # type: ignore[no-redef]
        return getattr(multiarray, name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        try:
            from numpy._core import numeric
        except ImportError:
            from numpy.core import numeric  # type: ignore[no-redef]
        return numeric._frombuffer  # type: ignore[attr-defined]  # private, not in the stubs
    if module == "builtins" and name in _BUILTINS:
        import builtins

        return getattr(builtins, name)
    if module == "copyreg" and name == "_reconstructor":
        return copyreg._reconstructor  # type: ignore[attr-defined]  # protocol 0/1 objects; the classes it gets pass this policy too
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    if module == "collections" and name == "OrderedDict":
        import collections

        return collections.OrderedDict
    return None


def _unpickle(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return restricted_load(f, _rlmrec_globals)
    except FileNotFoundError:
        raise LLMHDError(f"{path}: file not found") from None
    except OSError as exc:
        raise LLMHDError(f"{path}: cannot read ({exc.strerror})") from None
    except RefusedClass as exc:
        raise LLMHDError(f"{path}: refuses to load class {exc.qualified}; {_REFUSAL}") from None
    except Exception as exc:  # unpickling can fail in many ways; all mean a bad file
        raise LLMHDError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from None


def _load_matrix(path: Path) -> Any:
    import scipy.sparse as sp

    if not path.exists():
        raise LLMHDError(f"{path}: file not found; the RLMRec format needs {', '.join(RLMREC_SPLIT_FILES.values())}")
    obj = _unpickle(path)
    if not (sp.issparse(obj) or (isinstance(obj, np.ndarray) and obj.ndim == 2)):
        raise LLMHDError(f"{path}: expected a pickled scipy sparse users x items matrix, got {type(obj).__name__}")
    try:
        matrix = sp.coo_matrix(obj)
        if not (np.issubdtype(matrix.dtype, np.number) or matrix.dtype == bool):
            raise ValueError(f"values of dtype {matrix.dtype}")
        rows, cols = matrix.shape
        if matrix.nnz and (min(matrix.row.min(), matrix.col.min()) < 0
                           or matrix.row.max() >= rows or matrix.col.max() >= cols):
            raise ValueError(f"indices outside its shape {matrix.shape}")
        matrix.sum_duplicates()
        matrix.eliminate_zeros()  # an explicit 0 is not an interaction
    except Exception as exc:  # a crafted object of an allowed class: inconsistent internals
        raise LLMHDError(f"{path}: not a valid numeric users x items matrix ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return matrix


def _load_profiles(path: Path, limit: int, what: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``{id: {"profile": str, ...}}`` (or ``{id: str}``) -> texts and the other string fields."""
    obj = _unpickle(path)
    if not isinstance(obj, dict):
        raise LLMHDError(f"{path}: expected a dict {{{what} id: {{'profile': str}}}}, got {type(obj).__name__}")
    texts: dict[str, str] = {}
    extras: dict[str, dict[str, str]] = {}
    for key, value in obj.items():
        try:
            if isinstance(key, (float, np.floating)) and not float(key).is_integer():
                raise ValueError  # int() would truncate 2.7 to 2, and fail on inf / nan
            index = int(key)
        except (TypeError, ValueError, OverflowError):
            raise LLMHDError(f"{path}: key {key!r} is not a numeric {what} id") from None
        if not 0 <= index < limit:
            raise LLMHDError(f"{path}: {what} id {index} is outside the matrices' {limit} {what}s")
        if isinstance(value, dict):
            profile = value.get("profile")
            extras[str(index)] = {k: v for k, v in value.items() if k != "profile" and isinstance(v, str)}
        else:
            profile = value
        if not isinstance(profile, str):
            raise LLMHDError(f"{path}: {what} {key!r} has no 'profile' string")
        texts[str(index)] = profile
    return texts, extras


def detect_rlmrec(source_dir: Path) -> bool:
    return (source_dir / RLMREC_SPLIT_FILES["train"]).exists()


def load_rlmrec(source_dir: Path | None, options: dict[str, Any]) -> RawData:
    if source_dir is None:
        raise LLMHDError("--source: the rlmrec format needs a folder with trn_mat.pkl, val_mat.pkl, tst_mat.pkl")
    matrices = {split: _load_matrix(source_dir / f) for split, f in RLMREC_SPLIT_FILES.items()}
    shape = matrices["train"].shape
    for split, matrix in matrices.items():
        if matrix.shape != shape:
            raise LLMHDError(
                f"{source_dir / RLMREC_SPLIT_FILES[split]}: shape {matrix.shape} differs from "
                f"{RLMREC_SPLIT_FILES['train']}'s {shape}; all three must be the same users x items matrix"
            )
    rows = np.concatenate([m.row for m in matrices.values()])
    cols = np.concatenate([m.col for m in matrices.values()])
    raw = RawData(
        users=rows.astype(str),
        items=cols.astype(str),
        split=np.repeat(np.array(list(matrices)), [m.nnz for m in matrices.values()]),
        all_items=np.arange(shape[1]).astype(str),
        n_users=shape[0],
        files=dict(RLMREC_SPLIT_FILES),
    )
    item_path, user_path = source_dir / "itm_prf.pkl", source_dir / "usr_prf.pkl"
    if item_path.exists():
        raw.item_texts, raw.item_attributes = _load_profiles(item_path, shape[1], "item")
    else:
        raw.notes.append(
            f"no item profiles ({item_path.name}): `llmhd summarize` and LLM scoring need item texts; "
            f"add {item_path.name} to {source_dir} and prepare again with --force"
        )
    if user_path.exists():
        raw.user_profiles, _ = _load_profiles(user_path, shape[0], "user")
    else:
        raw.notes.append(
            f"no user profiles ({user_path.name}): `llmhd summarize` will write them from item texts"
        )
    return raw


@hookimpl
def register_datasets(register):
    register(
        DatasetSource(
            name="ml-100k",
            description="MovieLens-100K from the RecBole wheel: ratings, titles, years, genres (offline)",
            load=load_ml100k,
            builtin=True,
            domain="movies",
        )
    )
    register(
        DatasetSource(
            name="rlmrec",
            description="RLMRec split: trn_mat.pkl, val_mat.pkl, tst_mat.pkl (+ itm_prf.pkl, usr_prf.pkl)",
            load=load_rlmrec,
            detect=detect_rlmrec,
        )
    )
    register(
        DatasetSource(
            name="atomic",
            description="RecBole atomic files: NAME.inter (user_id, item_id[, rating][, timestamp]) + NAME.item",
            load=load_atomic,
            detect=detect_atomic,
        )
    )
