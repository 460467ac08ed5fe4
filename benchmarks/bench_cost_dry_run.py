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

For token counts rather than timing: ``--paper-texts`` synthesizes texts of the paper's
lengths instead (60-word item profiles, 100-word user profiles; a workspace of its own),
``--no-plain`` skips the plain run, ``--set KEY=VALUE`` passes more llmhd options, ``--out``
writes the rows and per-epoch counters as JSON, ``--dump-pairs`` the T_score pairs asked.
``bench_scoring_cost.py`` compares the scoring settings on one recorded dry run.
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
# --paper-texts: the paper's lengths (Table 4's setting): item profiles of about 60 words, user
# profiles of at most 100 words (T_sum's limit), made of deterministic filler words.
ITEM_WORDS, PROFILE_WORDS = 60, 100
WORDS = ("story reader novel author style character plot world history family mystery romance science "
         "fiction fantasy classic modern literary dark humour adventure journey war love friendship power "
         "identity memory city village ocean mountain detective secret journey voice memoir essay poetry "
         "cooking travel business faith justice money survival discovery betrayal hope grief courage "
         "childhood school island empire revolution legend magic dragon ship letter garden winter summer").split()


def _filler(token: str, salt: str, n: int) -> str:
    """``n`` words picked deterministically from WORDS by a hash of (salt, token, position)."""
    import hashlib

    digest = b"".join(hashlib.sha256(f"{salt}:{token}:{k}".encode()).digest() for k in range(-(-n // 16)))
    return " ".join(WORDS[int.from_bytes(digest[2 * k:2 * k + 2], "little") % len(WORDS)] for k in range(n))


def paper_item_text(token: str) -> str:
    """About ITEM_WORDS words: the length of the paper's item profiles."""
    head = f"Book {token}: a"
    return f"{head} {_filler(token, 'item', ITEM_WORDS - len(head.split()))}."


def paper_user_profile(user: str, items: list[str]) -> str:
    """At most PROFILE_WORDS words (T_sum's limit), as long as it allows."""
    head = f"The reader of {len(items)} books likes"
    return f"{head} {_filler(user, 'user', PROFILE_WORDS - len(head.split()))}."


def dataset_in(workspace: Path, source: Path, paper_texts: bool = False):
    """Amazon-books prepared in ``workspace``, with synthesized item texts and user profiles
    (``paper_texts``: of the paper's lengths, else 'item <id>' and the first 20 items' names)."""
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.prepare import PrepareOptions, prepare_dataset
    from llmhd_cli.summarize import user_histories

    if not (workspace / "datasets" / NAME).exists():
        print(f"preparing {NAME} from {source} into {workspace} ...", flush=True)
        prepare_dataset(workspace, PrepareOptions(name=NAME, source_dir=source, noise_ratio=0.05))
    dataset = open_dataset(workspace, NAME)
    items_path = dataset.items_file
    if not items_path.exists() or not items_path.stat().st_size:
        histories = user_histories(dataset)
        items = sorted({i for its in histories.values() for i in its}
                       | set(dataset.read_split("valid")[1].tolist()) | set(dataset.read_split("test")[1].tolist()))
        if paper_texts:
            item, profile = paper_item_text, paper_user_profile
            what = f"{ITEM_WORDS} words per item, {PROFILE_WORDS} per user profile"
        else:
            def item(i: str) -> str:
                return f"item {i}"

            def profile(u: str, its: list[str]) -> str:
                return f"user {u} likes: " + ", ".join(f"item {i}" for i in its[:PROFILE_ITEMS])
            what = f"'item <id>', first {PROFILE_ITEMS} training items per user"
        dataset.write_items([{"item_id": i, "text": item(i)} for i in items])
        dataset.write_user_profiles([{"user_id": u, "profile": profile(u, its)} for u, its in sorted(histories.items())])
        print(f"synthesized item texts and user profiles ({what}; {len(items):,} items, {len(histories):,} users): "
              "the split ships neither", flush=True)
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eps-v", type=float, default=0.5)
    parser.add_argument("--eps-l-max", type=float, default=0.05)
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a loaded machine)")
    parser.add_argument("--paper-texts", action="store_true",
                        help=f"synthesize texts of the paper's lengths ({ITEM_WORDS}-word items, {PROFILE_WORDS}-word "
                             "profiles) instead of 'item <id>' (use a workspace of its own)")
    parser.add_argument("--no-plain", dest="plain", action="store_false",
                        help="skip the plain run (token counts only, no timing ratio)")
    parser.add_argument("--set", dest="llmhd", action="append", default=[], metavar="KEY=VALUE",
                        help="another llmhd option of the dry run (e.g. --set scoring=pairwise); repeatable")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the rows and the per-epoch counters (log.jsonl's denoiser.llm) as JSON here")
    parser.add_argument("--dump-pairs", type=Path, default=None,
                        help="write the T_score pairs the dry run would send, in the order asked (TSV: user, item)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from llmhd_cli import plugins
    from llmhd_cli.commands.common import parse_settings
    from llmhd_cli.llm.estimate import EstimateContext, rows_for_requests
    from llmhd_cli.llm.pricing import load_prices
    from llmhd_cli.llm.prompts import template_set_for
    from llmhd_cli.training import TrainConfig, train
    from llmhd_plugins.llmhd.dry_run import TASKS, dry_run, dry_run_config

    # --set read as train --set reads it: TOML scalars (7, 0.5, true), else the text.
    extra = {key.replace("-", "_"): value for key, value in parse_settings(tuple(args.llmhd)).items()}
    t_plain, plain_epochs = 0.0, []
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        workspace = args.workspace or Path(tmp) / "ws"
        dataset = dataset_in(workspace, args.source, args.paper_texts)

        def plain(epochs: int, run: str) -> float:
            config = TrainConfig(dataset=NAME, backbone="lightgcn", objective="bpr", denoiser="none", epochs=epochs,
                                 eval_every=epochs, early_stop=0, device=args.device, threads=args.threads)
            start = time.perf_counter()
            train(config, dataset, workspace / "runs", run_dir=Path(tmp) / run)
            return time.perf_counter() - start

        if args.plain:
            plain(1, "warmup")
            t_plain = plain(args.epochs, "plain")
            plain_epochs = [json.loads(x)["seconds"] for x in (Path(tmp) / "plain" / "log.jsonl").read_text().splitlines()]

        config = dry_run_config(NAME, "openai", "gpt-4o-mini", epochs=args.epochs,
                                overrides={"backbone": "lightgcn", "objective": "bpr", "device": args.device,
                                           "threads": args.threads},
                                llmhd={"eps_v": args.eps_v, "eps_l_max": args.eps_l_max, **extra})
        start = time.perf_counter()
        report = dry_run(workspace, dataset, config, run_dir=Path(tmp) / "dry")
        t_train = time.perf_counter() - start
        cls = plugins.registry("provider").get("openai", "--provider")
        tset = template_set_for(dataset.info.domain)
        ctx = EstimateContext(workspace, dataset, tset, cls, "gpt-4o-mini", load_prices(None), None, {})
        rows = [rows_for_requests(ctx, report.requests.get(t, []), tset.get(t), "train") for t in TASKS]
        t_dry = time.perf_counter() - start
        if args.dump_pairs:
            with args.dump_pairs.open("w", encoding="utf-8") as f:
                for task in TASKS:
                    for r in report.requests.get(task, []):
                        for pair in r.variables.get("pairs", [(r.variables.get("user_id"), r.variables.get("item_id"))]):
                            f.write(f"{task}\t{pair[0]}\t{pair[1]}\n")
        log_rows = [json.loads(x) for x in (Path(tmp) / "dry" / "log.jsonl").read_text().splitlines()]
        dry_epochs = [r["seconds"] for r in log_rows]

    per_epoch = [dict(epoch=r["epoch"], **{k: (r.get("denoiser") or {}).get(k, 0) for k in
                                           ("candidates", "hard_candidates", "scored_pairs", "fp_confident",
                                            "profiles_updated_fp", "profiles_updated_fn")},
                      llm=(r.get("denoiser") or {}).get("llm", {})) for r in log_rows]
    print(f"device {report.device}; {report.epochs} epochs of lightgcn/bpr on {NAME}; eps_v {args.eps_v}, "
          f"eps_l_max {args.eps_l_max}{'; ' + str(extra) if extra else ''}")
    print("per epoch: new T_score pairs (score_requests), T_fp/T_fn prompts: " + ", ".join(
        f"{e['epoch']}:{e['llm'].get('score_requests', 0)}" for e in per_epoch))
    for r in rows:
        print(f"  {r.template:<18} prompts {r.prompts:>8,}  tokens in {r.input_tokens:>12,}  "
              f"tokens out {r.output_tokens:>10,}  ${r.cost:.4f}  ({'exact' if r.exact_tokens else 'estimated'} counts)")
    score = sum(r.input_tokens + r.output_tokens for r, t in zip(rows, TASKS, strict=True) if t.startswith("score"))
    update = sum(r.input_tokens + r.output_tokens for r, t in zip(rows, TASKS, strict=True) if t.startswith("update"))
    if args.out:
        args.out.write_text(json.dumps({
            "epochs": report.epochs, "eps_v": args.eps_v, "eps_l_max": args.eps_l_max, "options": extra,
            "paper_texts": args.paper_texts, "T_score": score, "T_fp+T_fn": update,
            "rows": [r.__dict__ for r in rows], "per_epoch": per_epoch}, indent=1) + "\n")
    print(f"T_score tokens (in + out): {score:,}; T_fp + T_fn tokens (in + out): {update:,}")
    print(f"dry run: {t_dry:.1f}s = train() {t_train:.1f}s (epochs {sum(dry_epochs):.1f}s, "
          f"{sum(dry_epochs) / len(dry_epochs):.2f}s/epoch) + token counting {t_dry - t_train:.1f}s")
    if args.plain:
        print(f"plain train(): {t_plain:.1f}s (epochs {sum(plain_epochs):.1f}s, "
              f"{sum(plain_epochs) / len(plain_epochs):.2f}s/epoch)")
        print(f"ratio of epoch times dry-run/plain: {sum(dry_epochs) / sum(plain_epochs):.2f}")
        print(f"ratio dry-run/plain: {t_dry / t_plain:.2f} (target < 2)")


if __name__ == "__main__":
    main()
