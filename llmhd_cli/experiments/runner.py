"""Running an experiment's grid: derived datasets, user profiles, then every run not yet done.

Layout::

    <workspace>/experiments/<name>/
        spec.toml      the experiment file as last run
        plan.json      every run (folder, dataset, config) and cell (method, axes, folders)
        run.lock       held while `llmhd experiment run` runs (pid, host)
        runs/<folder>/ ordinary run directories (see llmhd_cli.runs), named by grid.run_key

Resuming: a run whose folder holds metrics.json (written last by training) and the planned
config is done and skipped; any other folder of a planned run is removed and the run redone.
A crash or Ctrl-C therefore loses only the runs in progress.

Backends: in this process (``workers=1``), a pool of spawned local processes (``workers>1``),
or Ray tasks on an existing cluster (``ray=ADDRESS``; every node must see the workspace path,
as on a shared filesystem). Each run is pinned to its share of threads:
``max(1, cores // workers)`` locally, ``cpus_per_run`` on Ray.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmhd_cli.errors import LLMHDError
from llmhd_cli.experiments.grid import Plan, PlannedRun, same_config
from llmhd_cli.workspace import experiments_dir

log = logging.getLogger(__name__)

LLM_COUNTERS = ("calls", "input_tokens", "output_tokens", "cost")


def experiment_dir(workspace: Path, name: str) -> Path:
    return experiments_dir(Path(workspace)) / name


def runs_root(workspace: Path, name: str) -> Path:
    return experiment_dir(workspace, name) / "runs"


# --------------------------------------------------------------------------- run state


def run_state(folder: Path, run: PlannedRun) -> str:
    """``done`` (metrics.json and the planned config), ``partial`` (a folder, anything else) or ``todo``."""
    from llmhd_cli import runs
    from llmhd_cli.config import read_toml

    if not folder.exists():
        return "todo"
    if not (folder / runs.METRICS).is_file() or not (folder / runs.CONFIG).is_file():
        return "partial"
    try:
        written = read_toml(folder / runs.CONFIG, "run config")
    except LLMHDError:
        return "partial"
    return "done" if same_config(run.config, written) else "partial"


def plan_states(workspace: Path, plan: Plan) -> dict[str, str]:
    root = runs_root(workspace, plan.spec.name)
    return {r.folder: run_state(root / r.folder, r) for r in plan.runs}


# --------------------------------------------------------------------------- one run


@dataclass
class RunTask:
    """Everything a worker process (or a Ray task) needs: plain data, picklable."""

    workspace: str
    run_dir: str
    config: dict[str, Any]


@dataclass
class RunOutcome:
    folder: str
    ok: bool
    error: str = ""
    seconds: float = 0.0
    test: dict[str, float] = field(default_factory=dict)
    worker: str = field(default_factory=lambda: worker_name())  # host:pid of the process that trained it


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def execute(task: RunTask, observer: Any = None) -> RunOutcome:
    """Train one planned run into its folder (removed first if a previous attempt left it)."""
    from llmhd_cli.config import TrainConfig
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.training import train
    from llmhd_cli.workspace import runs_dir

    folder = Path(task.run_dir)
    start = time.perf_counter()
    try:
        if folder.exists():
            shutil.rmtree(folder)
        config = TrainConfig.from_dict(task.config, where=str(folder))
        dataset = open_dataset(Path(task.workspace), config.dataset)
        # runs_root is the workspace's: train takes the LLM cache's workspace from its parent.
        result = train(config, dataset, runs_dir(Path(task.workspace)), observer=observer, run_dir=folder)
    except LLMHDError as exc:
        return RunOutcome(folder.name, False, str(exc), time.perf_counter() - start)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a failed run must not stop the grid; its message is reported
        log.exception("run %s failed", folder.name)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return RunOutcome(folder.name, False, f"{type(exc).__name__}: {first}", time.perf_counter() - start)
    return RunOutcome(folder.name, True, "", time.perf_counter() - start, dict(result.test))


def _init_worker(threads: int) -> None:
    # Before torch is imported in the spawned process: its thread pools read these once.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    logging.basicConfig(level=logging.WARNING)


# --------------------------------------------------------------------------- progress


@dataclass
class RunProgress:
    epochs_done: int = 0
    epochs: int = 0
    llm: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LLM_COUNTERS, 0))


def read_run_progress(folder: Path) -> RunProgress:
    """Epochs logged so far and the ``denoiser.llm`` counters summed over them (log.jsonl)."""
    progress = RunProgress()
    path = folder / "log.jsonl"
    if not path.is_file():
        return progress
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if not isinstance(record, dict):
            continue
        progress.epochs_done += 1
        extra = record.get("denoiser")
        llm = extra.get("llm") if isinstance(extra, dict) else None
        if isinstance(llm, dict):
            for key in LLM_COUNTERS:
                value = llm.get(key, 0)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    progress.llm[key] += value
    return progress


@dataclass
class GridStatus:
    """The whole grid at one moment, for the progress display."""

    total: int
    skipped: int = 0  # done before this invocation
    done: int = 0  # finished by this invocation
    failed: int = 0
    running: dict[str, RunProgress] = field(default_factory=dict)
    parallel: int = 1
    started: float = field(default_factory=time.monotonic)
    seconds: list[float] = field(default_factory=list)  # durations of the runs finished here
    llm: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LLM_COUNTERS, 0))

    @property
    def left(self) -> int:
        return self.total - self.skipped - self.done - self.failed - len(self.running)

    @property
    def finished(self) -> int:
        return self.skipped + self.done

    def eta(self) -> float | None:
        """Seconds until the grid ends, from the mean duration of the runs finished so far."""
        if not self.seconds:
            return None
        mean = sum(self.seconds) / len(self.seconds)
        remaining = self.left + sum(1 - min(p.epochs_done / p.epochs, 1) if p.epochs else 1 for p in self.running.values())
        return mean * remaining / max(min(self.parallel, max(self.left + len(self.running), 1)), 1)


class GridObserver(Protocol):
    """What the CLI implements to show a grid's progress."""

    def message(self, text: str) -> None: ...
    def update(self, status: GridStatus) -> None: ...
    def run_finished(self, run: PlannedRun, outcome: RunOutcome, status: GridStatus) -> None: ...


