"""``llmhd prepare``: a source's raw data -> one prepared dataset directory.

Rating/implicit data (ml-100k, atomic files)::

    dedupe pairs -> ratings.tsv (all of them) -> clean = rating >= min_rating -> K-core
    -> random per-user 3:1:1 split -> noise appended to train (noise.tsv is the ground truth)

Pre-split data (RLMRec) keeps its split as is and only gets noise. Everything is written into a
temporary folder next to the target and renamed into place, so a failure leaves nothing behind.
The directory layout is described in `llmhd_cli.datasets`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmhd_cli.config import DEFAULT_DATASET
from llmhd_cli.datasets import (
    KNOWN_DOMAINS,
    SPLITS,
    DatasetInfo,
    DatasetSource,
    PreparedDataset,
    RawData,
    open_dataset,
)
from llmhd_cli.errors import LLMHDError
from llmhd_cli.workspace import check_name, datasets_dir

log = logging.getLogger(__name__)

NOISE_SOURCES = ("low-rating", "random")
SPLIT_RATIOS = (3, 1, 1)  # train : valid : test, per user
DEFAULT_DOMAIN = "items"


@dataclass
class PrepareOptions:
    """Everything ``llmhd prepare`` can be told; the defaults are the paper's protocol."""

    name: str = DEFAULT_DATASET
    source_dir: Path | None = None
    format: str = "auto"
    domain: str | None = None
    text_fields: list[str] | None = None
    min_rating: float = 3.0
    kcore: int = 5
    seed: int = 2024
    noise_ratio: float = 0.05
    noise_source: str | None = None  # None: low-rating for unsplit rating data, random otherwise
    force: bool = False


@dataclass
class Splits:
    """The prepared interactions as string-token frames with columns user, item[, rating]."""

    train: pd.DataFrame  # clean training interactions, without the noise
    valid: pd.DataFrame
    test: pd.DataFrame
    noise: pd.DataFrame
    noise_source: str
    notes: list[str] = field(default_factory=list)

    @cached_property
    def clean(self) -> pd.DataFrame:
        """All clean interactions (the three splits, no noise)."""
        return pd.concat([self.train, self.valid, self.test], ignore_index=True)

    def frame(self, split: str) -> pd.DataFrame:
        """A split as written to disk: train carries the injected noise at its end."""
        if split == "train":
            return pd.concat([self.train, self.noise], ignore_index=True)
        return getattr(self, split)


# ----------------------------------------------------------------------------- public API


def prepare_dataset(workspace: Path, options: PrepareOptions) -> PreparedDataset:
    """Load, clean, split and add noise to a dataset, writing ``<workspace>/datasets/<name>/``."""
    _check_options(options)
    target = datasets_dir(workspace) / options.name
    if target.exists() and not options.force:
        raise LLMHDError(f"{target}: dataset '{options.name}' is already prepared; add --force to replace it")
    source = resolve_source(options)
    log.info("loading %s with source '%s'", options.name, source.name)
    raw = source.load(options.source_dir, {"name": options.name, "text_fields": options.text_fields})
    label = str(options.source_dir) if options.source_dir else f"built-in source '{source.name}'"
    _check_raw(raw, label)
    frame = _raw_frame(raw)
    splits = _build_splits(frame, raw, options, label)
    info = _dataset_info(options, source, raw, frame, splits)
    _write_atomically(target, lambda tmp: _write_dataset(tmp, info, raw, frame, splits), options.force)
    log.info("prepared %s in %s", options.name, target)
    return PreparedDataset(target, info)


def ensure_prepared(
    workspace: Path, name: str, notify: Callable[[str], None] | None = None
) -> PreparedDataset:
    """Open a prepared dataset; a missing built-in one (ml-100k) is prepared with defaults first.

    The message saying so is logged and, when given, passed to ``notify`` (the CLI prints it).
    Anything else that is missing raises `open_dataset`'s error with the command to run.
    """
    from llmhd_cli import plugins

    source = plugins.registry("dataset").items.get(name)
    if not PreparedDataset.is_prepared(datasets_dir(workspace) / name) and source is not None and source.builtin:
        dataset = prepare_dataset(workspace, PrepareOptions(name=name))
        message = (
            f"dataset '{name}' was not prepared; prepared it with default options in {dataset.path} "
            f"(run `llmhd prepare --dataset {name} --force ...` to change them)"
        )
        log.warning(message)
        if notify is not None:
            notify(message)
        return dataset
    return open_dataset(workspace, name)


