"""An experiment's results: the combined table in the paper's layout, and its figures.

Table (one per dataset trained on): rows are methods (with the objective when the experiment
has several, and the axis values of the row's point), columns are backbone x metric. A cell
is the mean and std over the seeds' finished runs. Per column the best mean is marked, and the
runner-up; runs whose LLM read held-out labels (evaluation's leak) are marked in every format
and never ranked. With a baseline (``[report] baseline`` or ``--baseline``, evaluate's SPEC)
every cell gets Welch's p over seeds and the paired test's p over test users from
`evaluation.group_rows`, within each dataset/backbone/objective block the SPEC does not name;
a cell with paired p below ``significance`` is starred.

Figures (`plot`): every numeric axis against the metrics (Fig. 3 for the noise ratio, Fig. 4
for each hyperparameter, the judge-accuracy sweep), methods without that axis drawn as
horizontal references; and the noise-detection precision/recall of each row.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmhd_cli.errors import LLMHDError
from llmhd_cli.evaluation import METRICS, RunEvaluation
from llmhd_cli.experiments.grid import Cell, Plan, point_label, short

FORMATS = ("markdown", "csv", "json", "latex")
SHORT_METRICS = {"recall@5": "R@5", "recall@10": "R@10", "ndcg@5": "N@5", "ndcg@10": "N@10"}
BACKBONE_NAMES = {"ngcf": "NGCF", "lightgcn": "LightGCN", "sgl": "SGL", "ncl": "NCL", "rgcf": "RGCF"}
BLOCK_KEYS = ("dataset", "backbone", "objective")  # evaluate's baseline blocks: those a SPEC does not name
NOISE_KEYS = {"precision": "noise P", "recall": "noise R", "f1": "noise F1", "kept_hard": "noise kept hard"}


@dataclass
class CellResult:
    cell: Cell
    runs: list[RunEvaluation]  # the finished ones
    leak: bool = False
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)  # means of the final epoch's detection
    p_welch: dict[str, float] = field(default_factory=dict)
    p_paired: dict[str, float] = field(default_factory=dict)
    baseline: str | None = None  # "(baseline)" for the baseline itself; None without one
    rank: dict[str, int] = field(default_factory=dict)  # 1 best, 2 runner-up, per metric in its table

    @property
    def planned(self) -> int:
        return len(self.cell.folders)

    def significant(self, metric: str, level: float) -> bool:
        p = self.p_paired.get(metric, math.nan)
        return self.baseline not in (None, "(baseline)") and p == p and p < level


@dataclass
class Row:
    label: str
    method: str
    objective: str
    axes: dict[str, Any]
    leak: bool
    cells: dict[str, CellResult] = field(default_factory=dict)  # column (backbone) -> cell


@dataclass
class ReportTable:
    dataset: str
    columns: list[str]
    rows: list[Row]


@dataclass
class Results:
    plan: Plan
    cells: list[CellResult]
    baseline: str | None
    paired_test: str
    significance: float
    notes: list[str] = field(default_factory=list)
    unfinished: int = 0

    @property
    def paired_name(self) -> str:
        return "paired t-test" if self.paired_test == "t" else "Wilcoxon signed-rank test"


# --------------------------------------------------------------------------- collecting


def collect(workspace: Path, plan: Plan, baseline: str | None = None, paired_test: str | None = None,
            significance: float | None = None) -> Results:
    """The finished runs of ``plan`` as cells with their statistics (``baseline`` etc. default
    to the spec's ``[report]``)."""
    from llmhd_cli.evaluation import evaluate_runs, parse_baseline
    from llmhd_cli.experiments.runner import iter_finished

    report = plan.spec.report
    baseline = baseline if baseline is not None else report.baseline
    paired_test = paired_test or report.paired_test
    significance = report.significance if significance is None else significance
    spec = parse_baseline(baseline) if baseline else None
    paths = {run.folder: path for run, path in iter_finished(workspace, plan)}
    if not paths:
        raise LLMHDError(f"{plan.spec.path}: no run of experiment '{plan.spec.name}' has finished yet; "
                         f"run: llmhd experiment run {plan.spec.path}")
    folders = [r.folder for r in plan.runs if r.folder in paths]
    evaluations = {f: e for f, e in zip(folders, evaluate_runs([paths[f] for f in folders], workspace), strict=True)}
    results = Results(plan, [], baseline, paired_test, significance)
    results.unfinished = len(plan.runs) - len(folders)
    if results.unfinished:
        results.notes.append(f"{results.unfinished} of {len(plan.runs)} planned runs have not finished and are left "
                             f"out; run: llmhd experiment run {plan.spec.path}")
    stats = _statistics(list(evaluations.values()), spec, paired_test, results.notes) if spec else {}
    for cell in plan.cells:
        runs = [evaluations[f] for f in cell.folders if f in evaluations]
        if not runs:
            continue
        result = CellResult(cell, runs, leak=any(e.leak for e in runs))
        for metric in METRICS:
            values = np.array([e.row[metric] for e in runs if metric in e.row], dtype=float)
            result.mean[metric] = float(values.mean()) if len(values) else math.nan
            result.std[metric] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        for key, column in NOISE_KEYS.items():
            values = np.array([e.row.get(column, np.nan) for e in runs], dtype=float)
            result.noise[key] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        row = stats.get(str(runs[0].path))
        if row is not None:
            result.baseline = row.get("baseline")
            for metric in METRICS:
                result.p_welch[metric] = row.get(f"p welch {metric}", math.nan)
                result.p_paired[metric] = row.get(f"p paired-{paired_test} {metric}", math.nan)
        results.cells.append(result)
    tables(results)  # fills in the ranks
    return results


def _statistics(evaluations: list[RunEvaluation], spec: Any, paired_test: str, notes: list[str]) -> dict[str, dict]:
    """evaluate's group row (p-values, baseline label) of every run, by its path.

    Blocks are evaluated on their own so that one without a matching baseline (RGCF, its own
    backbone, beside ``denoiser=none``) leaves its cells without p-values instead of failing
    the whole report."""
    from llmhd_cli.evaluation import group_rows, make_groups

    named = set(spec.pairs) if spec.run_dir is None else set(BLOCK_KEYS)
    keys = [k for k in BLOCK_KEYS if k not in named]
    blocks: dict[tuple, list[RunEvaluation]] = {}
    for e in evaluations:
        blocks.setdefault(tuple(e.config.get(k) for k in keys), []).append(e)
    out: dict[str, dict] = {}
    for block, members in blocks.items():
        try:
            rows = group_rows(members, spec, paired_test)
        except LLMHDError as exc:
            # Only "this block has no such setting" is survivable; an ambiguous SPEC is the user's to fix.
            if not any(m in str(exc) for m in ("no setting matches", "not among the runs", "no run has a setting")):
                raise
            notes.append(f"no baseline '{spec.text}' among {'/'.join(map(str, block))}: no p-values there")
            continue
        for group, row in zip(make_groups(members), rows, strict=True):  # group_rows keeps make_groups' order
            for member in group.members:
                out[str(member.path)] = row
    return out


# --------------------------------------------------------------------------- tables


def _display(backbone: str) -> str:
    return BACKBONE_NAMES.get(backbone, backbone)


def tables(results: Results) -> list[ReportTable]:
    """One table per dataset trained on; ranks are written into the cells."""
    plan = results.plan
    objectives = {c.cell.objective for c in results.cells}
    out: dict[str, ReportTable] = {}
    for result in results.cells:
        cell = result.cell
        table = out.setdefault(cell.dataset, ReportTable(cell.dataset, [], []))
        if cell.column not in table.columns:
            table.columns.append(cell.column)
        axes = {k: v for k, v in cell.axes.items() if not k.startswith("prepare.")}  # prepare: the dataset
        key = (cell.method, cell.objective, json.dumps(axes, sort_keys=True, default=str))
        row = next((r for r in table.rows if (r.method, r.objective, json.dumps(r.axes, sort_keys=True, default=str)) == key),
                   None)
        if row is None:
            label = cell.method + (f" ({cell.objective.upper()})" if len(objectives) > 1 else "")
            if axes:
                label += f", {point_label(axes)}"
            row = Row(label, cell.method, cell.objective, axes, result.leak)
            table.rows.append(row)
        row.leak = row.leak or result.leak
        row.cells[cell.column] = result
    order = {b: i for i, b in enumerate(dict.fromkeys([*plan.spec.backbones, *(c.column for c in plan.cells)]))}
    for table in out.values():
        table.columns.sort(key=lambda b: order.get(b, len(order)))
        for column in table.columns:
            for metric in METRICS:
                ranked = sorted({r.cells[column].mean[metric] for r in table.rows if column in r.cells and not r.leak
                                 and r.cells[column].mean[metric] == r.cells[column].mean[metric]}, reverse=True)
                for r in table.rows:
                    c = r.cells.get(column)
                    if c is not None:
                        c.rank.pop(metric, None)
                        if not r.leak and c.mean[metric] in ranked[:2]:
                            c.rank[metric] = ranked.index(c.mean[metric]) + 1
    return list(out.values())


def legend(results: Results) -> list[str]:
    lines = ["mean ± std over seeds; best per column in bold, runner-up underlined (leaking runs never ranked)"]
    if results.baseline:
        lines.append(f"* {results.paired_name} over test users, two-sided p < {results.significance:g}, against "
                     f"'{results.baseline}' in the same dataset/backbone/objective; sign: compare the means")
    if any(c.leak for c in results.cells):
        lines.append("leak: the run's LLM read held-out labels (its provider's leaky_models); an upper bound, "
                     "not a result")
    return lines + results.notes


def render(results: Results, fmt: str) -> str:
    if fmt == "markdown":
        return _markdown(results)
    if fmt == "latex":
        return _latex(results)
    rows = long_rows(results)
    if fmt == "json":
        clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows]
        return json.dumps(clean, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    raise ValueError(fmt)


def long_rows(results: Results) -> list[dict[str, Any]]:
    """One row per cell and metric (csv, json)."""
    out = []
    paired = f"p paired-{results.paired_test}"
    for table in tables(results):
        for row in table.rows:
            for column in table.columns:
                c = row.cells.get(column)
                if c is None:
                    continue
                for metric in METRICS:
                    out.append({
                        "dataset": c.cell.dataset, "base_dataset": c.cell.base_dataset, "objective": c.cell.objective,
                        "method": c.cell.method, "row": row.label, "setting": point_label(c.cell.axes),
                        "backbone": c.cell.backbone, "column": column, "metric": metric,
                        "mean": c.mean[metric], "std": c.std[metric], "runs": len(c.runs), "planned": c.planned,
                        "seeds": ",".join(str(e.config.get("seed")) for e in c.runs), "leak": c.leak,
                        "rank": c.rank.get(metric), "baseline": c.baseline, "p welch": c.p_welch.get(metric, math.nan),
                        paired: c.p_paired.get(metric, math.nan),
                        "significant": c.significant(metric, results.significance),
                        "noise P": c.noise["precision"], "noise R": c.noise["recall"], "noise F1": c.noise["f1"],
                    })
    return out


def cell_text(c: CellResult, metric: str, level: float) -> tuple[str, str, str]:
    """(mean, std, marks) as plain text: std '' for one run, marks '*' when significant."""
    mean, std = c.mean[metric], c.std[metric]
    return ("-" if mean != mean else f"{mean:.4f}", "" if std != std else f"{std:.4f}",
            "*" if c.significant(metric, level) else "")


def _markdown(results: Results) -> str:
    lines = []
    for table in tables(results):
        lines += [f"### {table.dataset}", ""]
        header = ["method"] + [f"{_display(b)} {SHORT_METRICS[m]}" for b in table.columns for m in METRICS]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * (len(header) - 1))
        for row in table.rows:
            cells = [row.label + (" (leak)" if row.leak else "")]
            for column in table.columns:
                for metric in METRICS:
                    c = row.cells.get(column)
                    if c is None:
                        cells.append("")
                        continue
                    mean, std, mark = cell_text(c, metric, results.significance)
                    rank = c.rank.get(metric)
                    mean = f"**{mean}**" if rank == 1 else f"<u>{mean}</u>" if rank == 2 else mean
                    cells.append(mean + mark.replace("*", "\\*") + (f" ± {std}" if std else ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"- {line}" for line in legend(results)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex(results: Results) -> str:
    out = ["% generated by llmhd experiment report; needs \\usepackage{booktabs}"]
    for table in tables(results):
        n = len(METRICS)
        out += [r"\begin{table}[t]", r"\centering", r"\small",
                r"\caption{" + _tex(f"{results.plan.spec.name}: {table.dataset}") + "}",
                r"\begin{tabular}{l" + ("c" * n) * len(table.columns) + "}", r"\toprule"]
        out.append(" & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{_tex(_display(b))}}}" for b in table.columns)
                   + r" \\")
        out.append(" ".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(table.columns))))
        out.append("Method & " + " & ".join(SHORT_METRICS[m] for _ in table.columns for m in METRICS) + r" \\")
        out.append(r"\midrule")
        for row in table.rows:
            cells = [_tex(row.label) + (r"$^{\dagger}$" if row.leak else "")]
            for column in table.columns:
                for metric in METRICS:
                    c = row.cells.get(column)
                    if c is None:
                        cells.append("--")
                        continue
                    mean, std, mark = cell_text(c, metric, results.significance)
                    rank = c.rank.get(metric)
                    body = rf"\mathbf{{{mean}}}" if rank == 1 else rf"\underline{{{mean}}}" if rank == 2 else mean
                    cells.append(f"${body}" + ("^{*}" if mark else "") + (rf"_{{\pm {std}}}" if std else "") + "$")
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    out += [f"% {_tex(line)}" for line in legend(results)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- figures


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)


