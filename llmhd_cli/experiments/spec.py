"""The experiment file: which datasets, backbones, objectives, methods, seeds and grid axes.

An experiment is one TOML file (examples in examples/experiments/)::

    name = "fig3-noise"                 # default: the file's stem
    datasets = ["ml-100k"]
    backbones = ["lightgcn"]            # default ["lightgcn"]
    objectives = ["bpr"]                # default ["bpr"]
    seeds = [2024, 2025, 2026]          # default [2024]

    [train]                             # train settings shared by every run (config.toml keys)
    epochs = 30

    [prepare]                           # noise of derived datasets (one per value, see grid.py)
    noise_source = "random"

    [grid]                              # every combination of these (all methods)
    "prepare.noise_ratio" = [0.05, 0.10, 0.15, 0.20]

    [sweep]                             # each axis alone, the others at their base value

    [report]
    baseline = "denoiser=none"          # significance against it (evaluate's --baseline SPEC)

    [[methods]]                         # the table's rows
    name = "T-CE"
    denoiser = "tce"
    params = { drop_rate = 0.2, num_gradual = 500 }   # denoiser options
    # backbone_params, train, backbones, objectives, column, grid, sweep: see MethodSpec

Axis keys: a train key (``epochs``, ``learning_rate``), ``denoiser_params.NAME``,
``backbone_params.NAME``, ``prepare.noise_ratio`` or ``prepare.noise_source``; in a method's
own grid/sweep a bare name that is not a train key is one of its denoiser's options.

`load_spec` checks the file's structure and every value's type; `grid.expand` then builds
every run's config through `TrainConfig` and the plugin registries. Either way a mistake is
one `LLMHDError` line naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhd_cli.config import TrainConfig, check_value, read_toml
from llmhd_cli.errors import LLMHDError

# Keys a run gets from the spec's lists and methods, never from [train] or an axis.
IDENTITY_KEYS = ("dataset", "backbone", "objective", "denoiser", "seed", "denoiser_params")
RUNNER_KEYS = ("threads",)  # set per run by the runner (--workers / --threads)
PREPARE_KEYS = {"noise_ratio": float, "noise_source": str}
TOP_KEYS = ("name", "description", "datasets", "backbones", "objectives", "seeds", "train", "prepare", "grid",
            "sweep", "report", "methods")
METHOD_KEYS = ("name", "denoiser", "params", "backbone_params", "train", "backbones", "objectives", "column",
               "grid", "sweep")
REPORT_KEYS = {"baseline": str, "paired_test": str, "significance": float}
PAIRED_TESTS = ("t", "wilcoxon")


@dataclass
class MethodSpec:
    """One row family of the table: a denoiser with its settings (and optional overrides).

    ``backbones`` / ``objectives`` replace the experiment's lists for this method (RGCF is its
    own backbone); ``column`` shows its runs under another backbone's columns (RGCF under
    LightGCN, whose propagation it uses). ``grid`` / ``sweep`` add axes to this method only.
    """

    name: str
    denoiser: str
    params: dict[str, Any] = field(default_factory=dict)
    backbone_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    backbones: list[str] | None = None
    objectives: list[str] | None = None
    column: str | None = None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class ReportSettings:
    baseline: str | None = None
    paired_test: str = "t"
    significance: float = 0.05


@dataclass
class ExperimentSpec:
    path: Path
    name: str
    datasets: list[str]
    methods: list[MethodSpec]
    backbones: list[str] = field(default_factory=lambda: ["lightgcn"])
    objectives: list[str] = field(default_factory=lambda: ["bpr"])
    seeds: list[int] = field(default_factory=lambda: [2024])
    description: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    report: ReportSettings = field(default_factory=ReportSettings)
    text: str = ""  # the file as read, copied next to the runs

    def where(self, section: str = "") -> str:
        return f"{self.path} {section}".strip()


def load_spec(path: Path | str) -> ExperimentSpec:
    """Read and check an experiment file (structure and types; `grid.expand` checks the rest)."""
    from llmhd_cli.workspace import check_name

    path = Path(path)
    data = read_toml(path, "experiment file")
    where = str(path)
    _unknown(data, TOP_KEYS, where)
    name = check_value(data.get("name", path.stem), str, where, "name")
    check_name(name, f"{where}: 'name'", "experiment")
    datasets = _str_list(data, "datasets", where, required=True)
    for dataset in datasets:
        check_name(dataset, f"{where}: 'datasets'")
    backbones = _str_list(data, "backbones", where) or ["lightgcn"]
    objectives = _str_list(data, "objectives", where) or ["bpr"]
    seeds = _seeds(data, where)
    spec = ExperimentSpec(
        path=path, name=name, datasets=datasets, methods=[], backbones=backbones, objectives=objectives, seeds=seeds,
        description=check_value(data.get("description", ""), str, where, "description"),
        train=_train_table(data.get("train", {}), f"{where} [train]"),
        prepare=_prepare_table(data.get("prepare", {}), f"{where} [prepare]"),
        grid=_axes(data.get("grid", {}), f"{where} [grid]"),
        sweep=_axes(data.get("sweep", {}), f"{where} [sweep]"),
        report=_report(data.get("report", {}), f"{where} [report]"),
        text=path.read_text(encoding="utf-8"),
    )
    _check_registered("backbone", backbones, where, "backbones")
    _check_objectives(objectives, where, "objectives")
    methods = data.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, dict) for m in methods):
        raise LLMHDError(f"{where}: 'methods' must be an array of tables ([[methods]]), at least one")
    seen: set[str] = set()
    for number, table in enumerate(methods, 1):
        method = _method(table, where, number)
        if method.name in seen:
            raise LLMHDError(f"{where}: [[methods]] name '{method.name}' given twice; names label the table's rows")
        seen.add(method.name)
        spec.methods.append(method)
    return spec


# --------------------------------------------------------------------------- pieces


def _unknown(data: dict[str, Any], known: tuple[str, ...] | dict, where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise LLMHDError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(known)})")


def _str_list(data: dict[str, Any], key: str, where: str, required: bool = False) -> list[str]:
    if key not in data:
        if required:
            raise LLMHDError(f"{where}: '{key}' is missing (a list of names)")
        return []
    value = data[key]
    if not isinstance(value, list) or not value:
        raise LLMHDError(f"{where}: '{key}' must be a non-empty array of strings, got {value!r}")
    for item in value:
        check_value(item, str, where, key)
    if len(set(value)) < len(value):
        raise LLMHDError(f"{where}: '{key}' lists a name twice")
    return list(value)


def _seeds(data: dict[str, Any], where: str) -> list[int]:
    value = data.get("seeds", [2024])
    if not isinstance(value, list) or not value:
        raise LLMHDError(f"{where}: 'seeds' must be a non-empty array of integers, got {value!r}")
    for seed in value:
        check_value(seed, int, where, "seeds")
        if not 0 <= seed < 2**32:
            raise LLMHDError(f"{where}: 'seeds' must be in [0, 2^32), got {seed}")
    if len(set(value)) < len(value):
        raise LLMHDError(f"{where}: 'seeds' lists a seed twice")
    return list(value)


def _train_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LLMHDError(f"{where}: must be a table")
    for key in value:
        _check_train_key(key, where)
    return TrainConfig.check_keys(value, where)


def _check_train_key(key: str, where: str) -> None:
    if key in IDENTITY_KEYS:
        hint = {"dataset": "datasets", "backbone": "backbones", "objective": "objectives", "seed": "seeds",
                "denoiser": "[[methods]] denoiser", "denoiser_params": "[[methods]] params"}[key]
        raise LLMHDError(f"{where}: '{key}' is set by the experiment's '{hint}', not here")
    if key in RUNNER_KEYS:
        raise LLMHDError(f"{where}: '{key}' is set per run by `llmhd experiment run` (--workers, --threads)")


def _prepare_table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LLMHDError(f"{where}: must be a table")
    _unknown(value, PREPARE_KEYS, where)
    return {key: check_prepare_value(key, v, where) for key, v in value.items()}


def check_prepare_value(key: str, value: Any, where: str) -> Any:
    """A noise setting of a derived dataset, checked as `llmhd prepare` checks its flag."""
    import math

    from llmhd_cli.prepare import NOISE_SOURCES

    value = check_value(value, PREPARE_KEYS[key], where, key)
    if key == "noise_ratio" and not (math.isfinite(value) and 0 <= value <= 1):
        raise LLMHDError(f"{where}: 'noise_ratio' must be between 0 and 1, got {value}")
    if key == "noise_source" and value not in NOISE_SOURCES:
        raise LLMHDError(f"{where}: 'noise_source' must be one of {', '.join(NOISE_SOURCES)}, got '{value}'")
    return value


def _axes(value: Any, where: str) -> dict[str, list[Any]]:
    """Axis name -> its values; names are resolved (and values checked) by `grid.expand`."""
    if not isinstance(value, dict):
        raise LLMHDError(f"{where}: must be a table of key = [values]")
    out = {}
    for key, values in value.items():
        if isinstance(values, dict):  # [grid.denoiser_params] written as a sub-table
            for sub, inner in values.items():
                out[f"{key}.{sub}"] = _axis_values(inner, where, f"{key}.{sub}")
            continue
        out[key] = _axis_values(values, where, key)
    return out


def _axis_values(values: Any, where: str, key: str) -> list[Any]:
    if not isinstance(values, list) or not values:
        raise LLMHDError(f"{where}: '{key}' must be a non-empty array of values, got {values!r}")
    if any(isinstance(v, (dict, list)) for v in values):
        raise LLMHDError(f"{where}: '{key}' values must be plain values (numbers, strings, booleans)")
    if len({repr(v) for v in values}) < len(values):
        raise LLMHDError(f"{where}: '{key}' lists a value twice")
    return list(values)


def _report(value: Any, where: str) -> ReportSettings:
    if not isinstance(value, dict):
        raise LLMHDError(f"{where}: must be a table")
    _unknown(value, REPORT_KEYS, where)
    checked = {k: check_value(v, REPORT_KEYS[k], where, k) for k, v in value.items()}
    report = ReportSettings(**checked)
    if report.paired_test not in PAIRED_TESTS:
        raise LLMHDError(f"{where}: 'paired_test' must be one of {', '.join(PAIRED_TESTS)}, got '{report.paired_test}'")
    if not 0 < report.significance < 1:
        raise LLMHDError(f"{where}: 'significance' must be between 0 and 1, got {report.significance}")
    if report.baseline is not None:
        from llmhd_cli.evaluation import parse_baseline

        try:
            parse_baseline(report.baseline)
        except LLMHDError as exc:
            raise LLMHDError(f"{where}: 'baseline': {exc}") from None
    return report


def _method(table: dict[str, Any], where: str, number: int) -> MethodSpec:
    label = f"{where} [[methods]] #{number}"
    _unknown(table, METHOD_KEYS, label)
    if "denoiser" not in table:
        raise LLMHDError(f"{label}: 'denoiser' is missing")
    denoiser = check_value(table["denoiser"], str, label, "denoiser")
    name = check_value(table.get("name", denoiser), str, label, "name")
    label = f"{where} [[methods]] '{name}'"
    _check_registered("denoiser", [denoiser], label, "denoiser")
    tables = {}
    for key in ("params", "backbone_params"):
        value = table.get(key, {})
        if not isinstance(value, dict):
            raise LLMHDError(f"{label}: '{key}' must be a table")
        tables[key] = value
    backbones = _str_list(table, "backbones", label) or None
    objectives = _str_list(table, "objectives", label) or None
    if backbones:
        _check_registered("backbone", backbones, label, "backbones")
    if objectives:
        _check_objectives(objectives, label, "objectives")
    column = table.get("column")
    if column is not None:
        check_value(column, str, label, "column")
        _check_registered("backbone", [column], label, "column")
    train = _train_table(table.get("train", {}), f"{label} train")
    return MethodSpec(name=name, denoiser=denoiser, params=tables["params"], backbone_params=tables["backbone_params"],
                      train=train, backbones=backbones, objectives=objectives, column=column,
                      grid=_axes(table.get("grid", {}), f"{label} grid"),
                      sweep=_axes(table.get("sweep", {}), f"{label} sweep"))


def _check_registered(kind: str, names: list[str], where: str, key: str) -> None:
    from llmhd_cli import plugins

    registry = plugins.registry(kind)
    for name in names:
        registry.get(name, f"{where}: '{key}'")


def _check_objectives(names: list[str], where: str, key: str) -> None:
    from llmhd_cli.objectives import OBJECTIVES

    for name in names:
        if name not in OBJECTIVES:
            raise LLMHDError(f"{where}: '{key}': unknown objective '{name}' (known: {', '.join(OBJECTIVES)})")
