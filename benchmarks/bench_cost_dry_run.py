"""Benchmark the training dry run of ``llmhd cost`` against plain training, epoch for epoch.

On the paper's Amazon-books split (RLMRec files, 5% injected noise), LightGCN with BPR,
batch 1024, lr 0.005, Adam, one device, N epochs each, in one process:

- plain: `llmhd_cli.training.train` with denoiser none;
- dry run: `llmhd_plugins.llmhd.dry_run.dry_run` (the same `train` with the llmhd denoiser and a
  dry judge: LD, score history, VS and PU active, every unique prompt rendered and recorded),
  then the token counting of its T_score / T_fp / T_fn prompts (`rows_for_requests`), i.e.
  everything ``llmhd cost --eps-v 0.5`` adds to a T_sum-only estimate.

The RLMRec split has no item texts or user profiles, and the dry judge needs both to render
prompts, so this benchmark SYNTHESIZES them: item text "item <id>" and a user profile listing
the user's first 20 training items. Token counts are therefore not Amazon-books' real ones;
the timing is what is measured. A one-epoch plain run first warms up the device (not timed).
Both runs validate once at the end and never stop early. The ratio is printed last:
``ratio dry-run/plain: X (target < 2)``.

Run: ``.venv/bin/python benchmarks/bench_cost_dry_run.py [--epochs 10] [--device auto]
[--workspace DIR] [--source DIR]``. ``--workspace`` reuses (or prepares once) the dataset
there instead of a temporary folder. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

SOURCE = Path("/work/shared/data/rlmrec/amazon-books")
NAME = "amazon-books"
PROFILE_ITEMS = 20


def dataset_in(workspace: Path, source: Path):
    """Amazon-books prepared in ``workspace``, with synthesized item texts and user profiles."""
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.prepare import PrepareOptions, prepare_dataset
    from llmhd_cli.summarize import user_histories

    if not (workspace / "datasets" / NAME).exists():
        print(f"preparing {NAME} from {source} into {workspace} ...", flush=True)
        prepare_dataset(workspace, PrepareOptions(name=NAME, source_dir=source, noise_ratio=0.05))
    dataset = open_dataset(workspace, NAME)
    items_path = dataset.path / "items.jsonl"
    if not items_path.exists() or not items_path.stat().st_size:
        histories = user_histories(dataset)
        items = sorted({i for its in histories.values() for i in its}
                       | set(dataset.read_split("valid")[1].tolist()) | set(dataset.read_split("test")[1].tolist()))
        items_path.write_text("".join(json.dumps({"item_id": i, "text": f"item {i}"}) + "\n" for i in items))
        (dataset.path / "user_profiles.jsonl").write_text("".join(
            json.dumps({"user_id": u, "profile": f"user {u} likes: " + ", ".join(f"item {i}" for i in its[:PROFILE_ITEMS])})
            + "\n" for u, its in sorted(histories.items())))
        print(f"synthesized item texts ('item <id>', {len(items):,} items) and user profiles "
              f"(first {PROFILE_ITEMS} training items, {len(histories):,} users): the split ships neither", flush=True)
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eps-v", type=float, default=0.5)
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from llmhd_cli import plugins
    from llmhd_cli.llm.estimate import EstimateContext, rows_for_requests
    from llmhd_cli.llm.pricing import load_prices
    from llmhd_cli.llm.prompts import template_set_for
    from llmhd_cli.training import TrainConfig, train
    from llmhd_plugins.llmhd.dry_run import TASKS, dry_run, dry_run_config

    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        workspace = args.workspace or Path(tmp) / "ws"
        dataset = dataset_in(workspace, args.source)

        def plain(epochs: int, run: str) -> float:
            config = TrainConfig(dataset=NAME, backbone="lightgcn", objective="bpr", denoiser="none", epochs=epochs,
                                 eval_every=epochs, early_stop=0, device=args.device)
            start = time.perf_counter()
            train(config, dataset, workspace / "runs", run_dir=Path(tmp) / run)
            return time.perf_counter() - start

        plain(1, "warmup")
        t_plain = plain(args.epochs, "plain")
        plain_epochs = [json.loads(x)["seconds"] for x in (Path(tmp) / "plain" / "log.jsonl").read_text().splitlines()]

        config = dry_run_config(NAME, "openai", "gpt-4o-mini", epochs=args.epochs,
                                overrides={"backbone": "lightgcn", "objective": "bpr", "device": args.device},
                                llmhd={"eps_v": args.eps_v})
        start = time.perf_counter()
        report = dry_run(workspace, dataset, config, run_dir=Path(tmp) / "dry")
        t_train = time.perf_counter() - start
        cls = plugins.registry("provider").get("openai", "--provider")
        tset = template_set_for(dataset.info.domain)
        ctx = EstimateContext(workspace, dataset, tset, cls, "gpt-4o-mini", load_prices(None), None, {})
        rows = [rows_for_requests(ctx, report.requests.get(t, []), tset.get(t), "train") for t in TASKS]
        t_dry = time.perf_counter() - start
        dry_epochs = [json.loads(x)["seconds"] for x in (Path(tmp) / "dry" / "log.jsonl").read_text().splitlines()]

    print(f"device {report.device}; {args.epochs} epochs of lightgcn/bpr on {NAME}; eps_v {args.eps_v}")
    for r in rows:
        print(f"  {r.template:<18} prompts {r.prompts:>8,}  tokens in {r.input_tokens:>12,}  "
              f"tokens out {r.output_tokens:>10,}  ${r.cost:.4f}")
    print(f"plain train(): {t_plain:.1f}s (epochs {sum(plain_epochs):.1f}s, {sum(plain_epochs) / len(plain_epochs):.2f}s/epoch)")
    print(f"dry run: {t_dry:.1f}s = train() {t_train:.1f}s (epochs {sum(dry_epochs):.1f}s, "
          f"{sum(dry_epochs) / len(dry_epochs):.2f}s/epoch) + token counting {t_dry - t_train:.1f}s")
    print(f"ratio of epoch times dry-run/plain: {sum(dry_epochs) / sum(plain_epochs):.2f}")
    print(f"ratio dry-run/plain: {t_dry / t_plain:.2f} (target < 2)")


if __name__ == "__main__":
    main()
