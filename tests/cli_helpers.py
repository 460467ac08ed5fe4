"""Running the CLI in-process the way a user would, and checking its user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhd_cli.cli import main


def call_main(workspace: Path | None, *args: str) -> int:
    """``llmhd [--workspace W] ARGS`` in this process; returns the exit code."""
    try:
        main((["--workspace", str(workspace)] if workspace else []) + list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def run_cli(capsys: pytest.CaptureFixture, workspace: Path | None, *args: str) -> tuple[int, str, str]:
    """Like `call_main`, also returning what it printed: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = call_main(workspace, *args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, out: str, err: str, *words: str) -> None:
    """Exit code 2 and exactly one line on stderr naming ``words``; no traceback."""
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in out + err


def write_ml100k_cut(folder: Path, name: str, n_users: int, with_items: bool = False) -> Path:
    """Atomic files of RecBole's bundled ml-100k restricted to its first ``n_users`` users,
    as ``<folder>/<name>.inter`` (and ``.item`` with titles, years and genres): a small real
    dataset with ratings for end-to-end tests."""
    import shutil

    import numpy as np
    import pandas as pd
    import recbole

    bundled = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    frame = pd.read_csv(bundled / "ml-100k.inter", sep="\t")
    users = np.sort(frame["user_id:token"].unique())[:n_users]
    folder.mkdir(parents=True, exist_ok=True)
    frame[frame["user_id:token"].isin(users)].to_csv(folder / f"{name}.inter", sep="\t", index=False)
    if with_items:
        shutil.copy(bundled / "ml-100k.item", folder / f"{name}.item")
    return folder


def table_row(out: str, first: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``first`` (its first line)."""
    import re

    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{out}")


def write_text_dataset(workspace: Path, name: str, train: dict[str, list[str]], test: dict[str, list[str]],
                       texts: dict[str, str] | None, domain: str = "books",
                       ratings: dict[tuple[str, str], float] | None = None, attributes: bool = False) -> Path:
    """A prepared dataset written by hand (no prepare step): splits from {user: [items]}, item
    texts (None: none), optional ratings.tsv, and its dataset.json. Returns its folder."""
    import json

    from llmhd_cli.datasets import DatasetInfo

    folder = workspace / "datasets" / name
    folder.mkdir(parents=True)
    for split, table in (("train", train), ("valid", {}), ("test", test)):
        lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, its in table.items() for i in its]
        (folder / f"{name}.{split}.inter").write_text("\n".join(lines) + "\n")
    if ratings is not None:
        (folder / "ratings.tsv").write_text("user_id:token\titem_id:token\trating:float\n"
                                            + "".join(f"{u}\t{i}\t{r}\n" for (u, i), r in ratings.items()))
    if texts is not None:
        rows = [{"item_id": i, "text": t, **({"attributes": {"raw": t}} if attributes else {})} for i, t in texts.items()]
        (folder / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    info = DatasetInfo(name=name, domain=domain, source="test", source_path=None, seed=1, options={}, stats={},
                       has_ratings=ratings is not None, has_item_texts=texts is not None, has_user_profiles=False)
    (folder / "dataset.json").write_text(info.to_json())
    return folder
