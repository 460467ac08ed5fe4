"""The one LLM counter type (`Usage`) and per-phase usage (`UsageMeter`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from llmhd_cli.llm.usage import COUNTERS, Usage, UsageMeter, phase_of, usage_sum


def test_usage_adds_and_subtracts_every_counter():
    a = Usage(calls=2, cache_hits=1, failures=1, input_tokens=100, output_tokens=10, cost=0.5, estimated_calls=1)
    b = Usage(calls=1, input_tokens=50, output_tokens=5, cost=0.25)
    assert a + b == Usage(3, 1, 1, 150, 15, 0.75, 1)
    assert (a + b) - b == a
    assert (a - a).empty and not a.empty
    assert a.tokens == 110
    assert usage_sum([a, b, b]) == Usage(4, 1, 1, 200, 20, 1.0, 1)


def test_usage_reads_serialized_counters_leniently():
    data = {"calls": 3, "cost": 0.1, "input_tokens": "12", "output_tokens": True, "cache_hits": float("nan"),
            "failures": None, "memo_hits": 99, "unscorable": 4}
    assert Usage.from_mapping(data) == Usage(calls=3, cost=0.1)  # strings, bools, NaN and None are 0
    assert Usage.from_mapping(None) == Usage()
    assert Usage.from_mapping(Usage(calls=2).as_dict()) == Usage(calls=2)
    assert list(Usage().as_dict()) == list(COUNTERS)


def test_subclasses_keep_their_fields_and_add_counters():
    @dataclass
    class Row(Usage):
        template: str = ""
        runs: int = 0

    row = Row(template="books/score", runs=1)
    row.add(Usage(calls=2, cost=0.1))
    row.add({"calls": 1, "runs": 5})  # a mapping's non-counters are not added
    assert (row.template, row.runs, row.calls, row.cost) == ("books/score", 1, 3, 0.1)
    assert type(row + row) is Usage and (row + row).calls == 6
    assert row.usage() == Usage(calls=3, cost=0.1)


def test_meter_gives_each_phase_its_usage_since_a_snapshot():
    meter = UsageMeter()
    meter.add("books/summarize", calls=5, input_tokens=500)
    before = meter.snapshot()
    meter.add("books/score", Usage(calls=2, cost=0.01))
    meter.add("books/summarize", cache_hits=3)
    assert meter.since(before) == {"books/score": Usage(calls=2, cost=0.01), "books/summarize": Usage(cache_hits=3)}
    assert meter.phase("books/summarize") == Usage(calls=5, cache_hits=3, input_tokens=500)
    assert meter.phase("books/update_fp").empty
    assert meter.total() == Usage(calls=7, cache_hits=3, input_tokens=500, cost=0.01)
    before["books/summarize"].calls = 99  # a snapshot is a copy
    assert meter.phase("books/summarize").calls == 5


def test_meter_counts_every_add_from_many_threads():
    meter = UsageMeter()

    def work():
        for _ in range(1000):
            meter.add("s/score", calls=1, input_tokens=3)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert meter.phase("s/score") == Usage(calls=4000, input_tokens=12000)


def test_meter_refuses_unknown_counters():
    import pytest

    with pytest.raises(KeyError, match="tokens_in"):
        UsageMeter().add("s/score", tokens_in=3)


def test_phase_names_follow_the_paper():
    assert [phase_of(t) for t in ("books/summarize", "movies/score", "x/update_fp", "update_fn", "a/item_profile",
                                  "a/custom")] == ["T_sum", "T_score", "T_fp", "T_fn", "T_item", "custom"]