class _Quiet:
    def message(self, text: str) -> None:
        log.info(text)

    def update(self, status: GridStatus) -> None:
        pass

    def run_finished(self, run: PlannedRun, outcome: RunOutcome, status: GridStatus) -> None:
        pass


class _Tally:
    """The LLM counters of every run folder, re-read only when a log changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, tuple[float, RunProgress]] = {}

    def progress(self, folder: str) -> RunProgress:
        path = self.root / folder / "log.jsonl"
        try:
            stamp = path.stat().st_mtime_ns + path.stat().st_size
        except OSError:
            self.seen.pop(folder, None)
            return RunProgress()
        cached = self.seen.get(folder)
        if cached is None or cached[0] != stamp:
            cached = (stamp, read_run_progress(self.root / folder))
            self.seen[folder] = cached
        return cached[1]

    def refresh(self, status: GridStatus, folders: list[str], running: dict[str, PlannedRun]) -> None:
        totals: dict[str, float] = dict.fromkeys(LLM_COUNTERS, 0)
        for folder in folders:
            p = self.progress(folder)
            for key in LLM_COUNTERS:
                totals[key] += p.llm[key]
        status.llm = totals
        status.running = {}
        for folder, run in running.items():
            p = self.progress(folder)
            status.running[folder] = RunProgress(p.epochs_done, int(run.config["epochs"]), p.llm)


# --------------------------------------------------------------------------- datasets and profiles


def check_base_datasets(workspace: Path, plan: Plan) -> None:
    """Every base dataset is prepared or built in (so nothing is written for a grid that cannot run)."""
    from llmhd_cli import plugins
    from llmhd_cli.datasets import PreparedDataset
    from llmhd_cli.workspace import datasets_dir

    for name in dict.fromkeys(r.base_dataset for r in plan.runs):
        source = plugins.registry("dataset").items.get(name)
        if not PreparedDataset.is_prepared(datasets_dir(workspace) / name) and not (source and source.builtin):
            raise LLMHDError(f"{plan.spec.path}: dataset '{name}' is not prepared in {datasets_dir(workspace)}; "
                             f"run: llmhd prepare --dataset {name} --source DIR")


def prepare_datasets(workspace: Path, plan: Plan, notify: Callable[[str], None] | None = None) -> None:
    """The base datasets (built-in ones prepared on first use), then every derived one."""
    from llmhd_cli.prepare import ensure_prepared

    check_base_datasets(workspace, plan)
    for name in dict.fromkeys(r.base_dataset for r in plan.runs):
        ensure_prepared(workspace, name, notify=notify)
    derived: dict[str, PlannedRun] = {}
    for run in plan.runs:
        if run.prepare:
            derived.setdefault(run.dataset, run)
    for name, run in derived.items():
        derive_dataset(workspace, run.base_dataset, name, run.prepare, notify)


def derive_dataset(workspace: Path, base_name: str, name: str, noise: dict[str, Any],
                   notify: Callable[[str], None] | None = None) -> Any:
    """``base_name`` prepared again under ``name`` with other noise settings (same split seed,
    rating filter and K-core as the base); reused when it exists with exactly these options."""
    from dataclasses import fields

    from llmhd_cli import plugins
    from llmhd_cli.datasets import PreparedDataset, open_dataset
    from llmhd_cli.prepare import PrepareOptions, prepare_dataset
    from llmhd_cli.workspace import datasets_dir

    base = open_dataset(workspace, base_name)
    wanted = {**base.info.options, **noise, "name": name}
    target = datasets_dir(workspace) / name
    if PreparedDataset.is_prepared(target):
        have = open_dataset(workspace, name)
        diff = [k for k in wanted if k != "name" and have.info.options.get(k) != wanted[k]]
        if diff:
            raise LLMHDError(f"dataset '{name}' exists with other options than the experiment derives from "
                             f"'{base_name}' ({diff[0]}: {have.info.options.get(diff[0])!r}, wanted {wanted[diff[0]]!r}); "
                             f"remove {target} to prepare it again")
        return have
    known = {f.name for f in fields(PrepareOptions)}
    options = PrepareOptions(**{k: v for k, v in wanted.items() if k in known})
    options.source_dir = Path(options.source_dir) if options.source_dir else None
    source = plugins.registry("dataset").items.get(base.info.source)
    if notify is not None:
        notify(f"preparing dataset '{name}' from '{base_name}' with " + ", ".join(f"{k} {v}" for k, v in noise.items()))
    if not (source is not None and source.builtin):
        return prepare_dataset(workspace, options)
    # A built-in source is chosen by the dataset's name, so prepare under the built-in's name in
    # a scratch folder beside the target and rename the result into place.
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.derive-", dir=datasets_dir(workspace)))
    try:
        options.name = source.name
        made = prepare_dataset(scratch, options)
        made.info.notes.append(f"derived by llmhd experiment from '{base_name}' with "
                               + ", ".join(f"{k} {v}" for k, v in noise.items()))
        made = made.rename(name)
        try:
            os.rename(made.path, target)
        except OSError as exc:
            raise LLMHDError(f"{target}: cannot write the derived dataset ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return open_dataset(workspace, name)


def profile_needs(workspace: Path, plan: Plan) -> list[tuple[str, dict[str, Any]]]:
    """(dataset, denoiser options) for every dataset an LLM-consulting run trains on (its
    denoiser has a ``provider`` option) that has no user profiles yet; one per dataset."""
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.llm.profiles import ProfileStore

    out: dict[str, dict[str, Any]] = {}
    for run in plan.runs:
        params = run.config.get("denoiser_params") or {}
        if "provider" not in params or run.dataset in out:
            continue
        store = ProfileStore(open_dataset(workspace, run.dataset))
        if store.user_profiles(params.get("provider"), params.get("model"))[0] or store.user_profiles()[0]:
            continue
        out[run.dataset] = params
    return list(out.items())


def summarize_missing(workspace: Path, plan: Plan, notify: Callable[[str], None] | None = None,
                      progress: Any = None) -> None:
    """`llmhd summarize` for the datasets `profile_needs` names, with each one's provider and model."""
    from llmhd_cli.llm.prompts import prompts_dir_setting
    from llmhd_cli.llm.settings import resolve_settings
    from llmhd_cli.summarize import SummarizeOptions, summarize

    for dataset, params in profile_needs(workspace, plan):
        settings = resolve_settings(provider=params.get("provider"), model=params.get("model"),
                                    base_url=params.get("base_url"))
        if notify is not None:
            notify(f"summarizing user profiles of '{dataset}' with {settings.provider}/{settings.model} "
                   "(the runs' LLM scoring needs them)")
        summarize(workspace, settings, SummarizeOptions(dataset, prompts_dir_setting(params.get("prompts"))), progress)


