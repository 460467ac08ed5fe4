"""Benchmark an llmhd epoch with the offline ``embed`` judge and an EMPTY cache against a plain epoch.

ml-100k (prepared and summarized with ``embed`` into a temporary workspace, or ``--workspace``
to reuse one), LightGCN + BPR, batch 1024, lr 0.005, Adam, CPU, the demo's llmhd settings
(``--alpha 500 --eps-l-max 0.05 --eps-v 0.5``):

- plain: `EpochLoop.run` with no denoiser;
- llmhd-embed-uncached: the same loop with the ``llmhd`` denoiser built as ``llmhd train``
  builds it, the ``embed`` provider, and a fresh (empty) LLM cache dir, so every pair the judge
  asks about is computed, none read from disk.

Epochs alternate (llmhd, plain, plain, llmhd, ...) in one process so machine drift hits both
alike. The first two epochs only build the score history (the LLM is not consulted), so the
medians are over epochs 2.. (the third on), where the judge scores every epoch. Printed last:
``ratio llmhd-embed-uncached/plain: X (target <= 2.0)``.

Run: ``.venv/bin/python benchmarks/bench_llmhd_embed_epoch.py [--epochs 8] [--threads 1]
[--workspace DIR]``. Not a timed test.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# The epoch loop set up as training.train does it, shared with the cached-score benchmark.
from bench_llmhd_overhead import build  # noqa: E402  (a sibling script: benchmarks/ is on sys.path)

from llmhd_cli import plugins, recbole_compat
from llmhd_cli.datasets import PreparedDataset, open_dataset
from llmhd_cli.recbole_data import resolve_device
from llmhd_cli.training import _Silent

NAME = "ml-100k"
BATCH, LR, SEED = 1024, 0.005, 2024
ENGAGED_FROM = 2  # epochs 0 and 1 fill the score history; the LLM is asked from epoch 2 on
LLMHD = {"alpha": 500.0, "eps_l_max": 0.05, "eps_v": 0.5, "provider": "embed"}


def dataset_in(workspace: Path) -> PreparedDataset:
    """ml-100k prepared and summarized with embed (done once per workspace, through the CLI's code)."""
    if not PreparedDataset.is_prepared(workspace / "datasets" / NAME):
        print(f"preparing {NAME} into {workspace} ...", flush=True)
        _cli(workspace, "prepare", "--dataset", NAME)
    dataset = open_dataset(workspace, NAME)
    if not list(dataset.profiles_dir.glob("*")):
        print(f"summarizing {NAME} with embed ...", flush=True)
        _cli(workspace, "summarize", "--dataset", NAME, "--provider", "embed")
    return dataset


def _cli(workspace: Path, *args: str) -> None:
    from llmhd_cli.cli import main

    try:
        main(["--workspace", str(workspace), *args])
    except SystemExit as exc:
        if exc.code:
            raise SystemExit(f"llmhd {' '.join(args)} failed (exit {exc.code})") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each run (LLM engaged from the third)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workspace", type=Path, help="reuse / prepare ml-100k here (default: temporary)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a loaded machine)")
    args = parser.parse_args()
    if args.epochs < ENGAGED_FROM + 1:
        parser.error(f"--epochs: need at least {ENGAGED_FROM + 1} (two history epochs, then LLM-engaged ones)")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    recbole_compat.apply()
    device = resolve_device(args.device)
    backbone = plugins.registry("backbone").get("lightgcn", "--backbone")

    with tempfile.TemporaryDirectory(prefix="bench-embed-epoch-") as tmp:
        workspace = args.workspace or Path(tmp) / "ws"
        dataset = dataset_in(workspace)
        os.environ["LLMHD_LLM_CACHE"] = str(Path(tmp) / "empty-llm-cache")  # fresh: every score computed
        runs = Path(tmp) / "runs"
        with recbole_compat.isolated_argv():
            loops = {"llmhd": build(dataset, backbone, device, workspace, runs / "llmhd", "llmhd", LLMHD),
                     "plain": build(dataset, backbone, device, workspace, runs / "plain", "none", {})}
        data = loops["plain"].data
        print(f"{NAME}: {data.n_users - 1} users, {data.n_items - 1} items, {len(data.train_users)} training pairs; "
              f"lightgcn + BPR, batch {BATCH}, {loops['plain'].n_batches} batches/epoch, lr {LR}, "
              f"llmhd {LLMHD}, device {device}, torch threads {torch.get_num_threads()}, empty LLM cache")
        observer = _Silent()
        steps = {"llmhd": 0, "plain": 0}
        wall: dict[str, list[float]] = {"llmhd": [], "plain": []}
        for epoch in range(args.epochs):
            times: dict[str, float] = {}
            note = ""
            for name in (("llmhd", "plain") if epoch % 2 == 0 else ("plain", "llmhd")):
                t0 = time.perf_counter()
                steps[name], extra = loops[name].run(epoch, steps[name], observer)
                times[name] = time.perf_counter() - t0
                if name == "llmhd":
                    llm = extra.get("llm", {})
                    note = (f"hard candidates {extra.get('hard_candidates', 0)}, scored {llm.get('score_requests', 0)}, "
                            f"calls {llm.get('calls', 0)}, cache hits {llm.get('cache_hits', 0)}, "
                            f"profile updates {llm.get('profile_updates', 0)}")
            if epoch >= ENGAGED_FROM:
                for name, w in times.items():
                    wall[name].append(w)
            tag = "" if epoch >= ENGAGED_FROM else " (history only)"
            print(f"epoch {epoch}{tag}: llmhd {times['llmhd']:.2f}s ({note}), plain {times['plain']:.2f}s", flush=True)
        loops["llmhd"].seam.denoiser.judge.client.close()

    med = {k: statistics.median(v) for k, v in wall.items()}
    print(f"median LLM-engaged epoch ({ENGAGED_FROM}..{args.epochs - 1}, {len(wall['plain'])} each): "
          f"llmhd-embed-uncached {med['llmhd']:.3f}s, plain {med['plain']:.3f}s")
    print(f"ratio llmhd-embed-uncached/plain: {med['llmhd'] / med['plain']:.2f} (target <= 2.0)")


if __name__ == "__main__":
    sys.exit(main())
