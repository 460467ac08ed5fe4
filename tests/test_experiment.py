"""``llmhd experiment``: spec validation, grid expansion, resume, the report's statistics, Ray.

The report tests write finished run folders by hand at the folders the plan names (config,
metrics.json, test_per_user.npz with chosen vectors), so every mean, std and p-value is
known; the resume and Ray tests train real tiny models (1-2 epochs on a cut of ml-100k).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import assert_user_error, call_main, run_cli, write_ml100k_cut
from scipy import stats

from llmhd_cli import plugins, runs
from llmhd_cli.evaluation import METRICS, UserMetrics
from llmhd_cli.experiments import report as rep
from llmhd_cli.experiments.cost import setting_key
from llmhd_cli.experiments.grid import derived_name, expand, run_key, same_config
from llmhd_cli.experiments.runner import RunOptions, plan_states, run_grid, runs_root
from llmhd_cli.experiments.spec import load_spec
from llmhd_cli.training import denoiser_options

N_USERS = 60
USERS = np.arange(1, N_USERS + 1, dtype=np.int64)


def write_spec(folder: Path, text: str, name: str = "exp.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


BASE = """
    datasets = ["toy"]
    seeds = [1, 2]
    [train]
    epochs = 2
"""


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("body, words", [
    ("colour = 'red'\n[[methods]]\ndenoiser = 'none'\n", ["unknown key 'colour'"]),
    ("[[methods]]\ndenoiser = 'none'\nflavour = 1\n", ["[[methods]]", "unknown key 'flavour'"]),
    ("[grid]\nepochs = ['ten']\n[[methods]]\ndenoiser = 'none'\n", ["[grid]", "'epochs'", "'ten'"]),
    ("[grid]\nepochs = [0]\n[[methods]]\ndenoiser = 'none'\n", ["[grid]", "'epochs'", "at least 1"]),
    ("[grid]\nlearning_rate = [true]\n[[methods]]\ndenoiser = 'none'\n", ["[grid]", "'learning_rate'"]),
    ("[grid]\nshoe_size = [1]\n[[methods]]\ndenoiser = 'none'\n", ["[grid]", "unknown key 'shoe_size'"]),
    ("[[methods]]\ndenoiser = 'tce'\n[methods.grid]\ndrop_rate = ['lots']\n", ["'tce' grid", "drop_rate", "'lots'"]),
    ("[[methods]]\ndenoiser = 'tce'\n[methods.grid]\nalpha = [1.0]\n", ["'tce' grid", "has no option 'alpha'"]),
    ("[grid]\n'denoiser_params.drop_rate' = [0.1]\n[[methods]]\ndenoiser = 'none'\n",
     ["[grid]", "denoiser_params.drop_rate", "has no option 'drop_rate'"]),
    ("[[methods]]\ndenoiser = 'nope'\n", ["'denoiser'", "unknown denoiser 'nope'"]),
    ("backbones = ['lightgcn', 'resnet']\n[[methods]]\ndenoiser = 'none'\n", ["'backbones'", "unknown backbone 'resnet'"]),
    ("[train]\nthreads = 2\n[[methods]]\ndenoiser = 'none'\n", ["[train]", "'threads'", "--workers"]),
    ("[prepare]\nnoise_ratio = 1.5\n[[methods]]\ndenoiser = 'none'\n", ["[prepare]", "'noise_ratio'"]),
    ("[grid]\n'prepare.noise_source' = ['loud']\n[[methods]]\ndenoiser = 'none'\n", ["[grid]", "noise_source", "'loud'"]),
    ("[[methods]]\ndenoiser = 'none'\nbackbone_params = { n_layer = 3 }\n", ["backbone_params", "n_layer"]),
    ("[report]\nbaseline = 'denoiser='\n[[methods]]\ndenoiser = 'none'\n", ["[report]", "'baseline'"]),
    ("[[methods]]\ndenoiser = 'none'\ncolumn = 'lightgnc'\n", ["'column'", "unknown backbone 'lightgnc'"]),
    ("", ["'methods'"]),
])
def test_a_bad_spec_is_one_line_naming_file_and_key(capsys: pytest.CaptureFixture, tmp_path: Path, body: str,
                                                     words: list[str]) -> None:
    spec = write_spec(tmp_path, "datasets = ['toy']\n" + body)
    ws = tmp_path / "ws"
    for command in ("plan", "run", "report", "cost"):
        code, out, err = run_cli(capsys, ws, "experiment", command, str(spec))
        assert_user_error(code, out, err, str(spec), *words)
    assert not ws.exists()  # checked before anything is written


def test_shipped_specs_are_valid() -> None:
    folder = Path(__file__).parent.parent / "examples" / "experiments"
    names = {p.stem for p in folder.glob("*.toml")}
    assert {"table1", "table2-ablation", "fig3-noise", "fig4-hparams", "judge-accuracy"} <= names
    for path in sorted(folder.glob("*.toml")):
        plan = expand(load_spec(path))
        assert plan.runs, path
        assert all(r.config["epochs"] <= 30 for r in plan.runs), path  # small budgets, as the files say
    fig3 = expand(load_spec(folder / "fig3-noise.toml"))
    assert {r.dataset for r in fig3.runs} == {f"ml-100k-random-{x}" for x in ("0.05", "0.10", "0.15", "0.20")}


def test_published_specs_are_valid() -> None:
    """docs/results/specs: the files our published numbers were trained from still load and
    expand (a renamed option or a changed choice would break their reproduction)."""
    folder = Path(__file__).parent.parent / "docs" / "results" / "specs"
    paths = sorted(folder.glob("*.toml"))
    assert len(paths) >= 10
    for path in paths:
        assert expand(load_spec(path)).runs, path


# --------------------------------------------------------------------------- expansion


def test_grid_expansion(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, """
        datasets = ["toy"]
        seeds = [1, 2]
        objectives = ["bpr", "bce"]
        [train]
        epochs = 2
        [grid]
        learning_rate = [0.001, 0.005]
        [[methods]]
        name = "plain"
        denoiser = "none"
        [[methods]]
        name = "LLMHD"
        denoiser = "llmhd"
        params = { alpha = 500, eps_v = 0.5 }
        [methods.sweep]
        alpha = [100, 500]
        eps_v = [0.3, 0.5]
    """))
    plan = expand(spec)
    # plain: 2 objectives x 2 learning rates; LLMHD: x 4 sweep points (each axis alone)
    assert len(plan.cells) == 2 * 2 + 2 * 2 * 4
    llmhd = [c for c in plan.cells if c.method == "LLMHD"]
    assert {tuple(c.axes) for c in llmhd} == {("learning_rate", "denoiser_params.alpha"),
                                            ("learning_rate", "denoiser_params.eps_v")}
    # alpha=500 (eps_v at its 0.5) and eps_v=0.5 (alpha at its 500) are one setting: one run per seed
    by_axes = {(c.objective, c.axes["learning_rate"], *c.axes.items()): c.folders for c in llmhd}
    same = [c.folders for c in llmhd if c.objective == "bpr" and c.axes["learning_rate"] == 0.001
            and (c.axes.get("denoiser_params.alpha") == 500 or c.axes.get("denoiser_params.eps_v") == 0.5)]
    assert len(same) == 2 and same[0] == same[1]
    assert len(by_axes) == len(llmhd)
    assert len(plan.runs) == 2 * (2 * 2 + 2 * 2 * 3)  # seeds x (plain + LLMHD's 3 distinct settings)
    run = plan.run(same[0][0])
    assert run.config["denoiser_params"]["alpha"] == 500.0 and run.config["denoiser_params"]["history"] == 5  # defaults in
    assert "provider" not in run.config["denoiser_params"]  # unset: resolved by the run, as TOML leaves it out
    denoiser_options(plugins.registry("denoiser").get("llmhd", "--denoiser"), run.config["denoiser_params"])  # train takes it
    written = {**run.config, "threads": 1, "denoiser_params": {**run.config["denoiser_params"], "provider": "embed"}}
    assert same_config(run.config, written)  # what the run resolved is not a difference
    assert not same_config(run.config, {**written, "epochs": 3})
    assert run.folder.startswith("toy-lightgcn-bpr-llmhd-s1-")
    # the folder is a function of the config: stable across loads, blind to device/threads, not to a value
    again = expand(load_spec(spec.path))
    assert [r.folder for r in again.runs] == [r.folder for r in plan.runs]
    assert run_key({**run.config, "threads": 7, "device": "cuda"}) == run_key(run.config)
    assert run_key({**run.config, "learning_rate": 0.002}) != run_key(run.config)
    assert len({r.folder for r in plan.runs}) == len(plan.runs)


def test_noise_axes_make_derived_datasets(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, BASE + """
        [prepare]
        noise_source = "random"
        [grid]
        "prepare.noise_ratio" = [0.1, 0.125]
        [[methods]]
        denoiser = "none"
    """))
    plan = expand(spec)
    assert [r.dataset for r in plan.runs] == ["toy-random-0.10", "toy-random-0.10", "toy-random-0.125", "toy-random-0.125"]
    assert all(r.base_dataset == "toy" and r.prepare["noise_source"] == "random" for r in plan.runs)
    assert derived_name("ml-100k", {"noise_ratio": 0.2}) == "ml-100k-0.20"


def test_cost_estimates_once_per_llm_relevant_setting(tmp_path: Path) -> None:
    plan = expand(load_spec(write_spec(tmp_path, BASE + """
        [[methods]]
        name = "J"
        denoiser = "llmhd"
        params = { provider = "oracle" }
        [methods.grid]
        judge_accuracy = [0.5, 1.0]
        eps_v = [0.3, 0.5]
    """)))
    assert len(plan.runs) == 2 * 2 * 2
    # seeds and judge_accuracy do not change a dry run; eps_v does
    assert len({setting_key(r) for r in plan.runs}) == 2


# --------------------------------------------------------------------------- report statistics


def finish_run(root: Path, folder: str, config: dict[str, Any], values: dict[str, np.ndarray],
               noise: dict[str, float] | None = None) -> None:
    """A finished run folder as training leaves it (config, metrics.json, per-user metrics)."""
    path = root / folder
    path.mkdir(parents=True)
    runs.write_config(path, config)
    vectors = {m: np.full(N_USERS, 0.1) for m in METRICS}
    vectors.update(values)
    per_user = UserMetrics(USERS, vectors, "split-a")
    per_user.save(path / runs.PER_USER)
    runs.write_metrics(path, {"best_epoch": 1, "test": per_user.means(), "valid": {},
                              "noise_detection": noise})


REPORT_SPEC = BASE + """
    [report]
    baseline = "denoiser=none"
    [[methods]]
    name = "BPR"
    denoiser = "none"
    [[methods]]
    name = "T-CE"
    denoiser = "tce"
    [[methods]]
    name = "R-CE"
    denoiser = "rce"
    [[methods]]
    name = "Oracle"
    denoiser = "llmhd"
    params = { provider = "oracle", model = "all-ratings" }