def plot(results: Results, folder: Path) -> list[Path]:
    """Write the experiment's figures into ``folder`` as PNG; returns the files written."""
    from llmhd_cli.workspace import check_writable_dir

    check_writable_dir(folder, "--plots")
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    blocks: dict[tuple[str, str, str], list[CellResult]] = {}
    for c in results.cells:
        # By column, not backbone: a method shown under another backbone (RGCF under LightGCN) is drawn there too.
        blocks.setdefault((c.cell.base_dataset, c.cell.column, c.cell.objective), []).append(c)
    for axis in results.plan.axes():
        for (base, backbone, objective), cells in blocks.items():
            varying = [c for c in cells if axis in c.cell.axes]
            if not varying or not _numeric([c.cell.axes[axis] for c in varying]):
                continue
            path = folder / _slug(f"{short(axis)}-{base}-{backbone}-{objective}.png")
            _axis_figure(plt, results, axis, varying, [c for c in cells if axis not in c.cell.axes],
                         f"{base} · {_display(backbone)} · {objective.upper()}", path)
            written.append(path)
    for (_base, backbone, objective), cells in blocks.items():
        by_dataset: dict[str, list[CellResult]] = {}
        for c in cells:
            by_dataset.setdefault(c.cell.dataset, []).append(c)
        for dataset, group in by_dataset.items():
            detected = [c for c in group if c.noise["precision"] == c.noise["precision"]]
            if not detected:
                continue
            path = folder / _slug(f"noise-detection-{dataset}-{backbone}-{objective}.png")
            _detection_figure(plt, detected, f"{dataset} · {_display(backbone)} · {objective.upper()}", path)
            written.append(path)
    return written


