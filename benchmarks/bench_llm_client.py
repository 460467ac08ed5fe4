"""Benchmark the LLM client: parallel speed-up and cached lookup rate.

Against a local OpenAI-compatible endpoint (threaded http.server) that answers every call
after a fixed 200 ms, through the real openai provider:

- calls/second at concurrency 16 divided by calls/second at concurrency 1 (target >= 10);
- cached lookups/second: the same requests again, all served from the diskcache store
  (target >= 10,000).

Run: ``.venv/bin/python benchmarks/bench_llm_client.py [--calls 64]``. Not a timed test.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llm_servers import delayed_openai_server  # noqa: E402

from llmhd_cli.llm.base import LLMRequest  # noqa: E402
from llmhd_cli.llm.client import LLMClient  # noqa: E402
from llmhd_cli.llm.pricing import PriceTable  # noqa: E402
from llmhd_plugins.providers_openai import OpenAIProvider  # noqa: E402

log = logging.getLogger("bench_llm_client")
DELAY = 0.2


def requests(n: int, tag: str) -> list[LLMRequest]:
    return [LLMRequest("score", "bench/score", "h", "You are a book editor.", f"{tag}: rate item {i}",
                       params={"max_tokens": 5}, parse=lambda t: int(t[3:-4])) for i in range(n)]


PRICES = PriceTable.from_dict({"openai": {"bench": {"input": 0.0, "output": 0.0}}})


def calls_per_second(url: str, cache: Path, concurrency: int, n: int) -> float:
    provider = OpenAIProvider(model="bench", base_url=url, api_key="k")
    with LLMClient(provider, cache, concurrency=concurrency, prices=PRICES) as client:
        client.run(requests(2, f"warm-{concurrency}"))  # connections and imports out of the timing
        t0 = time.perf_counter()
        results = client.run(requests(n, f"c{concurrency}"))
        took = time.perf_counter() - t0
    assert all(r.ok and not r.cached for r in results)
    return n / took


def lookups_per_second(url: str, cache: Path, n: int) -> float:
    provider = OpenAIProvider(model="bench", base_url=url, api_key="k")
    with LLMClient(provider, cache, concurrency=16, prices=PRICES) as client:
        batch = requests(n, "lookup")
        client.run(batch)  # pay once
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            results = client.run(batch)
            best = max(best, n / (time.perf_counter() - t0))
        assert all(r.cached for r in results)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=64, help="calls per concurrency level")
    parser.add_argument("--lookups", type=int, default=5000, help="cached requests per lookup round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        with delayed_openai_server(DELAY) as server:
            url = server.url + "/v1"
            serial = calls_per_second(url, Path(tmp) / "c1", 1, max(8, args.calls // 8))
            parallel = calls_per_second(url, Path(tmp) / "c16", 16, args.calls)
        log.info("concurrency 1: %.2f calls/s (server delay %.0f ms)", serial, DELAY * 1000)
        log.info("concurrency 16: %.2f calls/s", parallel)
        with delayed_openai_server(0.0) as server:  # filling the cache need not wait 200 ms a call
            lookups = lookups_per_second(server.url + "/v1", Path(tmp) / "lookup", args.lookups)
    log.info("speed-up at concurrency 16: %.1fx (target >= 10)", parallel / serial)
    log.info("cached lookups: %.0f per second (target >= 10000)", lookups)


if __name__ == "__main__":
    main()