def resolve_source(options: PrepareOptions) -> DatasetSource:
    """The registered source for the options: a built-in by name, or a file format (given or detected)."""
    from llmhd_cli import plugins

    sources = plugins.registry("dataset").items
    formats = {n: s for n, s in sources.items() if not s.builtin}
    if options.source_dir is None:
        if options.format != "auto" and options.format in formats:
            raise LLMHDError(f"--format {options.format}: needs --source DIR with the files to read")
        source = sources.get(options.name)
        if source is None or not source.builtin:
            builtins = ", ".join(sorted(n for n, s in sources.items() if s.builtin)) or "none"
            raise LLMHDError(
                f"--dataset {options.name}: not a built-in dataset (built-in: {builtins}); "
                f"give --source DIR with its files"
            )
        return source
    folder = options.source_dir
    if not folder.is_dir():
        raise LLMHDError(f"--source {folder}: folder not found")
    if options.format != "auto":
        if options.format not in formats:
            raise LLMHDError(
                f"--format {options.format}: unknown format (known: auto, {', '.join(sorted(formats))})"
            )
        return formats[options.format]
    for source in formats.values():
        if source.detect is not None and source.detect(folder):
            return source
    raise LLMHDError(
        f"--source {folder}: no known dataset format found (rlmrec needs trn_mat.pkl, val_mat.pkl, "
        f"tst_mat.pkl; atomic needs a RecBole .inter file); give --format"
    )


# --------------------------------------------------------------------------- validation


def _check_options(options: PrepareOptions) -> None:
    check_name(options.name)
    # NaN fails every comparison, so each bound is written to reject it too.
    if not (math.isfinite(options.noise_ratio) and 0 <= options.noise_ratio <= 1):
        raise LLMHDError(f"--noise-ratio {options.noise_ratio}: must be between 0 and 1")
    if not math.isfinite(options.min_rating):
        raise LLMHDError(f"--min-rating {options.min_rating}: must be a finite number")
    if not 0 <= options.seed < 2**32:  # numpy's seeding range
        raise LLMHDError(f"--seed {options.seed}: must be in [0, 2^32)")
    if options.noise_source is not None and options.noise_source not in NOISE_SOURCES:
        raise LLMHDError(f"--noise-source {options.noise_source}: must be one of {', '.join(NOISE_SOURCES)}")
    if options.kcore < 0:
        raise LLMHDError(f"--kcore {options.kcore}: must be >= 0 (0 or 1 turns K-core filtering off)")


def _check_raw(raw: RawData, label: str) -> None:
    """Catch a source plugin handing over inconsistent arrays before they turn into odd files."""
    n = len(raw.users)
    for what, values in (("items", raw.items), ("ratings", raw.ratings), ("timestamps", raw.timestamps), ("split", raw.split)):
        if values is not None and len(values) != n:
            raise LLMHDError(f"{label}: {len(values)} {what} for {n} interactions")
    if n == 0:
        raise LLMHDError(f"{label}: no interactions")
    tokens = pd.Series(np.concatenate([raw.users, raw.items]).astype(str))
    bad = tokens[tokens.str.contains(r"[\t\r\n]") | (tokens == "")]
    if len(bad):
        raise LLMHDError(f"{label}: id {bad.iloc[0]!r} is empty or has a tab/newline; ids must be plain tokens")
    if raw.split is not None:
        unknown = sorted(set(np.unique(raw.split)) - set(SPLITS))
        if unknown:
            raise LLMHDError(f"{label}: unknown split label {unknown[0]!r} (expected {', '.join(SPLITS)})")