def _series_label(c: CellResult, axis: str) -> str:
    rest = point_label(c.cell.axes, skip=(axis,))
    return c.cell.method + (f" ({rest})" if rest else "") + (" [leak]" if c.leak else "")


def _axis_figure(plt: Any, results: Results, axis: str, varying: list[CellResult], others: list[CellResult],
                 title: str, path: Path) -> None:
    series: dict[str, list[CellResult]] = {}
    for c in varying:
        series.setdefault(_series_label(c, axis), []).append(c)
    references: dict[str, list[CellResult]] = {}
    for c in others:
        references.setdefault(_series_label(c, axis), []).append(c)
    fig, grid = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    try:
        for ax, metric in zip(grid.flat, METRICS, strict=False):
            for label, members in series.items():
                members = sorted(members, key=lambda c: c.cell.axes[axis])
                x = [c.cell.axes[axis] for c in members]
                y = [c.mean[metric] for c in members]
                err = [0 if c.std[metric] != c.std[metric] else c.std[metric] for c in members]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
            for i, (label, members) in enumerate(references.items()):
                if len(members) == 1:  # one setting: a horizontal reference line
                    ax.axhline(members[0].mean[metric], linestyle="--", color=f"C{(len(series) + i) % 10}",
                               label=label)
            ax.set_title(SHORT_METRICS[metric])
            ax.set_xlabel(short(axis))
            ax.grid(alpha=0.3)
        handles, labels = grid.flat[0].get_legend_handles_labels()
        if handles:
            grid.flat[0].legend(fontsize=8)
        # Two lines: one would run past the figure's edges for a long experiment name.
        fig.suptitle(f"{results.plan.spec.name}: metrics vs {short(axis)} ({title})\n"
                     "mean ± std over seeds; dashed: settings without this axis")
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _detection_figure(plt: Any, cells: list[CellResult], title: str, path: Path) -> None:
    labels = [c.cell.method + (f" ({point_label(c.cell.axes)})" if c.cell.axes else "") for c in cells]
    x = np.arange(len(cells))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cells) + 2), 4.5), constrained_layout=True)
    try:
        for offset, (key, name) in zip((-0.2, 0.2), (("precision", "precision"), ("recall", "recall")), strict=True):
            ax.bar(x + offset, [c.noise[key] for c in cells], width=0.4, label=name)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("final epoch's dropped positives vs injected noise")
        ax.set_ylim(0, 1)
        ax.legend()
        ax.set_title(f"noise detection: {title} (mean over seeds)")
        ax.grid(alpha=0.3, axis="y")
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