"""


def fixed_report(tmp_path: Path) -> tuple[Any, Path, dict[str, np.ndarray]]:
    """BPR, T-CE (a clear, consistent gain in recall@10), R-CE (a slightly lower mean, users
    +-0.02 around it: no consistent change) and a
    leaking oracle (best of all), two seeds each, with known per-user vectors."""
    ws = tmp_path / "ws"
    plan = expand(load_spec(write_spec(tmp_path, REPORT_SPEC)))
    root = runs_root(ws, plan.spec.name)
    rng = np.random.default_rng(0)
    base = {1: rng.uniform(0, 0.4, N_USERS), 2: rng.uniform(0, 0.4, N_USERS)}
    gain = 0.05 + rng.normal(0, 0.01, N_USERS)
    swing = np.where(np.arange(N_USERS) % 2 == 0, 0.02, -0.02)
    change = {"BPR": 0 * gain, "T-CE": gain, "R-CE": swing - 0.002, "Oracle": 0.5 + 0 * gain}
    for cell in plan.cells:
        for seed, folder in zip((1, 2), cell.folders, strict=True):
            values = base[seed] + change[cell.method]
            finish_run(root, folder, plan.run(folder).config, {"recall@10": values, "ndcg@10": values},
                       {"precision": 0.25 * seed, "recall": 0.5, "f1": 0.3, "dropped_positives": 10})
    return plan, ws, {"base1": base[1], "base2": base[2], "gain": gain, "swing": swing}


def test_report_statistics_on_fixed_vectors(tmp_path: Path) -> None:
    plan, ws, v = fixed_report(tmp_path)
    results = rep.collect(ws, plan)
    cells = {c.cell.method: c for c in results.cells}
    base_means = [v["base1"].mean(), v["base2"].mean()]
    tce_means = [(v["base1"] + v["gain"]).mean(), (v["base2"] + v["gain"]).mean()]
    assert cells["BPR"].mean["recall@10"] == pytest.approx(np.mean(base_means))
    assert cells["T-CE"].mean["recall@10"] == pytest.approx(np.mean(tce_means))
    assert cells["T-CE"].std["recall@10"] == pytest.approx(np.std(tce_means, ddof=1))
    assert cells["BPR"].std["recall@5"] == pytest.approx(0.0)
    # the paired test over users: each user's metric averaged over the seeds, then paired
    user_base = (v["base1"] + v["base2"]) / 2
    assert cells["T-CE"].p_paired["recall@10"] == pytest.approx(stats.ttest_rel(user_base + v["gain"], user_base).pvalue)
    assert cells["R-CE"].p_paired["recall@10"] == pytest.approx(
        stats.ttest_rel(user_base + v["swing"] - 0.002, user_base).pvalue)
    assert cells["T-CE"].p_welch["recall@10"] == pytest.approx(stats.ttest_ind(tce_means, base_means, equal_var=False).pvalue)
    assert cells["T-CE"].significant("recall@10", 0.05) and not cells["R-CE"].significant("recall@10", 0.05)
    assert cells["BPR"].baseline == "(baseline)" and not cells["BPR"].significant("recall@10", 0.05)
    assert cells["T-CE"].noise["precision"] == pytest.approx(0.375)
    # ranks: the leaking oracle is best but never ranked; T-CE best, BPR runner-up, R-CE neither
    assert cells["Oracle"].leak and cells["Oracle"].rank == {}
    assert cells["T-CE"].rank["recall@10"] == 1 and cells["BPR"].rank["recall@10"] == 2
    assert "recall@10" not in cells["R-CE"].rank

    markdown = rep.render(results, "markdown")
    tce_line = next(line for line in markdown.splitlines() if line.startswith("| T-CE"))
    assert tce_line.split("|")[3].strip() == f"**{np.mean(tce_means):.4f}**\\* ± {np.std(tce_means, ddof=1):.4f}"
    assert "| Oracle (leak) |" in markdown and "leak:" in markdown
    latex = rep.render(results, "latex")
    assert rf"\mathbf{{{np.mean(tce_means):.4f}}}^{{*}}" in latex and r"Oracle$^{\dagger}$" in latex
    assert r"\multicolumn{4}{c}{LightGCN}" in latex
    rows = list(csv.DictReader(io.StringIO(rep.render(results, "csv"))))
    tce = next(r for r in rows if r["method"] == "T-CE" and r["metric"] == "recall@10")
    assert tce["rank"] == "1" and tce["significant"] == "True" and float(tce["mean"]) == pytest.approx(np.mean(tce_means))
    assert {r["leak"] for r in rows if r["method"] == "Oracle"} == {"True"}
    data = json.loads(rep.render(results, "json"))
    assert next(r for r in data if r["method"] == "BPR" and r["metric"] == "recall@10")["p welch"] is None


def test_report_cli_formats_plots_and_unfinished_runs(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    plan, ws, _ = fixed_report(tmp_path)
    (runs_root(ws, plan.spec.name) / plan.cells[1].folders[1] / runs.METRICS).unlink()  # one T-CE seed unfinished
    code, out, err = run_cli(capsys, ws, "experiment", "report", str(plan.spec.path), "--plots", str(tmp_path / "figs"))
    assert code == 0, err
    assert "Oracle" in out and "(leak)" in out and "1 of 8 planned runs have not finished" in out
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["noise-detection-toy-lightgcn-bpr.png"]
    for fmt in ("markdown", "csv", "json", "latex"):
        code, out, err = run_cli(capsys, ws, "experiment", "report", str(plan.spec.path), "--format", fmt)
        assert code == 0 and out, (fmt, err)
    code, out, err = run_cli(capsys, ws, "experiment", "report", str(plan.spec.path), "--baseline", "denoiser=dcf")
    assert code == 0 and "no baseline 'denoiser=dcf'" in out


def test_plots_per_axis_and_noise_detection(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    plan = expand(load_spec(write_spec(tmp_path, BASE + """
        [[methods]]
        name = "BPR"
        denoiser = "none"
        [[methods]]
        name = "T-CE"
        denoiser = "tce"
        [methods.grid]
        drop_rate = [0.1, 0.2]
        [[methods]]
        name = "RGCF"
        denoiser = "none"
        backbones = ["rgcf"]
        column = "lightgcn"
    """)))
    root = runs_root(ws, plan.spec.name)
    for run in plan.runs:
        finish_run(root, run.folder, run.config, {}, {"precision": 0.5, "recall": 0.25, "f1": 0.3, "dropped_positives": 4})
    written = rep.plot(rep.collect(ws, plan), tmp_path / "figs")
    # RGCF is drawn in LightGCN's figures (its column), as a reference line beside T-CE's curve
    assert sorted(p.name for p in written) == ["drop_rate-toy-lightgcn-bpr.png", "noise-detection-toy-lightgcn-bpr.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_run_state_done_partial_todo(tmp_path: Path) -> None:
    plan, ws, _ = fixed_report(tmp_path)
    root = runs_root(ws, plan.spec.name)
    first, second, third = plan.runs[0], plan.runs[1], plan.runs[2]
    (root / second.folder / runs.METRICS).unlink()  # interrupted: no metrics.json
    config = dict(third.config, learning_rate=0.5)  # a folder holding another config
    runs.write_config(root / third.folder, config)
    shutil.rmtree(root / plan.runs[3].folder)
    states = plan_states(ws, plan)
    assert states[first.folder] == "done" and states[second.folder] == "partial"
    assert states[third.folder] == "partial" and states[plan.runs[3].folder] == "todo"


# --------------------------------------------------------------------------- resume (trains)


@pytest.fixture(scope="module")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with 'tiny': the first 60 users of ml-100k."""
    source = write_ml100k_cut(tmp_path_factory.mktemp("source"), "tiny", 60)
    ws = tmp_path_factory.mktemp("ws")
    assert call_main(ws, "prepare", "--dataset", "tiny", "--source", str(source)) == 0
    return ws


