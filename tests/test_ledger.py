"""The spending records (`llmhd_cli.llm.ledger`): ledger rows, summarize's rows, training logs,
all counted as `Usage` and readable in the formats earlier versions wrote."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cli_helpers import write_text_dataset

from llmhd_cli.datasets import open_dataset
from llmhd_cli.llm.ledger import (
    LEDGER_FILE,
    SPENT_FILE,
    TRAIN_TEMPLATE,
    Ledger,
    SpentRow,
    dataset_spending,
    ledger_spending,
    logged_llm_use,
    read_ledger,
    record_spending,
    spent_total,
)
from llmhd_cli.llm.usage import Usage
from llmhd_cli.summarize import TemplateStats


def test_ledger_adds_usage_and_counters_and_reads_rows_as_usage(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.add("books/score", "openai", "gpt-4o-mini", Usage(calls=2, input_tokens=300, cost=0.01), estimated_calls=1)
    ledger.add("books/score", "openai", "gpt-4o-mini", cache_hits=4)
    ledger.close()
    [row] = read_ledger(tmp_path)
    assert row.usage() == Usage(calls=2, cache_hits=4, input_tokens=300, cost=0.01, estimated_calls=1)
    assert (row.template, row.provider, row.model) == ("books/score", "openai", "gpt-4o-mini")
    assert 0 < row.first_used <= row.last_used
    [spent] = ledger_spending(tmp_path)
    assert spent.usage() == row.usage() and spent.runs == 0


def test_a_ledger_written_before_reads_the_same(tmp_path: Path) -> None:
    """A ledger.sqlite of the schema every version wrote, filled by hand (text where a number
    belongs reads as 0)."""
    conn = sqlite3.connect(tmp_path / LEDGER_FILE)
    Ledger(tmp_path).close()  # creates the table as always
    conn.execute("INSERT INTO ledger VALUES ('books/summarize', 'anthropic', 'claude-haiku-4-5', 5, 1, 0, 900, "
                 "'oops', 0.02, 0, 1.0, 2.0)")
    conn.commit()
    conn.close()
    [row] = read_ledger(tmp_path)
    assert row.usage() == Usage(calls=5, cache_hits=1, input_tokens=900, cost=0.02)


def test_spent_rows_keep_their_column_order_and_add_up() -> None:
    a = SpentRow("books/summarize", "openai", "gpt-4o-mini", 3, 1, 0, 300, 30, 0.5, 2)
    b = SpentRow("train: score, update_fp, update_fn", "openai", "gpt-4o-mini", 10, 0, 1, 1000, 20, 1.0, 1)
    assert (a.calls, a.cache_hits, a.failures, a.input_tokens, a.output_tokens, a.cost, a.runs) == (3, 1, 0, 300, 30,
                                                                                                  0.5, 2)
    total = spent_total([a, b])
    assert (total.template, total.runs) == ("total", 3)
    assert total.usage() == Usage(calls=13, cache_hits=1, failures=1, input_tokens=1300, output_tokens=50, cost=1.5)


def test_dataset_spending_reads_summarize_rows_and_training_logs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write_text_dataset(ws, "tiny", {"u1": ["b1"]}, {"u1": ["b2"]}, {"b1": "one", "b2": "two"}, "books")
    dataset = open_dataset(ws, "tiny")
    record_spending(dataset, [TemplateStats(template="books/summarize", provider="openai", model="gpt-4o-mini",
                                            requests=3, calls=3, input_tokens=300, cost=0.1)])
    line = json.loads((dataset.path / SPENT_FILE).read_text().splitlines()[0])
    assert {"template", "provider", "model", "calls", "cache_hits", "failures", "input_tokens", "output_tokens",
            "cost", "time"} <= set(line)
    with (dataset.path / SPENT_FILE).open("a") as f:  # a line of an older version, fewer counters
        f.write(json.dumps({"time": 1.0, "template": "books/summarize", "provider": "openai", "model": "gpt-4o-mini",
                            "calls": 2, "cost": 0.05}) + "\n")
    run = ws / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.toml").write_text('dataset = "tiny"\n[denoiser_params]\nprovider = "openai"\nmodel = "gpt-4o-mini"\n')
    records = [{"epoch": 0, "denoiser": {"llm": {"calls": 4, "memo_hits": 7, "input_tokens": 400, "cost": 0.2}}},
               {"epoch": 1, "denoiser": {"llm": {"calls": "bad", "cache_hits": 2}}}, {"epoch": 2}]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + '\n{"epoch": 3, "denoi')
    assert logged_llm_use(run / "log.jsonl") == Usage(calls=4, cache_hits=2, input_tokens=400, cost=0.2)
    rows = {r.template: r for r in dataset_spending(dataset)}
    assert (rows["books/summarize"].calls, rows["books/summarize"].runs) == (5, 2)
    assert rows["books/summarize"].cost == 0.1 + 0.05
    assert (rows[TRAIN_TEMPLATE].calls, rows[TRAIN_TEMPLATE].cache_hits, rows[TRAIN_TEMPLATE].runs) == (4, 2, 1)
