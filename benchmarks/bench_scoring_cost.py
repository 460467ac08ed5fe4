"""What each scoring means costs: T_score and T_fp + T_fn of one training dry run, replayed.

The training dry run of ``llmhd cost`` (`llmhd_plugins.llmhd.dry_run`) trains with a judge
that knows no score, so every hard candidate is dropped as in LD and the training itself does
not depend on how the LLM would be asked: ``--scoring`` and ``--negatives`` change only which
prompts are counted. This script therefore trains ONCE (the paper's Amazon-books split with
synthesized texts of the paper's lengths, as ``bench_cost_dry_run.py --paper-texts`` makes
them; LightGCN + BPR, the llmhd defaults: eps_l_max 0.05, eps_v 0.5, alpha 10k, eps_gamma 5),
recording each judged batch's hard candidates B_HC (users, positives, sampled negatives) and
each PU rewrite request, and then replays that record through a dry `LLMJudge` and the
denoiser's own `_judge_batch` once per setting (``--settings``), counting the prompts exactly as
``llmhd cost`` does (`rows_for_requests`; listwise rows by `combined_score_row`).

A setting is ``scoring/negatives[/option...]``, e.g. ``pairwise/fresh`` (the paper's way, one
prompt per pair, the sample's own negative) or ``listwise/pool/p1/l8/f2/m2``, the options being
``p`` --neg-pool, ``l`` --list-size, ``f`` --score-from, ``m`` --pu-min-items. ``old`` counts as
the dry run did before profile versions were simulated (a rewrite made no new T_score prompts):
``pairwise/fresh/old`` is what ``llmhd cost`` counted before the scoring-cost work.

Run: ``.venv/bin/python benchmarks/bench_scoring_cost.py --epochs 100 --workspace DIR
[--trace FILE] [--threads 1] [--out FILE.json] [--settings ...]``. ``--trace`` keeps the
record (and a later call with the same file replays it without training). The rows of each
setting and its per-epoch new T_score pairs are printed; ``--out`` writes them as JSON (for
``benchmarks/plot_scoring_cost.py``). Not a timed test.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_cost_dry_run import NAME, SOURCE, dataset_in  # noqa: E402  (a sibling script)

DEFAULT_SETTINGS = ("pairwise/fresh/old", "pairwise/fresh", "listwise/fresh", "listwise/pool/p1",
                    "listwise/pool/p1/f2", "listwise/pool/p1/f2/m2", "listwise/pool/p1/f3/m3")
OPTION_LETTERS = {"p": "neg_pool", "l": "list_size", "f": "score_from", "m": "pu_min_items"}


def record(workspace: Path, dataset: Any, epochs: int, threads: int | None, device: str) -> dict[str, Any]:
    """Train once with a recording dry judge: every judged batch's B_HC and every PU rewrite request."""
    from llmhd_cli.training import train
    from llmhd_plugins.llmhd.denoiser import LLMHDDenoiser, check_options
    from llmhd_plugins.llmhd.dry_run import dry_run_config
    from llmhd_plugins.llmhd.judge import JudgeStats

    events: list[tuple[Any, ...]] = []

    class RecordingJudge:
        """What the denoiser needs of a judge; knows no score (as the dry judge), sends nothing."""

        client = None
        exhausted = False

        def __init__(self) -> None:
            self.stats = JudgeStats()

        def update_profiles(self, task: str, user_items: dict[int, list[int]], epoch: int) -> int:
            events.append(("update", task, {u: list(i) for u, i in user_items.items()}, epoch))
            return 0

    class RecordingDenoiser(LLMHDDenoiser):
        def _judge_batch(self, batch: Any, chosen: torch.Tensor) -> torch.Tensor:
            if len(chosen):
                negs = batch.neg_items[chosen].cpu().numpy() if batch.neg_items is not None else None
                events.append(("judge", batch.step, batch.objective, batch.users[chosen].cpu().numpy(),
                               batch.items[chosen].cpu().numpy(), negs, batch.labels[chosen].cpu().numpy(),
                               self._epoch))
            return torch.zeros(len(chosen), dtype=torch.bool, device=chosen.device)  # no score: never hard

        def start_epoch(self, epoch: int) -> None:
            self._epoch = epoch
            super().start_epoch(epoch)

    config = dry_run_config(NAME, "openai", "gpt-4o-mini", epochs=epochs,
                            overrides={"backbone": "lightgcn", "objective": "bpr", "device": device, "threads": threads})
    context_box: list[Any] = []

    def factory(options: dict[str, Any], context: Any) -> Any:
        check_options(options)
        context_box.append(context)
        return RecordingDenoiser(options, context, RecordingJudge())

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        result = train(config, dataset, workspace / "runs", run_dir=Path(tmp) / "run", denoiser_factory=factory)
    print(f"recorded {result.epochs_run} epochs in {time.perf_counter() - start:.0f}s: "
          f"{sum(e[0] == 'judge' for e in events):,} judged batches, {sum(e[0] == 'update' for e in events):,} "
          "rewrite requests", flush=True)
    return {"epochs": result.epochs_run, "events": events, "options": config.denoiser_params, "seed": config.seed}


