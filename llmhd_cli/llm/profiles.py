"""User and item profiles stored with the dataset, one file per version.

A version is pinned by what produced it: kind (``user``/``item``), provider, model, template
name and template hash. Changing any of them writes a new file beside the old ones, so every
version is kept and a result can always name the profiles it used::

    <dataset>/profiles/
        user/<provider>--<model>--<set>-<task>--<hash>.jsonl   {"id": ..., "profile": ...} per line
        user/<...>.json                                        metadata: version, created, counts, source
        item/...

Text sources in order of preference for item profiles (`item_texts`): generated item
profiles of the given provider/model, else the dataset's ``items.jsonl`` texts.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmhd_cli.datasets import PreparedDataset

KINDS = ("user", "item")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-") or "-"


@dataclass(frozen=True)
class ProfileVersion:
    """What produced a set of profiles."""

    kind: str  # "user" or "item"
    provider: str
    model: str
    template: str  # e.g. "movies/summarize"
    template_hash: str

    @property
    def id(self) -> str:
        return "--".join(_safe(p) for p in (self.provider, self.model, self.template.replace("/", "-"), self.template_hash))


class ProfileStore:
    """The ``profiles/`` folder of one prepared dataset."""

    def __init__(self, dataset: PreparedDataset) -> None:
        self.dataset = dataset
        self.root = dataset.profiles_dir

    def path(self, version: ProfileVersion) -> Path:
        if version.kind not in KINDS:
            raise ValueError(f"profile kind must be one of {KINDS}, not {version.kind!r}")
        return self.root / version.kind / f"{version.id}.jsonl"

    def save(self, version: ProfileVersion, profiles: dict[str, str], meta: dict[str, Any] | None = None) -> Path:
        """Write (atomically) the profiles of one version, replacing an earlier file of the same version."""
        path = self.path(version)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"id": k, "profile": v}, ensure_ascii=False) + "\n" for k, v in sorted(profiles.items()))
        _write_atomic(path, lines)
        info = {"version": asdict(version), "id": version.id, "created": time.time(), "count": len(profiles),
                **(meta or {})}
        _write_atomic(path.with_suffix(".json"), json.dumps(info, indent=2, sort_keys=True) + "\n")
        return path

    def load(self, version: ProfileVersion) -> dict[str, str]:
        path = self.path(version)
        if not path.exists():
            return {}
        out: dict[str, str] = {}
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    out[str(row["id"])] = row["profile"]
        return out

    def versions(self, kind: str) -> list[tuple[ProfileVersion, dict[str, Any]]]:
        """Stored versions of ``kind``, newest first, with their metadata."""
        folder = self.root / kind
        found = []
        for meta_path in folder.glob("*.json") if folder.exists() else []:
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                version = ProfileVersion(**meta["version"])
            except (ValueError, KeyError, TypeError):
                continue
            if self.path(version).exists():
                found.append((version, meta))
        return sorted(found, key=lambda vm: vm[1].get("created", 0), reverse=True)

    def latest(self, kind: str, provider: str | None = None, model: str | None = None,
               task: str | None = None) -> ProfileVersion | None:
        """The newest version matching the given provider/model/task (None: any)."""
        for version, _ in self.versions(kind):
            if provider and version.provider != provider:
                continue
            if model and version.model != model:
                continue
            if task and not version.template.endswith(f"/{task}"):
                continue
            return version
        return None

    def user_profiles(self, provider: str | None = None, model: str | None = None) -> tuple[dict[str, str], str]:
        """(user -> profile, where from): the newest summarized version, else the dataset's shipped ones."""
        version = self.latest("user", provider, model)
        if version is not None:
            return self.load(version), str(self.path(version))
        return self.dataset.user_profiles(), str(self.dataset.user_profiles_file)

    def item_texts(self, provider: str | None = None, model: str | None = None) -> tuple[dict[str, str], str]:
        """(item -> profile text, where from): generated item profiles of provider/model, else items.jsonl.

        Items missing from a generated version (failed calls) keep their items.jsonl text.
        """
        raw = self.dataset.item_texts()
        version = self.latest("item", provider, model, task="item_profile") if provider else None
        if version is None:
            return raw, str(self.dataset.items_file)
        generated = self.load(version)
        return {**raw, **generated}, str(self.path(version))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
