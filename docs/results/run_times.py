"""Time per run of an experiment, from its run folders (start: environment.json, end: metrics.json).

    python docs/results/run_times.py <workspace>/experiments/ml100k-table1 [--seed 2024]

Prints each run's wall time, the mean per (backbone, objective, denoiser), and the sum.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import tomllib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path, help="<workspace>/experiments/<name>")
    parser.add_argument("--seed", type=int, default=None, help="only the runs of this seed")
    args = parser.parse_args()
    groups: dict[str, list[float]] = defaultdict(list)
    spans: list[tuple[datetime, datetime]] = []
    for run in sorted((args.experiment / "runs").iterdir()):
        metrics, env = run / "metrics.json", run / "environment.json"
        if not metrics.is_file() or not env.is_file():
            continue
        config = tomllib.loads((run / "config.toml").read_text())
        if args.seed is not None and config.get("seed") != args.seed:
            continue
        start = datetime.fromisoformat(json.loads(env.read_text())["started"])
        end = datetime.fromtimestamp(metrics.stat().st_mtime, tz=start.tzinfo)
        spans.append((start, end))
        params = config.get("denoiser_params", {})
        judge = params.get("provider", "")
        if params.get("judge_accuracy", 1.0) != 1.0:
            judge += f"@{params['judge_accuracy']}"
        key = f"{config['backbone']}/{config['objective']}/{config['denoiser']}" + (f" ({judge})" if judge else "")
        groups[key].append((end - start).total_seconds())
    if not spans:
        raise SystemExit(f"no finished runs under {args.experiment / 'runs'}")
    print(f"{'runs':>4} {'mean s':>7}  setting")
    for key, seconds in sorted(groups.items()):
        print(f"{len(seconds):>4} {statistics.mean(seconds):>7.0f}  {key}")
    total = sum(s for v in groups.values() for s in v)
    wall = (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds()
    print(f"{len(spans)} runs: {total / 60:.1f} min of run time in all, "
          f"{wall / 60:.1f} min from the first start to the last end")


if __name__ == "__main__":
    main()
