"""Training curves of runs as one PNG: validation NDCG@10, training loss, share of samples
dropped, and the noise detection of the dropped samples, per epoch."""

from __future__ import annotations

from pathlib import Path

from llmhd_cli import runs


def plot_runs(run_dirs: list[Path], output: Path) -> Path:
    """Draw every run's curves into ``output`` (PNG); returns the path written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = [runs.read_run(p) for p in run_dirs]
    panels = [
        ("validation NDCG@10", lambda r: (r.get("valid") or {}).get("ndcg@10")),
        ("training loss (per sample)", lambda r: r.get("loss")),
        ("samples dropped (%)", lambda r: 100 * r["dropped"] / r["samples"] if r.get("samples") else None),
        ("injected noise among dropped positives: F1", lambda r: (r.get("noise") or {}).get("f1")),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for ax, (title, value) in zip(axes.flat, panels):
        for record in records:
            points = [(row["epoch"], value(row)) for row in record.log]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                ax.plot(*zip(*points), marker=".", label=_label(record))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def _label(record: runs.RunRecord) -> str:
    c = record.config
    return f"{c.get('backbone')}/{c.get('objective')}/{c.get('denoiser')} seed {c.get('seed')}"
