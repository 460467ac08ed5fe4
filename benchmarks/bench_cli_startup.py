"""Time ``llmhd --help`` and ``llmhd train --help`` against ``python -c pass``.

Each round starts a fresh interpreter for every case (what a user's shell does), in turn, so
machine drift hits all alike; the medians and the ratios to ``python -c pass`` are printed last.
``--before DIR`` adds the same two cases for another copy of the code: a folder holding
``llmhd_cli``, ``llmhd_plugins`` and ``llmhd_prompts`` (e.g. links into ``git archive`` output),
put first on ``sys.path`` so it wins over the installed (editable) package.

Run: ``.venv/bin/python benchmarks/bench_cli_startup.py [--rounds 7] [--before DIR]``. Not a
timed test (tests/test_cli_startup.py checks what gets imported).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

DRIVER = """
import sys
if {path!r}:
    sys.path.insert(0, {path!r})
from llmhd_cli.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
"""


def elapsed(code: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMHD_CONFIG": "/nonexistent/llmhd-config.toml"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", default="", help="folder with another copy of llmhd_cli / llmhd_plugins")
    args = parser.parse_args()
    cases = {"python -c pass": "pass"}
    for label, path in (("now", ""), ("before", args.before)):
        if label == "before" and not path:
            continue
        cases[f"{label}: llmhd --help"] = DRIVER.format(path=path, argv=["--help"])
        cases[f"{label}: llmhd train --help"] = DRIVER.format(path=path, argv=["train", "--help"])
    times: dict[str, list[float]] = {name: [] for name in cases}
    for code in cases.values():  # warm the file cache once
        elapsed(code)
    for _ in range(args.rounds):
        for name, code in cases.items():
            times[name].append(elapsed(code))
    base = statistics.median(times["python -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28s} median {median:6.3f} s  ratio {median / base:5.1f}")


if __name__ == "__main__":
    main()
