"""Markdown tables of the runs that benchmarks/gpu_check.sh made.

usage: gpu_check_table.py RUNS_DIR STATUS_FILE
STATUS_FILE has one line per run: NAME EXIT_CODE WALL_SECONDS.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    runs, status_file = Path(sys.argv[1]), Path(sys.argv[2])
    status = []
    if status_file.exists():
        for line in status_file.read_text().splitlines():
            name, rc, wall = line.split()
            status.append((name, int(rc), int(wall)))
    env = {}
    rows, epoch1 = [], {}
    for name, rc, wall in status:
        run = runs / name
        metrics = read_json(run / "metrics.json")
        env = env or read_json(run / "environment.json")
        log = []
        if (run / "log.jsonl").exists():
            log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
        secs = [r["seconds"] for r in log]
        test = metrics.get("test", {})
        extra = ""
        last = log[-1].get("denoiser", {}) if log else {}
        if "candidates" in last:
            extra = (f"last epoch: {last.get('candidates', 0)} candidates, {last.get('hard_candidates', 0)} hard cand., "
                     f"{last.get('hard', 0)} hard, {last.get('scored_pairs', 0)} scored pairs")
            if "profiles_updated_fp" in last:
                extra += f", PU fp/fn updated {last['profiles_updated_fp']}/{last['profiles_updated_fn']}"
        elif log:
            extra = f"dropped {log[-1].get('dropped', 0)} in last epoch"
        status_txt = "ok" if rc == 0 else ("TIMEOUT" if rc in (124, 137) else f"FAILED rc {rc}")
        rows.append(f"| {name} | {status_txt} | {wall} | "
                    + " / ".join(f"{s:.2f}" for s in secs)
                    + f" | {metrics.get('seconds_per_epoch', float('nan')):.2f} | "
                    + f"{test.get('recall@10', float('nan')):.4f} | {test.get('ndcg@10', float('nan')):.4f} | {extra} |")
        if rc == 0 and len(secs) >= 2:
            epoch1[name] = secs[1]
    print("# llmhd GPU check\n")
    if env:
        print(f"environment of the runs: python {env.get('python')}, torch {env.get('torch')}, "
              f"recbole {env.get('recbole')}, platform {env.get('platform')}\n")
    print("| run | status | wall s (process) | seconds per epoch (epoch 0 / 1 / ...) | mean s/epoch | test recall@10 | test ndcg@10 | denoiser |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(row)
    pairs = []
    for name, gpu_s in epoch1.items():
        if name.endswith("-none-cuda"):
            cpu_name = name[: -len("cuda")] + "cpu"
            pairs.append((name[: -len("-none-cuda")], gpu_s, epoch1.get(cpu_name)))
    if pairs:
        print("\nSteady-state epoch (epoch 1, training only; epoch 0 includes CUDA warm-up), denoiser none:\n")
        print("| dataset-backbone-objective | cuda s | cpu s | cpu / cuda |")
        print("| --- | --- | --- | --- |")
        for key, gpu_s, cpu_s in pairs:
            cpu = f"{cpu_s:.2f}" if cpu_s is not None else "not run"
            ratio = f"{cpu_s / gpu_s:.1f}x" if cpu_s is not None and gpu_s > 0 else "-"
            print(f"| {key} | {gpu_s:.2f} | {cpu} | {ratio} |")


if __name__ == "__main__":
    main()