def _raw_frame(raw: RawData) -> pd.DataFrame:
    """All distinct (user, item) pairs; for a repeated pair the latest record wins."""
    frame = pd.DataFrame({"user": raw.users.astype(str), "item": raw.items.astype(str)})
    if raw.ratings is not None:
        frame["rating"] = np.asarray(raw.ratings, dtype=float)
    if raw.split is not None:
        frame["split"] = raw.split
    if raw.timestamps is not None:
        frame["timestamp"] = np.asarray(raw.timestamps, dtype=float)
        frame = frame.sort_values("timestamp", kind="stable")
    if raw.split is not None:
        return frame  # duplicates across splits are an error, reported by _presplit
    return frame.drop_duplicates(["user", "item"], keep="last").reset_index(drop=True)


# ------------------------------------------------------------------------------ pipeline


def _build_splits(frame: pd.DataFrame, raw: RawData, options: PrepareOptions, label: str) -> Splits:
    rng = np.random.default_rng(options.seed)
    presplit = raw.split is not None
    has_ratings = raw.ratings is not None
    noise_source = options.noise_source or ("low-rating" if has_ratings and not presplit else "random")
    if noise_source == "low-rating" and options.noise_ratio > 0:
        if not has_ratings:
            where = raw.files.get("interactions", label)
            raise LLMHDError(
                f"--noise-source low-rating: {where} has no ratings; use --noise-source random"
            )
        if presplit:
            raise LLMHDError(
                f"--noise-source low-rating: {label} is pre-split, so no low-rated interactions are left "
                "out of it; use --noise-source random"
            )
    cols = ["user", "item"] + (["rating"] if has_ratings else [])
    notes: list[str] = []
    if presplit:
        train, valid, test = _presplit(frame, raw, label)
        low = frame.iloc[:0]
        notes.append("pre-split source: split kept as is (no rating filter, K-core or re-split)")
    else:
        if has_ratings:
            clean_mask = frame["rating"].to_numpy() >= options.min_rating
            clean, low = frame[clean_mask], frame[~clean_mask]
        else:
            clean, low = frame, frame.iloc[:0]
        clean = clean[_kcore_mask(clean, options.kcore)]
        if len(clean) == 0:
            raise LLMHDError(
                f"{label}: no interactions left after --min-rating {options.min_rating:g} and --kcore "
                f"{options.kcore} ({len(frame)} raw pairs); lower --kcore or --min-rating"
            )
        # Sort first so the split depends on the data and the seed, not on the file's row order.
        clean = clean.sort_values(["user", "item"], kind="stable").reset_index(drop=True)
        labels = _split_per_user(clean["user"].to_numpy(), rng)
        train, valid, test = (clean[labels == k] for k in range(3))
    n_noise = int(round(options.noise_ratio * len(train)))
    if noise_source == "low-rating":
        noise = _low_rating_noise(low, train, valid, test, n_noise, options, rng, label)
    else:
        noise = _random_noise(frame, train, valid, test, n_noise, options, rng, label)
    return Splits(
        train=train[cols].reset_index(drop=True),
        valid=valid[cols].reset_index(drop=True),
        test=test[cols].reset_index(drop=True),
        noise=noise,
        noise_source=noise_source,
        notes=notes,
    )


def _presplit(frame: pd.DataFrame, raw: RawData, label: str) -> tuple[pd.DataFrame, ...]:
    """The source's own splits; a pair in two splits would leak test data into training."""
    frame = frame.drop_duplicates(["user", "item", "split"])
    shared = frame[frame.duplicated(["user", "item"], keep=False)]
    if len(shared):
        user, item = shared["user"].iloc[0], shared["item"].iloc[0]
        where = sorted(shared[(shared["user"] == user) & (shared["item"] == item)]["split"], key=SPLITS.index)
        n_pairs = len(shared[["user", "item"]].drop_duplicates())
        raise LLMHDError(
            f"{label}: splits overlap: {n_pairs} (user, item) pair(s) in more than one split (e.g. user "
            f"{user}, item {item} in {' and '.join(raw.files.get(s, s) for s in where)}); "
            "train, valid and test must be disjoint"
        )
    return tuple(frame[frame["split"] == s] for s in SPLITS)