TINY_SPEC = """
    datasets = ["tiny"]
    seeds = [1, 2]
    [train]
    epochs = 2
    batch_size = 512
    [[methods]]
    name = "BPR"
    denoiser = "none"
    [[methods]]
    name = "T-CE"
    denoiser = "tce"
    params = { num_gradual = 20 }
"""


class _StopDuringSecondRun:
    """Ctrl-C once the first run has finished and the second has logged its first epoch."""

    def message(self, text: str) -> None:
        pass

    def run_finished(self, run: Any, outcome: Any, status: Any) -> None:
        assert outcome.ok, outcome.error

    def update(self, status: Any) -> None:
        if status.done == 1 and any(p.epochs_done >= 1 for p in status.running.values()):
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_skips_finished_runs_and_redoes_the_interrupted_one(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                  tiny_workspace: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC, "resume.toml")
    plan = expand(load_spec(spec))
    root = runs_root(tiny_workspace, plan.spec.name)
    with pytest.raises(KeyboardInterrupt):
        run_grid(tiny_workspace, plan, RunOptions(threads=1), _StopDuringSecondRun())
    first, second = root / plan.runs[0].folder, root / plan.runs[1].folder
    assert (first / runs.METRICS).exists() and not (second / runs.METRICS).exists()
    assert len((second / runs.LOG).read_text().splitlines()) == 1  # cut after one epoch
    assert not (root.parent / "run.lock").exists()  # the lock went with the interrupted run
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    log_before = (first / runs.LOG).read_text()

    code, out, err = run_cli(capsys, tiny_workspace, "experiment", "run", str(spec), "--threads", "1")
    assert code == 0, err
    assert "3 trained, 1 already done, 0 failed" in out
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == before  # not rerun, not touched
    assert (first / runs.LOG).read_text() == log_before
    assert len((second / runs.LOG).read_text().splitlines()) == 2  # redone from scratch, not appended to
    assert set(plan_states(tiny_workspace, plan).values()) == {"done"}
    code, out, err = run_cli(capsys, tiny_workspace, "experiment", "run", str(spec), "--threads", "1")
    assert code == 0 and "0 trained, 4 already done" in out
    code, out, err = run_cli(capsys, tiny_workspace, "experiment", "report", str(spec), "--format", "json")
    assert code == 0 and {r["method"] for r in json.loads(out)} == {"BPR", "T-CE"}


