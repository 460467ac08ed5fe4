"""Benchmark llmhd's training loop against RecBole's own trainer, epoch for epoch.

On the paper's Amazon-books split (RLMRec files, 5% injected noise), one backbone (default
LightGCN) with BPR, batch 1024, lr 0.005, Adam, on one device:

- A: llmhd's `EpochLoop.run` (denoiser none): its shuffle, uniform negative sampler and
  RecBole's ``calculate_loss`` through the `LossSeam`;
- B: ``recbole.trainer.Trainer._train_epoch`` on RecBole's ``data_preparation`` train
  dataloader (its uniform negative sampler), a model built from the same RecBole config.

Epochs run interleaved A B A B ... in one process so machine drift hits both alike; the
first epoch of each is warm-up and left out; the medians are compared. The ratio is printed
last: ``ratio llmhd/recbole epoch time: X (target <= 1.10)``.

Run: ``.venv/bin/python benchmarks/bench_train_vs_recbole.py [--epochs 4] [--device cpu]
[--backbone lightgcn] [--workspace DIR] [--threads N]``. ``--workspace`` reuses (or prepares once) the
dataset there instead of preparing it into a temporary folder. Not a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmhd_cli import plugins, recbole_compat
from llmhd_cli.datasets import open_dataset
from llmhd_cli.denoising import Denoiser
from llmhd_cli.objectives import LossSeam
from llmhd_cli.prepare import PrepareOptions, prepare_dataset
from llmhd_cli.recbole_data import build_model, load_recbole_data, resolve_device
from llmhd_cli.training import EpochLoop, _Silent

SOURCE = Path("/work/shared/data/rlmrec/amazon-books")
NAME = "amazon-books"
BATCH, LR, SEED = 1024, 0.005, 2024


def dataset_in(workspace: Path, source: Path):
    if not (workspace / "datasets" / NAME).exists():
        print(f"preparing {NAME} from {source} into {workspace} ...", flush=True)
        prepare_dataset(workspace, PrepareOptions(name=NAME, source_dir=source, noise_ratio=0.05))
    return open_dataset(workspace, NAME)


def build_llmhd(dataset, backbone, device: torch.device):
    """llmhd's side, set up as `training.train` does (denoiser none, BPR)."""
    from recbole.utils import init_seed

    data = load_recbole_data(dataset, backbone, {}, SEED, device)
    init_seed(SEED, reproducibility=True)
    model = build_model(data, backbone)
    seam = LossSeam("bpr", Denoiser())
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.0)
    loop = EpochLoop(model, backbone, data, seam, optimizer, np.random.default_rng(SEED), BATCH, device)
    return data, loop


def build_recbole(data, backbone, checkpoints: Path):
    """RecBole's side from a copy of llmhd's RecBole config: same model hyperparameters and data."""
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = copy.deepcopy(data.config)
    config["train_batch_size"] = BATCH
    config["learning_rate"] = LR
    config["weight_decay"] = 0.0
    config["learner"] = "adam"
    config["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                       "dynamic": False, "candidate_num": 0}
    config["checkpoint_dir"] = str(checkpoints)
    train_data, _, _ = data_preparation(config, create_dataset(config))
    init_seed(SEED, reproducibility=True)
    model = backbone.load_class()(config, train_data.dataset).to(config["device"])
    # RecBole's Trainer opens a TensorBoard writer under ./log_tensorboard: keep it in the temporary folder.
    with contextlib.chdir(checkpoints.parent):
        trainer = Trainer(config, model)
    return trainer, train_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each trainer (the first is warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="lightgcn")
    parser.add_argument("--workspace", type=Path, help="reuse / prepare the dataset here (default: a temporary folder)")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice); 1 is steadier on a loaded machine")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs: need at least 2 (the first is warm-up)")
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    recbole_compat.apply()
    device = resolve_device(args.device)
    backbone = plugins.registry("backbone").get(args.backbone, "--backbone")

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        dataset = dataset_in(args.workspace or Path(tmp), args.source)
        with recbole_compat.isolated_argv():
            data, loop = build_llmhd(dataset, backbone, device)
            trainer, train_data = build_recbole(data, backbone, Path(tmp) / "recbole")
        print(f"{NAME}: {data.n_users - 1} users, {data.n_items - 1} items, {len(data.train_users)} training pairs; "
              f"{args.backbone} + BPR, batch {BATCH}, lr {LR}, device {device}, torch threads {torch.get_num_threads()}")
        print(f"batches/epoch: llmhd {loop.n_batches}, recbole {len(train_data)}")

        observer, step = _Silent(), 0
        # Wall time is what the target is about; process CPU time is printed too because on a
        # shared machine it moves less with other jobs' load.
        wall: dict[str, list[float]] = {"llmhd": [], "recbole": []}
        cpu: dict[str, list[float]] = {"llmhd": [], "recbole": []}
        for epoch in range(args.epochs):
            w0, c0 = time.perf_counter(), time.process_time()
            step, _ = loop.run(epoch, step, observer)
            w1, c1 = time.perf_counter(), time.process_time()
            loss = trainer._train_epoch(train_data, epoch, show_progress=False)
            w2, c2 = time.perf_counter(), time.process_time()
            wall["llmhd"].append(w1 - w0)
            wall["recbole"].append(w2 - w1)
            cpu["llmhd"].append(c1 - c0)
            cpu["recbole"].append(c2 - c1)
            stats = loop.seam.stats
            print(f"epoch {epoch}{' (warm-up)' if epoch == 0 else ''}: "
                  f"llmhd {w1 - w0:.2f}s wall / {c1 - c0:.2f}s cpu (loss {stats.loss_sum / max(stats.samples, 1):.4f}), "
                  f"recbole {w2 - w1:.2f}s wall / {c2 - c1:.2f}s cpu (batch loss incl. reg {loss / len(train_data):.4f})", flush=True)

    med = {k: statistics.median(v[1:]) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v[1:]) for k, v in cpu.items()}
    print(f"median epoch (excluding warm-up, {args.epochs - 1} each): llmhd {med['llmhd']:.3f}s, recbole {med['recbole']:.3f}s")
    print(f"ratio llmhd/recbole epoch cpu time: {med_cpu['llmhd'] / med_cpu['recbole']:.2f}")
    print(f"ratio llmhd/recbole epoch time: {med['llmhd'] / med['recbole']:.2f} (target <= 1.10)")


if __name__ == "__main__":
    sys.exit(main())
