"""Dataset contract: raw data from a source, and the prepared dataset directory.

A *source* (registered through ``register_datasets``) turns files or a built-in resource into
`RawData`. ``llmhd prepare`` (see `llmhd_cli.prepare`) cleans, filters, splits and injects
noise, then writes one directory per dataset through `PreparedDataset`, the one type that
names, writes and reads every file of it (as `llmhd_cli.runs` does for run folders)::

    <workspace>/datasets/<name>/
        dataset.json            DatasetInfo (name, domain, source, seed, options, stats)
        <name>.train.inter      RecBole benchmark files (user_id:token, item_id:token[, rating:float]);
        <name>.valid.inter      train includes the injected noise
        <name>.test.inter
        noise.tsv               injected noise ground truth: user_id, item_id[, rating]
        items.jsonl             {"item_id": str, "text": str, "attributes": {...}} per item (may be absent)
        ratings.tsv             every rated pair the source had, low ratings included (rating data only)
        user_profiles.jsonl     {"user_id": str, "profile": str} shipped by the source (may be absent)
        profiles/               summarized profiles (`llmhd_cli.llm.profiles`, written by summarize)
        llm_spent.jsonl         what summarize spent, one line per template (`llmhd_cli.llm.ledger`)

Ids are the source's own tokens, kept as strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhd_cli.errors import LLMHDError

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "valid", "test")

# The files of a prepared dataset directory (split files are named by `PreparedDataset.split_file`).
META = "dataset.json"
NOISE = "noise.tsv"
RATINGS = "ratings.tsv"
ITEMS = "items.jsonl"
USER_PROFILES = "user_profiles.jsonl"
PROFILES = "profiles"
SPENT = "llm_spent.jsonl"  # what summarize spent on the dataset (llmhd_cli.llm.ledger writes it)
RECBOLE_DIR = ".recbole"  # RecBole's checkpoint_dir for this dataset (llmhd lets it read nothing there)
# RecBole atomic-file headers: the split files, noise.tsv and ratings.tsv
TOKEN_HEADER = ["user_id:token", "item_id:token"]
RATING_HEADER = "rating:float"

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
    """A prepared dataset directory: names every file, writes it (``llmhd prepare``) and reads it
    back (every other command). ``info`` is ``dataset.json``; the data files are read lazily.

    Frames handed to the ``write_*`` methods have string columns ``user`` and ``item`` and
    optionally a float ``rating``.
    """

    path: Path
    info: DatasetInfo

    @property
    def name(self) -> str:
        return self.info.name

    # ---------------------------------------------------------------------- file names

    def split_file(self, split: str) -> Path:
        return self.path / f"{self.info.name}.{split}.inter"

    @property
    def meta_file(self) -> Path:
        return self.path / META

    @property
    def noise_file(self) -> Path:
        return self.path / NOISE

    @property
    def ratings_file(self) -> Path:
        return self.path / RATINGS

    @property
    def items_file(self) -> Path:
        return self.path / ITEMS

    @property
    def user_profiles_file(self) -> Path:
        return self.path / USER_PROFILES

    @property
    def profiles_dir(self) -> Path:
        return self.path / PROFILES

    @property
    def spent_file(self) -> Path:
        return self.path / SPENT

    @property
    def recbole_dir(self) -> Path:
        return self.path / RECBOLE_DIR

    # -------------------------------------------------------------------------- reading

    @staticmethod
    def is_prepared(path: Path) -> bool:
        """Whether ``path`` holds a prepared dataset (its ``dataset.json``)."""
        return (Path(path) / META).exists()

    @classmethod
    def read(cls, path: Path) -> PreparedDataset:
        """The dataset in ``path``; a missing or damaged ``dataset.json`` is an `LLMHDError`."""
        from llmhd_cli.workspace import check_name

        path = Path(path)
        meta = path / META
        if not meta.exists():
            raise LLMHDError(f"{path}: not a prepared dataset (no {META}); run llmhd prepare")
        try:
            info = DatasetInfo.from_json(meta.read_text(encoding="utf-8"))
        except (ValueError, TypeError) as exc:
            raise LLMHDError(f"{meta}: unreadable dataset metadata ({exc}); prepare the dataset again") from exc
        check_name(info.name, f"{meta}: name")  # file names are built from it too (<name>.train.inter)
        return cls(path, info)

    def fingerprint(self) -> str:
        """A short hash of what the dataset holds (dataset.json and the training split).

        Local scorers (embed, oracle) answer from the dataset's files, so their cached answers
        are keyed by it: re-preparing a dataset under the same name never serves stale answers.
        """
        digest = hashlib.sha256()
        for path in (self.meta_file, self.split_file("train")):
            digest.update(path.read_bytes() if path.exists() else b"")
        return digest.hexdigest()[:16]

    def read_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) string arrays of one split."""
        users, items, _ = _read_inter(self.split_file(split))
        return users, items

    def read_noise(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the injected noise; empty when none was injected."""
        if not self.noise_file.exists():
            return np.array([], dtype=str), np.array([], dtype=str)
        users, items, _ = _read_inter(self.noise_file)
        return users, items

    def read_items(self) -> list[dict[str, Any]]:
        """The rows of ``items.jsonl`` (``item_id``, ``text``, ``attributes``); [] without item texts."""
        return _read_jsonl(self.items_file)

    def item_texts(self) -> dict[str, str]:
        """item id -> text, from ``items.jsonl``."""
        return {row["item_id"]: row["text"] for row in self.read_items()}

    def user_profiles(self) -> dict[str, str]:
        """user id -> profile the source shipped (``user_profiles.jsonl``); {} when it shipped none."""
        return {str(row["user_id"]): row["profile"] for row in _read_jsonl(self.user_profiles_file)}

    # -------------------------------------------------------------------------- writing

    def write_split(self, split: str, frame: pd.DataFrame) -> None:
        """A split as a RecBole benchmark file (train: the clean pairs, then the injected noise)."""
        _write_inter(frame, self.split_file(split))

    def write_noise(self, frame: pd.DataFrame) -> None:
        _write_inter(frame, self.noise_file)

    def write_ratings(self, frame: pd.DataFrame) -> None:
        """Every rated pair of the source, sorted by user and item."""
        frame = frame.sort_values(["user", "item"])
        frame[["user", "item", "rating"]].to_csv(self.ratings_file, sep="\t", index=False,
                                                 header=[*TOKEN_HEADER, RATING_HEADER], float_format="%g")

    def write_items(self, rows: list[dict[str, Any]]) -> None:
        _write_jsonl(rows, self.items_file)

    def write_user_profiles(self, rows: list[dict[str, Any]]) -> None:
        _write_jsonl(rows, self.user_profiles_file)

    def write_info(self) -> None:
        """``dataset.json`` (written last by prepare: a folder without it is not a dataset)."""
        self.meta_file.write_text(self.info.to_json() + "\n", encoding="utf-8")

    def rename(self, name: str) -> PreparedDataset:
        """The same folder's dataset under another ``name``: split files renamed, dataset.json
        rewritten (the folder itself stays where it is)."""
        info = dataclasses.replace(self.info, name=name, options={**self.info.options, "name": name})
        renamed = PreparedDataset(self.path, info)
        for split in SPLITS:
            self.split_file(split).rename(renamed.split_file(split))
        renamed.write_info()
        return renamed


def _read_inter(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a tab-separated file whose first two columns are user and item tokens."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    cols = list(frame.columns)
    ratings = frame[cols[2]].astype(float).to_numpy() if len(cols) > 2 and cols[2].startswith("rating") else None
    return frame[cols[0]].to_numpy(dtype=str), frame[cols[1]].to_numpy(dtype=str), ratings


def _write_inter(frame: pd.DataFrame, path: Path) -> None:
    """RecBole atomic/benchmark format; a rating column only when every row has a known rating."""
    columns, header = ["user", "item"], list(TOKEN_HEADER)
    if "rating" in frame.columns and frame["rating"].notna().all():
        columns.append("rating")
        header.append(RATING_HEADER)
    frame[columns].to_csv(path, sep="\t", index=False, header=header, float_format="%g")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def open_dataset(workspace: Path, name: str) -> PreparedDataset:
    """Open a prepared dataset, or fail with the prepare command to run."""
    from llmhd_cli.workspace import check_name, datasets_dir

    path = datasets_dir(workspace) / check_name(name)  # before any path is built from it
    if not PreparedDataset.is_prepared(path):
        raise LLMHDError(
            f"dataset '{name}' is not prepared in {datasets_dir(workspace)}; "
            f"run: llmhd prepare --dataset {name}" + ("" if name in KNOWN_DOMAINS and name == "ml-100k" else " --source DIR")
        )
    return PreparedDataset.read(path)