def replay(workspace: Path, dataset: Any, trace: dict[str, Any], setting: str) -> dict[str, Any]:
    """The rows a dry run with ``setting`` counts for the recorded run."""
    from llmhd_cli import plugins
    from llmhd_cli.denoising import SampleBatch, TrainContext
    from llmhd_cli.llm.estimate import EstimateContext, rows_for_requests
    from llmhd_cli.llm.pricing import load_prices
    from llmhd_cli.llm.profiles import ProfileStore
    from llmhd_cli.training import denoiser_options
    from llmhd_plugins.llmhd.denoiser import LLMHDDenoiser, build_judge
    from llmhd_plugins.llmhd.dry_run import LIST_TASK, TASKS, combined_score_row

    parts = setting.split("/")
    scoring, negatives = parts[0], parts[1]
    old = "old" in parts[2:]
    chosen = {OPTION_LETTERS[part[0]]: int(part[1:]) for part in parts[2:] if part != "old"}
    spec = plugins.registry("denoiser").get("llmhd", "--denoiser")
    options = denoiser_options(spec, {**trace["options"], "scoring": scoring, "negatives": negatives, **chosen})
    backbone = plugins.registry("backbone").get("lightgcn", "--backbone")
    data = _data(dataset, backbone, trace["seed"])
    context = TrainContext("bpr", data.n_users, data.n_items, len(data.train_users), 1, torch.device("cpu"),
                           dataset=dataset, data=data, workspace=workspace, seed=trace["seed"])
    profiles, _ = ProfileStore(dataset).user_profiles()
    judge = build_judge(options, context, dry=True, user_profiles=profiles)
    if old:
        judge.update_profiles = lambda task, user_items, epoch: _old_update(judge, task, user_items)
    denoiser = LLMHDDenoiser(options, context, judge)
    denoiser.start_epoch(0)  # its counters (unused here)
    keys = data.train_users.astype(np.int64) * data.n_items + data.train_items
    order = np.argsort(keys)
    per_epoch: dict[int, int] = {}
    for event in trace["events"]:
        if event[0] == "update":
            denoiser._rewrite(event[1], event[2], event[3])  # --pu-min-items collects, then the judge
            continue
        _, step, objective, users, items, negs, labels, epoch = event
        before = judge.stats.score_requests
        n = len(users)
        t = torch.as_tensor
        rows = order[np.searchsorted(keys[order], users.astype(np.int64) * data.n_items + items)]
        batch = SampleBatch(objective, torch.zeros(n), torch.zeros(n), t(labels), t(users), t(items),
                            None if negs is None else t(negs), t(rows), step, epoch)
        denoiser._judge_batch(batch, torch.arange(n))
        per_epoch[epoch] = per_epoch.get(epoch, 0) + judge.stats.score_requests - before
    requests: dict[str, list[Any]] = {}
    for request in judge.dry_requests.values():
        requests.setdefault(request.task, []).append(request)
    cls = plugins.registry("provider").get("openai", "--provider")
    tset = judge.tset
    ctx = EstimateContext(workspace, dataset, tset, cls, "gpt-4o-mini", load_prices(None), None, {})
    rows = [rows_for_requests(ctx, requests.get(task, []), tset.get(task), "train") for task in TASKS]
    if requests.get(LIST_TASK):
        rows[0] = combined_score_row(ctx, rows[0], requests[LIST_TASK], "train", "")
    return {"setting": setting, "options": {k: options[k] for k in ("scoring", "negatives", "neg_pool", "list_size",
                                                                    "score_from", "pu_min_items")},
            "rows": [r.__dict__ for r in rows],
            "T_score": rows[0].input_tokens + rows[0].output_tokens,
            "T_fp+T_fn": sum(r.input_tokens + r.output_tokens for r in rows[1:]),
            "score_pairs": judge.stats.score_requests, "score_prompts": len(requests.get("score", []))
            + len(requests.get(LIST_TASK, [])),
            "new_pairs_per_epoch": [per_epoch.get(e, 0) for e in range(trace["epochs"])]}


