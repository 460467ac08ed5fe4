"""Dataset contract: raw data from a source, and the prepared dataset directory.

A *source* (registered through ``register_datasets``) turns files or a built-in resource into
`RawData`. ``llmhd prepare`` (see `llmhd_cli.prepare`) cleans, filters, splits and injects
noise, then writes one directory per dataset::

    <workspace>/datasets/<name>/
        dataset.json            DatasetInfo (name, domain, source, seed, options, stats)
        <name>.train.inter      RecBole benchmark files (user_id:token, item_id:token[, rating:float]);
        <name>.valid.inter      train includes the injected noise
        <name>.test.inter
        noise.tsv               injected noise ground truth: user_id, item_id[, rating]
        items.jsonl             {"item_id": str, "text": str, "attributes": {...}} per item (may be absent)
        ratings.tsv             every rated pair the source had, low ratings included (rating data only)
        user_profiles.jsonl     {"user_id": str, "profile": str} shipped by the source (may be absent)

Ids are the source's own tokens, kept as strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmhd_cli.errors import LLMHDError

SPLITS = ("train", "valid", "test")

# Text domain of well-known datasets; picks the prompt templates in the LLM layer.
KNOWN_DOMAINS = {
    "amazon-books": "books",
    "amazon-book": "books",
    "yelp": "businesses",
    "steam": "games",
    "ml-100k": "movies",
}


@dataclass
class RawData:
    """Interactions and texts as a source provides them, before any cleaning.

    ``users``/``items`` are string token arrays of equal length. ``ratings`` is None for
    implicit data. ``split`` (an array of "train"/"valid"/"test") is set when the source
    comes pre-split (RLMRec), in which case no filtering or re-splitting happens.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    split: np.ndarray | None = None
    item_texts: dict[str, str] = field(default_factory=dict)
    item_attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    user_profiles: dict[str, str] = field(default_factory=dict)
    all_items: np.ndarray | None = None  # item universe when it is larger than the interactions show
    n_users: int | None = None
    notes: list[str] = field(default_factory=list)
    # Where the data came from, for error messages: "interactions" -> file, or one per pre-split split.
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class DatasetSource:
    """A way to obtain `RawData`.

    ``builtin`` sources need no ``--source`` directory (the dataset name selects them);
    file-format sources implement ``detect(dir)`` so ``--format auto`` can pick them.
    ``load(source_dir, options)`` gets the prepare options as a dict (e.g. ``text_fields``).
    """

    name: str
    description: str
    load: Callable[[Path | None, dict[str, Any]], RawData]
    builtin: bool = False
    domain: str | None = None
    detect: Callable[[Path], bool] | None = None


@dataclass
class DatasetInfo:
    """Contents of ``dataset.json``."""

    name: str
    domain: str
    source: str
    source_path: str | None
    seed: int
    options: dict[str, Any]
    stats: dict[str, Any]
    has_ratings: bool
    has_item_texts: bool
    has_user_profiles: bool
    notes: list[str] = field(default_factory=list)
    version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetInfo:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PreparedDataset:
    """A prepared dataset directory, read lazily."""

    path: Path
    info: DatasetInfo

    @property
    def name(self) -> str:
        return self.info.name

    def split_file(self, split: str) -> Path:
        return self.path / f"{self.info.name}.{split}.inter"

    def fingerprint(self) -> str:
        """A short hash of what the dataset holds (dataset.json and the training split).

        Local scorers (embed, oracle) answer from the dataset's files, so their cached answers
        are keyed by it: re-preparing a dataset under the same name never serves stale answers.
        """
        digest = hashlib.sha256()
        for path in (self.path / "dataset.json", self.split_file("train")):
            digest.update(path.read_bytes() if path.exists() else b"")
        return digest.hexdigest()[:16]

    def read_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) string arrays of one split."""
        users, items, _ = _read_inter(self.split_file(split))
        return users, items

    def read_noise(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.path / "noise.tsv"
        if not path.exists():
            return np.array([], dtype=str), np.array([], dtype=str)
        users, items, _ = _read_inter(path)
        return users, items

    def item_texts(self) -> dict[str, str]:
        path = self.path / "items.jsonl"
        if not path.exists():
            return {}
        texts = {}
        with path.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts[row["item_id"]] = row["text"]
        return texts


def _read_inter(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a tab-separated file whose first two columns are user and item tokens."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    cols = list(frame.columns)
    ratings = frame[cols[2]].astype(float).to_numpy() if len(cols) > 2 and cols[2].startswith("rating") else None
    return frame[cols[0]].to_numpy(dtype=str), frame[cols[1]].to_numpy(dtype=str), ratings


def open_dataset(workspace: Path, name: str) -> PreparedDataset:
    """Open a prepared dataset, or fail with the prepare command to run."""
    from llmhd_cli.workspace import check_name, datasets_dir

    path = datasets_dir(workspace) / check_name(name)  # before any path is built from it
    meta = path / "dataset.json"
    if not meta.exists():
        raise LLMHDError(
            f"dataset '{name}' is not prepared in {datasets_dir(workspace)}; "
            f"run: llmhd prepare --dataset {name}" + ("" if name in KNOWN_DOMAINS and name == "ml-100k" else " --source DIR")
        )
    try:
        info = DatasetInfo.from_json(meta.read_text(encoding="utf-8"))
    except (ValueError, TypeError) as exc:
        raise LLMHDError(f"{meta}: unreadable dataset metadata ({exc}); prepare the dataset again") from exc
    check_name(info.name, f"{meta}: name")  # file names are built from it too (<name>.train.inter)
    return PreparedDataset(path, info)
