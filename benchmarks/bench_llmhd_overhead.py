"""Benchmark the llmhd denoiser's per-epoch overhead over the plain backbone, LLM scores cached.

On the paper's Amazon-books split (RLMRec files, 5% injected noise), LightGCN + BPR, batch
1024, lr 0.005, Adam, one device:

- plain: `EpochLoop.run` with no denoiser;
- llmhd: the same loop with the ``llmhd`` denoiser (variant full: LD, VS, LMS, PU), built as
  ``llmhd train`` builds it, scoring through the cached client with the offline ``embed``
  provider.

The RLMRec files carry no item texts and the dataset has no user profiles, so both are
SYNTHESIZED here (item i: a deterministic genre/theme/era text; user u: the genres and themes
of their training items) just so that scoring can run: the scores mean nothing about books.

The cache is filled first by a full llmhd run of the same epochs and seed (untimed); then a
fresh llmhd run (same seed: the same batches, the same pairs scored, all disk-cache hits, no
provider call) and a fresh plain run are timed, epochs interleaved llmhd, plain, llmhd, ...
in one process so machine drift hits both alike. The first epoch is warm-up and left out;
epochs before the score history has two snapshots do not consult the LLM, so the ratio over
the LLM-engaged epochs (2 and later) is printed too. ``--alpha 50`` (default here) makes the
LD rate and the thresholds reach their bounds within the first batches, so the LLM side is
fully engaged from epoch 2 (the paper's alpha would take several epochs to get there).

Printed last: ``ratio llmhd/plain epoch time: X (target <= 1.25)`` and the process's peak
resident memory (target < 3 GB, ``resource.getrusage``).

Run: ``.venv/bin/python benchmarks/bench_llmhd_overhead.py [--epochs 4] [--device cpu]
[--workspace DIR] [--profile FILE] [--threads N]
[--repeats N] [--no-fill]``. ``--workspace`` reuses (or prepares once) the dataset
and cache there. ``--profile`` writes cProfile stats of the timed llmhd epochs. Not a timed test.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from itertools import zip_longest
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from llmhd_cli import plugins, recbole_compat
from llmhd_cli.datasets import PreparedDataset, open_dataset
from llmhd_cli.denoising import Denoiser, TrainContext
from llmhd_cli.objectives import LossSeam
from llmhd_cli.prepare import PrepareOptions, prepare_dataset
from llmhd_cli.recbole_data import build_model, load_recbole_data, resolve_device
from llmhd_cli.training import EpochLoop, _Silent, denoiser_options

SOURCE = Path("/work/shared/data/rlmrec/amazon-books")
NAME = "amazon-books"
BATCH, LR, SEED = 1024, 0.005, 2024
GENRES = ["mystery", "romance", "science fiction", "fantasy", "history", "biography", "thriller", "poetry",
          "cooking", "travel", "self-help", "horror", "philosophy", "children's", "business", "religion"]
THEMES = ["family", "war", "friendship", "power", "survival", "identity", "love", "betrayal", "discovery", "faith",
          "money", "justice"]
ERAS = ["classic", "modern", "contemporary", "victorian", "medieval", "futuristic"]


def _pick(token: str, salt: str, options: list[str]) -> str:
    digest = hashlib.sha256(f"{salt}:{token}".encode()).digest()
    return options[int.from_bytes(digest[:4], "little") % len(options)]


def item_text(token: str) -> str:
    return (f"Book {token}: a {_pick(token, 'era', ERAS)} {_pick(token, 'genre', GENRES)} novel about "
            f"{_pick(token, 'theme', THEMES)} and {_pick(token, 'theme2', THEMES)}.")


def synthesize_texts(dataset: PreparedDataset) -> None:
    """SYNTHETIC item texts and user profiles (the source has neither), so LLM scoring can run."""
    if dataset.user_profiles_file.exists():
        return
    import pandas as pd

    train = pd.read_csv(dataset.split_file("train"), sep="\t", dtype=str, keep_default_na=False)
    user_col, item_col = train.columns[:2]
    items = sorted(set(train[item_col]) | _all_items(dataset, item_col))
    dataset.write_items([{"item_id": token, "text": item_text(token), "attributes": {"synthetic": True}}
                         for token in items])
    with dataset.user_profiles_file.open("w", encoding="utf-8") as f:
        for user, group in train.groupby(user_col):
            genres = Counter(_pick(t, "genre", GENRES) for t in group[item_col])
            themes = Counter(_pick(t, "theme", THEMES) for t in group[item_col])
            profile = (f"Enjoys {', '.join(g for g, _ in genres.most_common(3))} books, especially stories about "
                       f"{', '.join(t for t, _ in themes.most_common(2))}.")
            f.write(json.dumps({"user_id": user, "profile": profile}) + "\n")


def _all_items(dataset: PreparedDataset, item_col: str) -> set[str]:
    import pandas as pd

    out: set[str] = set()
    for split in ("valid", "test"):
        frame = pd.read_csv(dataset.split_file(split), sep="\t", dtype=str, keep_default_na=False)
        out |= set(frame[item_col])
    return out


def dataset_in(workspace: Path, source: Path) -> PreparedDataset:
    if not (workspace / "datasets" / NAME).exists():
        print(f"preparing {NAME} from {source} into {workspace} ...", flush=True)
        prepare_dataset(workspace, PrepareOptions(name=NAME, source_dir=source, noise_ratio=0.05))
    dataset = open_dataset(workspace, NAME)
    synthesize_texts(dataset)
    return dataset


def build(dataset: PreparedDataset, backbone: Any, device: torch.device, workspace: Path, run_dir: Path,
          denoiser: str, params: dict[str, Any]) -> EpochLoop:
    """A model, optimizer and epoch loop set up as `training.train` does."""
    from recbole.utils import init_seed

    data = load_recbole_data(dataset, backbone, {}, SEED, device)
    init_seed(SEED, reproducibility=True)
    model = build_model(data, backbone)
    if denoiser == "none":
        seam = LossSeam("bpr", Denoiser())
    else:
        spec = plugins.registry("denoiser").get(denoiser, "--denoiser")
        n_batches = -(-len(data.train_users) // BATCH)
        run_dir.mkdir(parents=True, exist_ok=True)
        context = TrainContext("bpr", data.n_users, data.n_items, len(data.train_users), n_batches, device, run_dir,
                               dataset, backbone=backbone, data=data, workspace=workspace, seed=SEED)
        seam = LossSeam("bpr", spec.factory(denoiser_options(spec, params), context))
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.0)
    return EpochLoop(model, backbone, data, seam, optimizer, np.random.default_rng(SEED), BATCH, device)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each run (the first is warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--alpha", type=float, default=50.0)
    parser.add_argument("--workspace", type=Path, help="reuse / prepare the dataset and cache here (default: temporary)")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the timed llmhd epochs here")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a loaded machine)")
    parser.add_argument("--repeats", type=int, default=1, help="timed llmhd/plain run pairs (more epochs, one fill)")
    parser.add_argument("--no-fill", dest="fill", action="store_false",
                        help="skip the fill run: --workspace's cache already holds a run of these --epochs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.epochs < 4:
        parser.error("--epochs: need at least 4 (warm-up, a history epoch, then LLM-engaged epochs)")
    logging.basicConfig(level=logging.WARNING)
    recbole_compat.apply()
    device = resolve_device(args.device)
    backbone = plugins.registry("backbone").get("lightgcn", "--backbone")
    params = {"alpha": args.alpha, "provider": "embed"}

    with tempfile.TemporaryDirectory(prefix="bench-llmhd-") as tmp:
        workspace = args.workspace or Path(tmp)
        dataset = dataset_in(workspace, args.source)
        runs = Path(tmp) / "runs"
        observer = _Silent()
        with recbole_compat.isolated_argv():
            fill = build(dataset, backbone, device, workspace, runs / "fill", "llmhd", params)
        data = fill.data
        print(f"{NAME}: {data.n_users - 1} users, {data.n_items - 1} items, {len(data.train_users)} training pairs; "
              f"lightgcn + BPR, batch {BATCH}, {fill.n_batches} batches/epoch, lr {LR}, alpha {args.alpha}, "
              f"device {device}, torch threads {torch.get_num_threads()}; SYNTHETIC item texts and user profiles")

        # 1. Fill the cache: the same run as the timed one, untimed. The embed provider encodes
        # texts one request at a time; encoding them all in one batched pass first is much faster.
        if args.fill:
            t0 = time.perf_counter()
            judge = fill.seam.denoiser.judge
            users = [judge.profile(u) for u in range(1, data.n_users)]
            judge.client.provider.warm([SimpleNamespace(variables={"user_profile": p, "item_profile": t})
                                        for p, t in zip_longest(users, judge.item_texts.values()) if p or t])
            print(f"embedded {len(users)} profiles and {len(judge.item_texts)} item texts in "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
            step, t0 = 0, time.perf_counter()
            for epoch in range(args.epochs):
                step, extra = fill.run(epoch, step, observer)
                llm = extra.get("llm", {})
                print(f"fill epoch {epoch}: {time.perf_counter() - t0:.1f}s so far, hard candidates "
                      f"{extra.get('hard_candidates', 0)}, LLM calls {llm.get('calls', 0)}, "
                      f"cache hits {llm.get('cache_hits', 0)}", flush=True)
        fill.seam.denoiser.judge.client.close()
        del fill

        # 2. Timed: fresh llmhd runs (all cache hits) and plain runs, epochs interleaved (the
        # order alternates per epoch); --repeats rebuilds both to get more epochs from one fill.
        profiler = cProfile.Profile() if args.profile else None
        wall: dict[str, list[float]] = {"llmhd": [], "plain": []}
        cpu: dict[str, list[float]] = {"llmhd": [], "plain": []}
        engaged: dict[str, list[float]] = {"llmhd": [], "plain": []}
        calls = 0
        for rep in range(args.repeats):
            with recbole_compat.isolated_argv():
                loops = {"llmhd": build(dataset, backbone, device, workspace, runs / f"timed{rep}", "llmhd", params),
                         "plain": build(dataset, backbone, device, workspace, runs / f"plain{rep}", "none", {})}
            steps = {"llmhd": 0, "plain": 0}
            for epoch in range(args.epochs):
                times: dict[str, tuple[float, float]] = {}
                for name in (("llmhd", "plain") if epoch % 2 == 0 else ("plain", "llmhd")):
                    w0, c0 = time.perf_counter(), time.process_time()
                    if profiler is not None and name == "llmhd" and epoch > 0:
                        profiler.enable()
                    steps[name], extra = loops[name].run(epoch, steps[name], observer)
                    if profiler is not None:
                        profiler.disable()
                    times[name] = (time.perf_counter() - w0, time.process_time() - c0)
                    if name == "llmhd":
                        llm = extra["llm"]
                        calls += llm["calls"]
                        note = (f"hard candidates {extra['hard_candidates']}, hard {extra['hard']}, "
                                f"LLM calls {llm['calls']}, cache hits {llm['cache_hits']}")
                if epoch > 0:  # the first epoch is warm-up
                    for name, (w, c) in times.items():
                        wall[name].append(w)
                        cpu[name].append(c)
                        if epoch >= 2:
                            engaged[name].append(w)
                print(f"repeat {rep} epoch {epoch}{' (warm-up)' if epoch == 0 else ''}: llmhd {times['llmhd'][0]:.2f}s "
                      f"wall / {times['llmhd'][1]:.2f}s cpu ({note}), plain {times['plain'][0]:.2f}s wall / "
                      f"{times['plain'][1]:.2f}s cpu", flush=True)
            loops["llmhd"].seam.denoiser.judge.client.close()
        if profiler is not None:
            profiler.dump_stats(str(args.profile))
            print(f"cProfile stats of the timed llmhd epochs: {args.profile}")
    if calls:
        print(f"WARNING: the timed llmhd run made {calls} provider calls (the cache should have answered all)")

    med = {k: statistics.median(v) for k, v in wall.items()}
    med_engaged = {k: statistics.median(v) for k, v in engaged.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"median epoch (excluding warm-up, {len(wall['llmhd'])} each): llmhd {med['llmhd']:.3f}s, plain {med['plain']:.3f}s")
    print(f"ratio over LLM-engaged epochs (2..{args.epochs - 1}, {len(engaged['llmhd'])} each): "
          f"{med_engaged['llmhd'] / med_engaged['plain']:.3f}")
    print(f"ratio llmhd/plain epoch cpu time: {med_cpu['llmhd'] / med_cpu['plain']:.3f}")
    print(f"peak resident memory: {peak_rss_gb():.2f} GB (target < 3 GB)")
    print(f"ratio llmhd/plain epoch time: {med['llmhd'] / med['plain']:.3f} (target <= 1.25)")


if __name__ == "__main__":
    sys.exit(main())
