"""Training curves of runs as one image: validation NDCG@10, training loss, share of samples
dropped, and the noise detection of the dropped samples, per epoch; for runs whose denoiser
used an LLM (``denoiser.llm`` in log.jsonl, the llmhd judge's counters) also the LLM tokens
per epoch and the new pairs it needed scores for per epoch (whether the cost keeps growing)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llmhd_cli import runs
from llmhd_cli.errors import LLMHDError
from llmhd_cli.workspace import check_writable_dir


def image_formats() -> list[str]:
    """File extensions ``plot -o`` can write: matplotlib's Agg formats that work here."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = set(FigureCanvasAgg.get_supported_filetypes())
    if shutil.which(matplotlib.rcParams["pgf.texsystem"]) is None:
        formats.discard("pgf")  # needs a TeX installation to measure text; fails mid-save without one
    return sorted(formats)


def check_output(output: Path) -> Path:
    """``output`` if an image can be written there (known extension, writable place); writes nothing."""
    suffix = output.suffix.lower().lstrip(".")
    formats = image_formats()
    if suffix not in formats:
        got = f"'.{suffix}' is not an image format" if suffix else "no file extension"
        raise LLMHDError(f"-o {output}: {got} (known: {', '.join(formats)})")
    if os.path.lexists(output):
        if output.is_dir() or not os.access(output, os.W_OK):
            raise LLMHDError(f"-o {output}: cannot be overwritten ({'a folder' if output.is_dir() else 'not writable'})")
    try:
        check_writable_dir(output.parent, "folder")
    except LLMHDError as exc:
        raise LLMHDError(f"-o {output}: {exc}") from None
    return output


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _field(row: dict[str, Any], group: str, key: str) -> float | None:
    part = row.get(group)
    return _number(part.get(key)) if isinstance(part, dict) else None


def _dropped_share(row: dict[str, Any]) -> float | None:
    dropped, samples = _number(row.get("dropped")), _number(row.get("samples"))
    return 100 * dropped / samples if dropped is not None and samples else None


def _llm_tokens(row: dict[str, Any]) -> float | None:
    llm = row.get("denoiser", {}).get("llm") if isinstance(row.get("denoiser"), dict) else None
    if not isinstance(llm, dict):
        return None
    tokens = [_number(llm.get(k)) for k in ("input_tokens", "output_tokens")]
    return sum(t for t in tokens if t is not None)


def _llm_pairs(row: dict[str, Any]) -> float | None:
    llm = row.get("denoiser", {}).get("llm") if isinstance(row.get("denoiser"), dict) else None
    return _number(llm.get("score_requests")) if isinstance(llm, dict) else None


def plot_runs(run_dirs: list[Path], output: Path) -> Path:
    """Draw every run's curves into ``output`` (its extension picks the format); returns the path written.

    Everything is checked (the output place, every run folder) before the file is written, and
    the image goes to a temporary file renamed into place: a failure leaves no partial file.
    """
    check_output(output)
    records = [runs.read_run(p) for p in run_dirs]
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [
        ("validation NDCG@10", lambda r: _field(r, "valid", "ndcg@10")),
        ("training loss (per sample)", lambda r: _number(r.get("loss"))),
        ("samples dropped (%)", _dropped_share),
        ("injected noise among dropped positives: F1", lambda r: _field(r, "noise", "f1")),
    ]
    if any(_llm_tokens(row) is not None for record in records for row in record.log):
        panels += [("LLM tokens per epoch (in + out)", _llm_tokens),
                   ("new pairs scored per epoch (LLM requests)", _llm_pairs)]
    fig, axes = plt.subplots(len(panels) // 2, 2, figsize=(11, 3.75 * (len(panels) // 2)), constrained_layout=True)
    try:
        for ax, (title, value) in zip(axes.flat, panels, strict=False):
            for record in records:
                points = [(row["epoch"], value(row)) for row in record.log]
                points = [(x, y) for x, y in points if y is not None]
                if points:
                    ax.plot(*zip(*points, strict=True), marker=".", label=_label(record))
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        if axes.flat[0].get_legend_handles_labels()[0]:
            axes.flat[0].legend(fontsize=8)
        _save(fig, output)
    finally:
        plt.close(fig)
    return output


def _save(fig: Any, output: Path) -> None:
    top = output.parent.absolute()  # the topmost folder this creates, removed again on failure
    while not top.parent.exists():
        top = top.parent
    made = None if top.exists() else top
    tmp = None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the image should not be
        fig.savefig(tmp, dpi=120, format=output.suffix.lower().lstrip("."))
        os.replace(tmp, output)
    except (OSError, RuntimeError, ValueError) as exc:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise LLMHDError(f"-o {output}: cannot write the image ({getattr(exc, 'strerror', None) or exc})") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _label(record: runs.RunRecord) -> str:
    c = record.config
    return f"{c.get('backbone')}/{c.get('objective')}/{c.get('denoiser')} seed {c.get('seed')}"