@pytest.mark.slow
def test_local_worker_processes_train_with_their_share_of_threads(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                   tiny_workspace: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("seeds = [1, 2]", "seeds = [5]"), "workers.toml")
    plan = expand(load_spec(spec))
    code, out, err = run_cli(capsys, tiny_workspace, "experiment", "run", str(spec), "--workers", "2")
    assert code == 0, err
    assert "2 trained, 0 already done, 0 failed" in out
    workers = re.findall(r"^done \S+ \(\S+ on [^:]+:(\d+)\)", out, flags=re.M)
    assert len(workers) == 2 and str(os.getpid()) not in workers, out  # spawned processes trained them
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for run in plan.runs:
        assert runs.read_run(runs_root(tiny_workspace, plan.spec.name) / run.folder).config["threads"] == share


# --------------------------------------------------------------------------- Ray


@pytest.mark.slow
def test_two_run_grid_on_a_local_ray_instance(tmp_path: Path, tiny_workspace: Path) -> None:
    ray = pytest.importorskip("ray")
    spec = write_spec(tmp_path, TINY_SPEC.replace("seeds = [1, 2]", "seeds = [3]"), "ray.toml")
    plan = expand(load_spec(spec))
    assert len(plan.runs) == 2
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = context.address_info["address"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        driver = subprocess.Popen([sys.executable, "-m", "llmhd_cli", "--workspace", str(tiny_workspace), "experiment",
                                   "run", str(spec), "--ray", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env)
        out, err = driver.communicate(timeout=600)
    finally:
        ray.shutdown()
    assert driver.returncode == 0, out + err
    assert "2 trained, 0 already done, 0 failed" in out
    # trained by Ray's worker processes, not by the driver
    workers = re.findall(r"^done \S+ \(\S+ on [^:]+:(\d+)\)", out, flags=re.M)
    assert len(workers) == 2 and str(driver.pid) not in workers and str(os.getpid()) not in workers, out
    root = runs_root(tiny_workspace, plan.spec.name)
    for run in plan.runs:
        record = runs.read_run(root / run.folder)
        assert record.config["threads"] == 1 and record.config["seed"] == 3  # --cpus-per-run 1: one thread
        assert len(record.log) == 2
    assert set(plan_states(tiny_workspace, plan).values()) == {"done"}
