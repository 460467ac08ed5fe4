"""Measure LLMHD's hard-sample rules with a perfect judge of the training data (docs/llmhd.md).

On ml-100k with 5% injected low-rating noise, LightGCN, for BPR and BCE and several seeds:

- ``none``: the plain objective;
- ``ld``: loss-based denoising only (``--variant ld``);
- ``paper`` / ``literal`` / ``agreement``: LD + VS + LMS (``--variant ld-vs-lms``) with the
  ``oracle`` provider (it knows the ratings of the training pairs only: clean positives by
  their rating, injected noise by its low rating, every unobserved pair as unobserved) and
  each ``--hard-rule``;

optionally at a lower simulated judge accuracy (``--judge-accuracy``). Every run's test
metrics are a fresh evaluation of its saved checkpoint (``llmhd evaluate --recompute``), and
the table is ``llmhd evaluate --group`` over the seeds with the paired per-user test against
``none``. PU is left out: the oracle has no text to rewrite a profile with.

Run: ``.venv/bin/python benchmarks/measure_hard_rules.py --workspace /tmp/hard-rules
[--seeds 1 2 3] [--epochs 40] [--workers 2]``. A finished run (its metrics.json exists) is
not run again, so an interrupted measurement resumes. Not a timed test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LLMHD = [sys.executable, "-m", "llmhd_cli"]
RULES = ("paper", "literal", "agreement")
# The demo's schedule speed: ml-100k has ~50 BPR batches an epoch, so LD ramps over ~10 epochs
# and the pairwise threshold falls 7 -> 3 within the run.
COMMON = ["--dataset", "ml-100k", "--backbone", "lightgcn", "--threads", "1", "--early-stop", "10"]
LLMHD_FLAGS = ["--alpha", "500", "--eps-l-max", "0.05", "--eps-v", "0.5"]


def settings(objective: str, accuracies: list[float]) -> dict[str, list[str]]:
    out = {"none": ["--denoiser", "none"],
           "ld": ["--denoiser", "llmhd", "--variant", "ld", *LLMHD_FLAGS]}
    for accuracy in accuracies:
        # Pointwise (BCE) samples have no literal reading of their own: it is the paper's rule.
        for rule in RULES if objective == "bpr" else ("paper", "agreement"):
            suffix = "" if accuracy == 1.0 else f"-acc{accuracy:g}"
            out[f"{rule}{suffix}"] = ["--denoiser", "llmhd", "--variant", "ld-vs-lms", "--provider", "oracle",
                                      "--hard-rule", rule, "--judge-accuracy", str(accuracy), *LLMHD_FLAGS]
    return out


def run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--objectives", nargs="+", default=["bpr", "bce"])
    parser.add_argument("--accuracies", type=float, nargs="+", default=[1.0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "LLMHD_WORKSPACE": str(args.workspace), "OMP_NUM_THREADS": "1"}
    ws = args.workspace
    if not (ws / "datasets" / "ml-100k" / "dataset.json").exists():
        run([*LLMHD, "prepare", "--dataset", "ml-100k", "--noise-ratio", "0.05", "--noise-source", "low-rating"], env)
    run([*LLMHD, "summarize", "--dataset", "ml-100k", "--provider", "oracle"], env)

    jobs = []
    for objective in args.objectives:
        for name, flags in settings(objective, args.accuracies).items():
            for seed in args.seeds:
                run_dir = ws / "runs" / f"{objective}-{name}-s{seed}"
                jobs.append((run_dir, [*LLMHD, "train", *COMMON, "--objective", objective, "--epochs", str(args.epochs),
                                       "--seed", str(seed), "--run-dir", str(run_dir), *flags]))
    todo = [(d, c) for d, c in jobs if not (d / "metrics.json").exists()]
    for run_dir, _ in todo:
        if run_dir.exists():  # an interrupted run: start it again
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    print(f"{len(jobs)} runs, {len(todo)} to train", flush=True)
    with ThreadPoolExecutor(args.workers) as pool:
        for n, _ in enumerate(pool.map(lambda job: run(job[1], env), todo), 1):
            print(f"  {n}/{len(todo)} done", flush=True)
    dirs = [str(d) for d, _ in jobs]
    subprocess.run([*LLMHD, "evaluate", "--recompute", "--group", "--baseline", "denoiser=none",
                    "--format", "markdown", *dirs], check=True, env=env)


if __name__ == "__main__":
    main()