# --------------------------------------------------------------------------- the grid


@dataclass
class RunOptions:
    workers: int = 1
    threads: int | None = None  # per run; default max(1, cores // workers)
    ray: str | None = None  # address of an existing Ray cluster
    cpus_per_run: int = 1  # Ray: num_cpus of each task (and its threads)
    gpus_per_run: float = 0.0  # Ray: num_gpus of each task

    def check(self) -> None:
        if self.workers < 1:
            raise LLMHDError(f"--workers: must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise LLMHDError(f"--threads: must be at least 1, got {self.threads}")
        if self.cpus_per_run < 1:
            raise LLMHDError(f"--cpus-per-run: must be at least 1, got {self.cpus_per_run}")
        if not 0 <= self.gpus_per_run:
            raise LLMHDError(f"--gpus-per-run: must be 0 or more, got {self.gpus_per_run}")
        if self.ray is None and (self.cpus_per_run != 1 or self.gpus_per_run):
            raise LLMHDError("--cpus-per-run / --gpus-per-run: only with --ray ADDRESS")
        if self.ray is not None and self.workers != 1:
            raise LLMHDError("--workers: local worker processes; with --ray the cluster's resources decide")

    def run_threads(self) -> int:
        if self.ray is not None:
            return self.threads or self.cpus_per_run
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return self.threads or max(1, cores // self.workers)


@dataclass
class GridResult:
    status: GridStatus
    failures: list[RunOutcome] = field(default_factory=list)


class _Lock:
    """One `experiment run` per experiment folder: two would train the same runs into one folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    holder = {}
                if holder.get("host") == me["host"] and _alive(holder.get("pid")):
                    raise LLMHDError(f"{self.path}: another `llmhd experiment run` (pid {holder['pid']}) is running "
                                     "this experiment; wait for it or stop it") from None
                self.path.unlink(missing_ok=True)  # left by a process that is gone
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            return self
        raise LLMHDError(f"{self.path}: cannot take the experiment's lock")

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_plan(workspace: Path, plan: Plan) -> Path:
    folder = experiment_dir(workspace, plan.spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.toml").write_text(plan.spec.text, encoding="utf-8")
    data = {"name": plan.spec.name, "spec": str(plan.spec.path.resolve()),
            "runs": [{"folder": r.folder, "dataset": r.dataset, "base_dataset": r.base_dataset,
                      "prepare": r.prepare, "config": r.config} for r in plan.runs],
            "cells": [asdict(c) for c in plan.cells]}
    tmp = folder / "plan.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    tmp.replace(folder / "plan.json")
    return folder / "plan.json"


def run_grid(workspace: Path, plan: Plan, options: RunOptions | None = None,
             observer: GridObserver | None = None) -> GridResult:
    """Train every planned run that is not done (datasets and profiles must be ready: see
    `prepare_datasets`, `summarize_missing`). Failed runs are reported, not fatal."""
    options = options or RunOptions()
    options.check()
    observer = observer or _Quiet()
    workspace = Path(workspace)
    root = runs_root(workspace, plan.spec.name)
    with _Lock(experiment_dir(workspace, plan.spec.name) / "run.lock"):
        write_plan(workspace, plan)
        states = plan_states(workspace, plan)
        todo = [r for r in plan.runs if states[r.folder] != "done"]
        for run in todo:
            if states[run.folder] == "partial":  # an interrupted or stale attempt: redone from scratch
                shutil.rmtree(root / run.folder)
        root.mkdir(parents=True, exist_ok=True)
        threads = options.run_threads()
        status = GridStatus(total=len(plan.runs), skipped=len(plan.runs) - len(todo),
                            parallel=1 if options.ray else options.workers)
        tally = _Tally(root)
        all_folders = [r.folder for r in plan.runs]
        result = GridResult(status)
        running: dict[str, PlannedRun] = {}

        def tick() -> None:
            tally.refresh(status, all_folders, running)
            observer.update(status)

        def finish(run: PlannedRun, outcome: RunOutcome) -> None:
            running.pop(run.folder, None)
            if outcome.ok:
                status.done += 1
                status.seconds.append(outcome.seconds)
            else:
                status.failed += 1
                result.failures.append(outcome)
            tally.refresh(status, all_folders, running)
            observer.run_finished(run, outcome, status)
            observer.update(status)

        tasks = [(run, RunTask(str(workspace), str(root / run.folder), {**run.config, "threads": threads}))
                 for run in todo]
        tick()
        if not tasks:
            return result
        if options.ray is not None:
            _ray_grid(options, tasks, running, tick, finish, status)
        elif options.workers == 1:
            _inline_grid(tasks, running, tick, finish)
        else:
            _process_grid(options.workers, threads, tasks, running, tick, finish)
        return result


class _Ticker:
    """A TrainObserver that refreshes the grid display at most once a second."""

    def __init__(self, tick: Callable[[], None]) -> None:
        self.tick, self.last = tick, 0.0

    def message(self, text: str) -> None:
        log.info(text)

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        self.batch_done()

    def batch_done(self) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            self.tick()

    def epoch_end(self, record: Any) -> None:
        self.last = 0.0
        self.batch_done()


def _inline_grid(tasks: list, running: dict, tick: Callable, finish: Callable) -> None:
    for run, task in tasks:
        running[run.folder] = run
        tick()
        finish(run, execute(task, observer=_Ticker(tick)))


def _process_grid(workers: int, threads: int, tasks: list, running: dict, tick: Callable, finish: Callable) -> None:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    queue = list(tasks)
    pending: dict[Any, PlannedRun] = {}
    # spawn: a fresh interpreter per worker (fork would copy this process's torch thread pools).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    try:
        while queue or pending:
            while queue and len(pending) < workers:  # only as many as run at once: "running" is true
                run, task = queue.pop(0)
                pending[pool.submit(execute, task)] = run
                running[run.folder] = run
            done, _ = wait(list(pending), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                run = pending.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    raise LLMHDError("a worker process died (out of memory?); the runs it held are unfinished, "
                                     "rerun `llmhd experiment run` to resume") from None
                finish(run, outcome)
            tick()
    except BaseException:
        # Ctrl-C or a failure here: stop the runs in progress now instead of waiting for them
        # (their folders stay unfinished and are redone next time).
        for process in (getattr(pool, "_processes", None) or {}).values():
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def connect_ray(address: str) -> None:
    """Join the Ray cluster at ``address`` (``ray.init``); a one-line error when it cannot."""
    try:
        import ray
    except ImportError:
        raise LLMHDError("--ray: the ray package is not installed (pip install 'llmhd[ray]')") from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LLMHDError(f"--ray {address}: cannot connect to the Ray cluster ({str(exc).splitlines()[0]})") from None


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connected to the cluster for the block (nothing without an address): connect before
    preparing anything, so an unreachable cluster fails before anything is written."""
    if address is None:
        yield
        return
    import ray

    connect_ray(address)
    try:
        yield
    finally:
        ray.shutdown()


def _ray_grid(options: RunOptions, tasks: list, running: dict, tick: Callable, finish: Callable,
              status: GridStatus) -> None:
    """Submit every task to the cluster, which starts them as it has room."""
    import ray

    owned = not ray.is_initialized()
    if owned:
        assert options.ray is not None  # the grid runs on Ray only when an address was given
        connect_ray(options.ray)
    try:
        status.parallel = max(1, int(ray.cluster_resources().get("CPU", 1) // options.cpus_per_run))
        remote = ray.remote(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_retries=0)(execute)
        pending = {remote.remote(task): run for run, task in tasks}
        root = Path(tasks[0][1].run_dir).parent
        try:
            _ray_wait(ray, pending, root, running, tick, finish)
        except BaseException:
            for ref in pending:  # the cluster would otherwise train them for nobody
                ray.cancel(ref, force=True)
            raise
    finally:
        if owned:
            ray.shutdown()


def _ray_wait(ray: Any, pending: dict, root: Path, running: dict, tick: Callable, finish: Callable) -> None:
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            run = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # a worker that died: ray.exceptions.* (not importable without ray)
                outcome = RunOutcome(run.folder, False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            finish(run, outcome)
        # The cluster starts tasks when it has room; a run is running once its folder exists.
        running.clear()
        running.update({run.folder: run for run in pending.values() if (root / run.folder).exists()})
        tick()


def iter_finished(workspace: Path, plan: Plan) -> Iterator[tuple[PlannedRun, Path]]:
    """The plan's done runs and their folders."""
    root = runs_root(workspace, plan.spec.name)
    states = plan_states(workspace, plan)
    for run in plan.runs:
        if states[run.folder] == "done":
            yield run, root / run.folder
