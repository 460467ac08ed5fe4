"""Tokens per epoch of each scoring setting, from ``bench_scoring_cost.py --out FILE.json``.

One line per setting: the new T_score pairs each epoch asks for (left) and the cumulative
T_score tokens, estimated per epoch as the epoch's share of the setting's new pairs times its
tokens per pair (right). Writes a PNG (default docs/img/scoring-cost-per-epoch.png).

Run: ``.venv/bin/python benchmarks/plot_scoring_cost.py RESULTS.json [-o docs/img/x.png]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/img/scoring-cost-per-epoch.png"))
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for result in data["results"]:
        pairs = result["new_pairs_per_epoch"]
        per_pair = result["T_score"] / max(sum(pairs), 1)
        cumulative, total = [], 0.0
        for n in pairs:
            total += n * per_pair
            cumulative.append(total / 1e6)
        left.plot(range(len(pairs)), pairs, label=result["setting"])
        right.plot(range(len(pairs)), cumulative, label=f"{result['setting']} ({result['T_score'] / 1e6:.1f}m)")
    left.set_title("new T_score pairs asked per epoch")
    right.set_title("T_score tokens so far (millions)")
    right.axhline(5.5, color="grey", linestyle="--", linewidth=1)
    right.text(0, 5.6, "target 5.5m (half of Table 4's 11m)", fontsize=8, color="grey")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle(f"Amazon-books dry run, {data['epochs']} epochs, LightGCN + BPR, eps_l_max 0.05, eps_v 0.5 "
                 "(synthesized texts of the paper's lengths)", fontsize=9)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
