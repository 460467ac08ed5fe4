"""An experiment spec expanded into runs and report cells.

Per dataset, method, backbone, objective and point of the method's axes there is one report
*cell*; per cell and seed one *run*. A point is one combination of the grid axes (every
combination) joined with one value of one sweep axis (each sweep axis alone, the others at
their base value), so a sweep's base setting can be one run shared by several cells.

A run's folder is ``<dataset>-<backbone>-<objective>-<denoiser>-s<seed>-<hash>``: the hash
is over its resolved config (denoiser options filled in with their defaults) without
``device`` and ``threads``, which say where a run runs, not what it is. The same config
always lands in the same folder, which is what makes `runner.run_grid` resumable.

Noise axes (``prepare.noise_ratio``, ``prepare.noise_source``, or the spec's ``[prepare]``)
train on a *derived* dataset: the base dataset prepared again with that noise, named
``<base>-<noise_source>-<ratio>`` (e.g. ``ml-100k-random-0.10``; a part the spec leaves out
is the base's own setting and left out of the name).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from llmhd_cli.config import TrainConfig, check_value
from llmhd_cli.errors import LLMHDError
from llmhd_cli.experiments.spec import (
    PREPARE_KEYS,
    ExperimentSpec,
    MethodSpec,
    _check_train_key,
    check_prepare_value,
)

NESTED = ("denoiser_params", "backbone_params", "prepare")
NOT_IDENTITY = ("device", "threads")  # where a run runs, not what it is: outside the hash


@dataclass
class PlannedRun:
    folder: str
    config: dict[str, Any]  # the TrainConfig as a dict; threads are set by the runner
    base_dataset: str
    prepare: dict[str, Any]  # noise settings of a derived dataset ({}: the base dataset itself)

    @property
    def dataset(self) -> str:
        return self.config["dataset"]


@dataclass
class Cell:
    """One row x column entry of the report: the runs of one setting over the seeds."""

    method: str
    dataset: str
    base_dataset: str
    backbone: str
    objective: str
    column: str  # the backbone whose column shows it (MethodSpec.column, else the backbone)
    axes: dict[str, Any]  # axis key -> value at this point (grid and sweep axes of the method)
    folders: list[str] = field(default_factory=list)  # one per seed, in the spec's seed order


@dataclass
class Plan:
    spec: ExperimentSpec
    runs: list[PlannedRun]  # unique by folder, in expansion order
    cells: list[Cell]

    def run(self, folder: str) -> PlannedRun:
        return self._by_folder[folder]

    def __post_init__(self) -> None:
        self._by_folder = {r.folder: r for r in self.runs}

    def axes(self) -> list[str]:
        """Every axis key of the experiment, in order of first appearance."""
        return list(dict.fromkeys(k for c in self.cells for k in c.axes))


def short(key: str) -> str:
    """An axis as shown: ``alpha``, not ``denoiser_params.alpha``."""
    table, _, rest = key.partition(".")
    return rest if table in NESTED and rest else key


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_label(axes: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{short(k)}={show_value(v)}" for k, v in axes.items() if k not in skip)


def derived_name(base: str, prepare: dict[str, Any]) -> str:
    """The name of ``base`` prepared with ``prepare``'s noise settings (``ml-100k-random-0.10``)."""
    parts = [base]
    if "noise_source" in prepare:
        parts.append(prepare["noise_source"])
    if "noise_ratio" in prepare:
        ratio = prepare["noise_ratio"]
        parts.append(f"{ratio:.2f}" if round(ratio, 2) == ratio else f"{ratio:g}")
    return "-".join(parts)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """What defines a run: its config without None values (TOML drops them) and without where it ran."""
    return {k: v for k, v in _drop_none(config).items() if k not in NOT_IDENTITY}


def run_key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity(config), sort_keys=True).encode()).hexdigest()[:12]


