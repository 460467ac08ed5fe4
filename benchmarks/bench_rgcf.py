"""Benchmark the ``rgcf`` backbone's epoch time against plain LightGCN, epoch for epoch.

On the paper's Amazon-books split (RLMRec files, 5% injected noise), BPR, batch 1024, lr
0.005, Adam, denoiser none, one device, llmhd's own `EpochLoop.run` on both sides:

- lightgcn: RecBole's LightGCN;
- rgcf: the ``rgcf`` backbone with the authors' defaults (pruning, augmentation, MI loss);
- rgcf-no-mim (unless ``--no-variants``): ``MIM_weight=0``, i.e. reliability weighting and
  pruning only, which shows what the augmentation and the InfoNCE over all users cost.

Epochs run interleaved (lightgcn, rgcf, rgcf-no-mim, lightgcn, ...) in one process so machine
drift hits all alike; the first epoch of each is warm-up and left out; medians are compared.
Wall and process CPU time are both printed (CPU time moves less with other jobs' load on a
shared machine). Printed last: ``ratio rgcf/lightgcn epoch time: X``.

Run: ``.venv/bin/python benchmarks/bench_rgcf.py [--epochs 4] [--device cpu] [--threads 1]
[--workspace DIR] [--no-variants]``. ``--workspace`` reuses (or prepares once) the dataset
there instead of a temporary folder. Not a timed test.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# The Amazon-books split, prepared once, as the RecBole-trainer benchmark prepares it (a sibling script).
from bench_train_vs_recbole import NAME, SOURCE, dataset_in  # noqa: E402

from llmhd_cli import plugins, recbole_compat
from llmhd_cli.denoising import Denoiser
from llmhd_cli.objectives import LossSeam
from llmhd_cli.recbole_data import build_model, load_recbole_data, resolve_device
from llmhd_cli.training import EpochLoop, _Silent

BATCH, LR, SEED = 1024, 0.005, 2024


def build_loop(dataset, backbone_name: str, params: dict, device: torch.device) -> EpochLoop:
    """One side, set up as `training.train` does (denoiser none, BPR)."""
    from recbole.utils import init_seed

    backbone = plugins.registry("backbone").get(backbone_name, "--backbone")
    data = load_recbole_data(dataset, backbone, params, SEED, device)
    init_seed(SEED, reproducibility=True)
    model = build_model(data, backbone)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    return EpochLoop(model, backbone, data, LossSeam("bpr", Denoiser()), optimizer, np.random.default_rng(SEED), BATCH, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each side (the first is warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own); 1 is steadier on a loaded machine")
    parser.add_argument("--workspace", type=Path, help="reuse / prepare the dataset here (default: a temporary folder)")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--no-variants", action="store_true", help="skip the rgcf-no-mim side")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs: need at least 2 (the first is warm-up)")
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    recbole_compat.apply()
    device = resolve_device(args.device)
    sides = {"lightgcn": ("lightgcn", {}), "rgcf": ("rgcf", {})}
    if not args.no_variants:
        sides["rgcf-no-mim"] = ("rgcf", {"MIM_weight": 0.0})

    with tempfile.TemporaryDirectory(prefix="bench-rgcf-") as tmp:
        dataset = dataset_in(args.workspace or Path(tmp), args.source)
        with recbole_compat.isolated_argv():
            loops = {name: build_loop(dataset, bb, params, device) for name, (bb, params) in sides.items()}
        data = loops["lightgcn"].data
        print(f"{NAME}: {data.n_users - 1} users, {data.n_items - 1} items, {len(data.train_users)} training pairs; "
              f"BPR, batch {BATCH}, lr {LR}, device {device}, torch threads {torch.get_num_threads()}, "
              f"{loops['lightgcn'].n_batches} batches/epoch")

        observer = _Silent()
        steps = {name: 0 for name in loops}
        wall: dict[str, list[float]] = {name: [] for name in loops}
        cpu: dict[str, list[float]] = {name: [] for name in loops}
        for epoch in range(args.epochs):
            parts = []
            for name, loop in loops.items():
                w0, c0 = time.perf_counter(), time.process_time()
                steps[name], _ = loop.run(epoch, steps[name], observer)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
                stats = loop.seam.stats
                parts.append(f"{name} {wall[name][-1]:.2f}s wall / {cpu[name][-1]:.2f}s cpu "
                             f"(loss {stats.loss_sum / max(stats.samples, 1):.4f})")
            print(f"epoch {epoch}{' (warm-up)' if epoch == 0 else ''}: " + ", ".join(parts), flush=True)

    med = {name: statistics.median(v[1:]) for name, v in wall.items()}
    med_cpu = {name: statistics.median(v[1:]) for name, v in cpu.items()}
    each = ", ".join(f"{name} {med[name]:.3f}s wall / {med_cpu[name]:.3f}s cpu" for name in loops)
    print(f"median epoch (excluding warm-up, {args.epochs - 1} each): {each}")
    if "rgcf-no-mim" in loops:
        print(f"ratio rgcf-no-mim/lightgcn epoch time: {med['rgcf-no-mim'] / med['lightgcn']:.2f} "
              f"(cpu {med_cpu['rgcf-no-mim'] / med_cpu['lightgcn']:.2f})")
    print(f"ratio rgcf/lightgcn epoch cpu time: {med_cpu['rgcf'] / med_cpu['lightgcn']:.2f}")
    print(f"ratio rgcf/lightgcn epoch time: {med['rgcf'] / med['lightgcn']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