_DATA: dict[int, Any] = {}


def _data(dataset: Any, backbone: Any, seed: int) -> Any:
    from llmhd_cli import recbole_compat
    from llmhd_cli.recbole_data import load_recbole_data

    if seed not in _DATA:
        recbole_compat.apply()
        with recbole_compat.isolated_argv():
            _DATA[seed] = load_recbole_data(dataset, backbone, {}, seed, torch.device("cpu"))
    return _DATA[seed]


def _old_update(judge: Any, task: str, user_items: dict[int, list[int]]) -> int:
    """The dry judge before profile versions were simulated: the prompts are counted, nothing changes."""
    template = judge.tset.get(task)
    requests = []
    for u, items in sorted(user_items.items()):
        profile = judge.profile(u)
        texts = [judge.item_texts[t] for t in (str(judge.item_tokens[i]) for i in items) if t in judge.item_texts]
        if profile and texts:
            requests.append(template.render({"user_profile": profile, "item_profiles": texts, "n_items": len(texts),
                                             "user_id": str(judge.user_tokens[u])}))
    judge._send(requests)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workspace", type=Path, required=True, help="prepared (once) with paper-length texts")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--trace", type=Path, default=None, help="keep the record here; replay it if it exists")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    dataset = dataset_in(args.workspace, args.source, paper_texts=True)
    if args.trace and args.trace.exists():
        trace = pickle.loads(args.trace.read_bytes())
        print(f"replaying {args.trace} ({trace['epochs']} epochs)")
    else:
        trace = record(args.workspace, dataset, args.epochs, args.threads, args.device)
        if args.trace:
            args.trace.write_bytes(pickle.dumps(trace))
    results = []
    for setting in args.settings:
        start = time.perf_counter()
        out = replay(args.workspace, dataset, trace, setting)
        results.append(out)
        score = out["rows"][0]
        print(f"{setting:<22} T_score {out['T_score']:>12,} tokens ({score['prompts']:>8,} prompts, "
              f"{out['score_pairs']:>8,} pairs)   T_fp+T_fn {out['T_fp+T_fn']:>11,} tokens "
              f"({out['rows'][1]['prompts']:,} + {out['rows'][2]['prompts']:,} prompts)   "
              f"[{time.perf_counter() - start:.0f}s]", flush=True)
    if args.out:
        import json

        args.out.write_text(json.dumps({"epochs": trace["epochs"], "options": trace["options"],
                                        "results": results}, indent=1, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    main()