def same_config(planned: dict[str, Any], written: dict[str, Any]) -> bool:
    """Whether a run folder's config.toml is the planned run's. Options left unset in the plan
    (None defaults: the LLM provider, model) are filled in by the denoiser when it resolves
    them, so written options the plan does not hold are not compared."""
    given = set(planned.get("denoiser_params") or {})
    written = dict(written)
    if isinstance(written.get("denoiser_params"), dict):
        written["denoiser_params"] = {k: v for k, v in written["denoiser_params"].items() if k in given}
    return identity(planned) == identity(written)


# --------------------------------------------------------------------------- axes


def _resolve_axis(key: str, where: str, method: MethodSpec | None) -> str:
    """The axis key in its canonical form (see the module docstring of spec.py)."""
    kinds = TrainConfig.field_kinds()
    table, dot, name = key.partition(".")
    if dot:
        if table == "prepare":
            if name not in PREPARE_KEYS:
                raise LLMHDError(f"{where}: unknown key '{key}' (prepare axes: {', '.join('prepare.' + k for k in PREPARE_KEYS)})")
            return key
        if table == "denoiser_params":
            return key
        if table == "backbone_params":
            return key
        raise LLMHDError(f"{where}: unknown key '{key}' (dotted keys: prepare.NAME, denoiser_params.NAME, "
                         "backbone_params.NAME)")
    if key in kinds:
        if key in ("backbone_params",):
            raise LLMHDError(f"{where}: '{key}' is a table; sweep one of its keys as '{key}.NAME'")
        _check_train_key(key, where)
        return key
    if key in PREPARE_KEYS:
        return f"prepare.{key}"
    if method is not None:
        return f"denoiser_params.{key}"  # checked against the denoiser's options below
    raise LLMHDError(f"{where}: unknown key '{key}' (a train key, prepare.noise_ratio, prepare.noise_source, "
                     "denoiser_params.NAME or backbone_params.NAME; a denoiser's option belongs in its method's grid)")


def _check_axis_value(key: str, value: Any, where: str, method: MethodSpec) -> Any:
    """One axis value on its own, as the run will see it (ints given for floats become floats)."""
    from llmhd_cli import plugins
    from llmhd_cli.training import denoiser_options

    table, _, name = key.partition(".")
    label = f"{where}: '{key}' = {value!r}"
    try:
        if table == "prepare":
            return check_prepare_value(name, value, f"{where}")
        if table == "denoiser_params":
            spec = plugins.registry("denoiser").get(method.denoiser, "--denoiser")
            return denoiser_options(spec, {name: value})[name]
        if table == "backbone_params":
            return value  # types are RecBole's, checked when the run loads its data
        value = check_value(value, TrainConfig.field_kinds()[key], where, key)
        TrainConfig.from_dict({key: value})  # range checks (epochs >= 1, ...)
        return value
    except LLMHDError as exc:
        message = str(exc)
        if message.startswith(where):
            raise
        raise LLMHDError(f"{label}: {message}") from None


def _method_axes(spec: ExperimentSpec, method: MethodSpec) -> tuple[dict[str, list], dict[str, list]]:
    grid: dict[str, list] = {}
    sweep: dict[str, list] = {}
    sources = ((spec.grid, grid, spec.where("[grid]"), None), (spec.sweep, sweep, spec.where("[sweep]"), None),
               (method.grid, grid, spec.where(f"[[methods]] '{method.name}' grid"), method),
               (method.sweep, sweep, spec.where(f"[[methods]] '{method.name}' sweep"), method))
    for axes, target, where, owner in sources:
        for key, values in axes.items():
            canonical = _resolve_axis(key, where, owner)
            target[canonical] = [_check_axis_value(canonical, v, where, method) for v in values]
    both = sorted(set(grid) & set(sweep))
    if both:
        raise LLMHDError(f"{spec.path}: '{both[0]}' is both a grid and a sweep axis of method '{method.name}'")
    return grid, sweep


def _points(grid: dict[str, list], sweep: dict[str, list]) -> list[dict[str, Any]]:
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())] if grid else [{}]
    alone = [{key: v} for key, values in sweep.items() for v in values] or [{}]
    return [{**g, **s} for g in combos for s in alone]