def _kcore_mask(frame: pd.DataFrame, k: int) -> np.ndarray:
    """Rows kept by iterative K-core: every user and item keeps >= k interactions."""
    keep = np.ones(len(frame), dtype=bool)
    if k <= 1 or len(frame) == 0:
        return keep
    users, _ = pd.factorize(frame["user"])
    items, _ = pd.factorize(frame["item"])
    while True:
        user_count = np.bincount(users[keep], minlength=users.max() + 1)
        item_count = np.bincount(items[keep], minlength=items.max() + 1)
        new_keep = keep & (user_count[users] >= k) & (item_count[items] >= k)
        if new_keep.sum() == keep.sum():
            return keep
        keep = new_keep


def _split_per_user(users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0/1/2 (train/valid/test) per row: a random 3:1:1 split within each user, >= 1 train each."""
    codes, _ = pd.factorize(users)
    order = rng.permutation(len(codes))
    order = order[np.argsort(codes[order], kind="stable")]  # shuffled within each user
    counts = np.bincount(codes)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sorted_codes = codes[order]
    rank = np.arange(len(codes)) - starts[sorted_codes]
    size = counts[sorted_codes]
    total = sum(SPLIT_RATIOS)
    n_valid = np.rint(size * SPLIT_RATIOS[1] / total).astype(int)
    n_test = np.rint(size * SPLIT_RATIOS[2] / total).astype(int)
    n_train = size - n_valid - n_test  # >= 1 for every size >= 1 with 3:1:1 rounding
    labels = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    out = np.empty(len(codes), dtype=np.int8)
    out[order] = labels
    return out


def _low_rating_noise(
    low: pd.DataFrame,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    n_noise: int,
    options: PrepareOptions,
    rng: np.random.Generator,
    label: str,
) -> pd.DataFrame:
    """Pairs the same (kept) users rated below the threshold, on items the clean data has."""
    columns = ["user", "item", "rating"]
    if n_noise == 0:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "rating" else str) for c in columns})
    users = pd.unique(train["user"])
    items = pd.unique(pd.concat([train["item"], valid["item"], test["item"]]))
    pool = low[low["user"].isin(users) & low["item"].isin(items)]
    if len(pool) < n_noise:
        raise LLMHDError(
            f"--noise-ratio {options.noise_ratio:g}: needs {n_noise} low-rated interactions (rating < "
            f"{options.min_rating:g}) of the kept users on kept items, but {label} has only {len(pool)}; "
            f"use --noise-ratio {len(pool) / len(train):.4f} or lower, or --noise-source random"
        )
    picked = pool.iloc[np.sort(rng.choice(len(pool), size=n_noise, replace=False))]
    return picked[columns].reset_index(drop=True)


def _random_noise(
    frame: pd.DataFrame,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    n_noise: int,
    options: PrepareOptions,
    rng: np.random.Generator,
    label: str,
) -> pd.DataFrame:
    """Uniform pairs of kept users and items that the source never observed (any rating, any split)."""
    empty = pd.DataFrame({"user": pd.Series(dtype=str), "item": pd.Series(dtype=str)})
    if n_noise == 0:
        return empty
    kept = pd.concat([train, valid, test])
    users = np.sort(pd.unique(kept["user"]))
    items = np.sort(pd.unique(kept["item"]))
    n_items = len(items)
    grid = len(users) * n_items
    # Observed pairs as cell numbers u * n_items + i of the kept users x kept items grid.
    u = pd.Index(users).get_indexer(frame["user"])
    i = pd.Index(items).get_indexer(frame["item"])
    inside = (u >= 0) & (i >= 0)
    observed = np.unique(u[inside].astype(np.int64) * n_items + i[inside])
    free = grid - len(observed)
    if n_noise > free:
        raise LLMHDError(
            f"--noise-ratio {options.noise_ratio:g}: needs {n_noise} unobserved (user, item) pairs but "
            f"{label} has only {free} among its kept users and items; use a lower --noise-ratio"
        )
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < n_noise:
        # Rejection sampling: draw enough candidates for the free fraction of the grid, drop seen ones.
        need = n_noise - len(chosen)
        draw = rng.integers(0, grid, size=int(need * grid / free * 1.2) + 16, dtype=np.int64)
        draw = draw[~np.isin(draw, observed) & ~np.isin(draw, chosen)]
        _, first = np.unique(draw, return_index=True)
        chosen = np.concatenate([chosen, draw[np.sort(first)][:need]])
    chosen.sort()
    return pd.DataFrame({"user": users[chosen // n_items], "item": items[chosen % n_items]})


# ------------------------------------------------------------------------------ metadata


def _stats(splits: Splits, frame: pd.DataFrame, options: PrepareOptions) -> dict[str, Any]:
    users, items = int(splits.clean["user"].nunique()), int(splits.clean["item"].nunique())
    interactions = len(splits.clean) + len(splits.noise)
    stats: dict[str, Any] = {
        "users": users,
        "items": items,
        "train": len(splits.train) + len(splits.noise),
        "train_clean": len(splits.train),
        "valid": len(splits.valid),
        "test": len(splits.test),
        "noise": len(splits.noise),
        "interactions": interactions,
        "sparsity": 1.0 - interactions / (users * items),
        "raw_interactions": len(frame),
    }
    if "rating" in frame.columns:
        stats["raw_low_rated"] = int((frame["rating"] < options.min_rating).sum())
    return stats


def _dataset_info(
    options: PrepareOptions, source: DatasetSource, raw: RawData, frame: pd.DataFrame, splits: Splits
) -> DatasetInfo:
    stats = _stats(splits, frame, options)
    notes = list(raw.notes) + splits.notes
    if len(frame) < len(raw.users) and raw.split is None:
        notes.append(f"{len(raw.users) - len(frame)} repeated (user, item) records dropped (latest kept)")
    item_ids = set(splits.clean["item"])
    with_text = len(item_ids & raw.item_texts.keys())
    if raw.item_texts and with_text < len(item_ids):
        notes.append(f"{len(item_ids) - with_text} of {len(item_ids)} items have no text")
    if len(splits.noise) and splits.noise_source == "random" and raw.ratings is not None:
        notes.append("noise drawn at random: ratings of injected pairs are unknown, so train has no rating column")
    recorded = asdict(options)
    recorded.pop("force")
    recorded["source_dir"] = str(options.source_dir.resolve()) if options.source_dir else None
    recorded["noise_source"] = splits.noise_source
    return DatasetInfo(
        name=options.name,
        domain=options.domain or KNOWN_DOMAINS.get(options.name) or source.domain or DEFAULT_DOMAIN,
        source=source.name,
        source_path=recorded["source_dir"],
        seed=options.seed,
        options=recorded,
        stats=stats,
        has_ratings=raw.ratings is not None,
        has_item_texts=with_text > 0,
        has_user_profiles=bool(raw.user_profiles),
        notes=notes,
    )


# ------------------------------------------------------------------------------- writing


def _write_dataset(folder: Path, info: DatasetInfo, raw: RawData, frame: pd.DataFrame, splits: Splits) -> None:
    dataset = PreparedDataset(folder, info)
    for split in SPLITS:
        dataset.write_split(split, splits.frame(split))
    dataset.write_noise(splits.noise)
    if raw.ratings is not None:
        dataset.write_ratings(frame)
    if info.has_item_texts:
        item_ids = sorted(set(splits.clean["item"]))
        dataset.write_items([
            {"item_id": i, "text": raw.item_texts[i], "attributes": raw.item_attributes.get(i, {})}
            for i in item_ids
            if i in raw.item_texts
        ])
    if raw.user_profiles:
        user_ids = sorted(set(splits.train["user"]))
        dataset.write_user_profiles(
            [{"user_id": u, "profile": raw.user_profiles[u]} for u in user_ids if u in raw.user_profiles])
    dataset.write_info()


def _write_atomically(target: Path, write: Callable[[Path], None], force: bool) -> None:
    """Build in a hidden temp folder beside ``target``, then rename it into place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset should not be
    except OSError as exc:
        raise LLMHDError(f"{target.parent}: cannot create the dataset folder ({exc.strerror})") from None
    try:
        write(tmp)
        if not target.exists():
            os.rename(tmp, target)
            return
        if not force:  # someone prepared it while we were working
            raise LLMHDError(f"{target}: dataset '{target.name}' is already prepared; add --force to replace it")
        # A directory cannot replace a non-empty one in one rename: move the old one aside first.
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise LLMHDError(f"{target}: cannot write the dataset ({exc.strerror or exc})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