# --------------------------------------------------------------------------- expansion


def expand(spec: ExperimentSpec) -> Plan:
    """Every run and cell of ``spec``, each run's config built and checked as `llmhd train` would."""
    from llmhd_cli import plugins
    from llmhd_cli.recbole_data import check_backbone_params
    from llmhd_cli.training import denoiser_options

    runs: dict[str, PlannedRun] = {}
    cells: list[Cell] = []
    checked_backbones: set[tuple[str, str]] = set()
    for method in spec.methods:
        where = spec.where(f"[[methods]] '{method.name}'")
        denoiser = plugins.registry("denoiser").get(method.denoiser, f"{where}: 'denoiser'")
        try:
            denoiser_options(denoiser, method.params)
        except LLMHDError as exc:
            raise LLMHDError(f"{where} params: {exc}") from None
        try:
            TrainConfig.from_dict({k: v for k, v in {**spec.train, **method.train}.items()})
        except LLMHDError as exc:
            raise LLMHDError(f"{where} train: {exc}") from None
        grid, sweep = _method_axes(spec, method)
        for base in spec.datasets:
            for backbone in method.backbones or spec.backbones:
                for objective in method.objectives or spec.objectives:
                    for point in _points(grid, sweep):
                        cell = Cell(method.name, "", base, backbone, objective, method.column or backbone, point)
                        for seed in spec.seeds:
                            run = _planned(spec, method, denoiser, base, backbone, objective, point, seed, where)
                            runs.setdefault(run.folder, run)
                            cell.dataset = run.dataset
                            cell.folders.append(run.folder)
                            params = run.config["backbone_params"]
                            if (backbone, json.dumps(params, sort_keys=True, default=str)) not in checked_backbones:
                                try:
                                    check_backbone_params(plugins.registry("backbone").get(backbone, "--backbone"), params)
                                except LLMHDError as exc:
                                    raise LLMHDError(f"{where} backbone_params: {exc}") from None
                                checked_backbones.add((backbone, json.dumps(params, sort_keys=True, default=str)))
                        cells.append(cell)
    return Plan(spec, list(runs.values()), cells)


def _planned(spec: ExperimentSpec, method: MethodSpec, denoiser: Any, base: str, backbone: str, objective: str,
             point: dict[str, Any], seed: int, where: str) -> PlannedRun:
    from llmhd_cli.training import denoiser_options

    train = {k: v for k, v in {**spec.train, **method.train}.items() if k != "backbone_params"}
    backbone_params = {**spec.train.get("backbone_params", {}), **method.train.get("backbone_params", {}),
                       **method.backbone_params}
    params = dict(method.params)
    prepare = dict(spec.prepare)
    for key, value in point.items():
        table, _, name = key.partition(".")
        target = {"denoiser_params": params, "backbone_params": backbone_params, "prepare": prepare}.get(table)
        if target is None:
            train[key] = value
        else:
            target[name] = value
    dataset = derived_name(base, prepare) if prepare else base
    config = {**train, "dataset": dataset, "backbone": backbone, "objective": objective, "denoiser": method.denoiser,
              "seed": seed, "backbone_params": backbone_params}
    label = f"{where} ({point_label(point)})" if point else where
    try:
        from llmhd_cli.workspace import check_name

        check_name(dataset, "derived dataset")
        # Defaults filled in (a changed default is a new run), unset ones left out as TOML leaves them.
        config["denoiser_params"] = {k: v for k, v in denoiser_options(denoiser, params).items() if v is not None}
        resolved = TrainConfig.from_dict(config, where=label).to_dict()
    except LLMHDError as exc:
        message = str(exc)
        raise LLMHDError(message if message.startswith(str(spec.path)) else f"{label}: {message}") from None
    folder = f"{dataset}-{backbone}-{objective}-{method.denoiser}-s{seed}-{run_key(resolved)}"
    return PlannedRun(folder, resolved, base, prepare)
