"""Careless and hostile names and values: no name or path escapes the workspace, every bad
value is one line with exit code 2 and nothing written, and Ctrl-C is one line with exit 130.

Each CLI case snapshots the whole temporary folder around the workspace (the workspace sits
three folders deep in it, so a name climbing out with '..' lands inside the snapshot) and
checks that nothing appeared anywhere.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import assert_user_error, run_cli, write_ml100k_cut
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmhd_cli import runs
from llmhd_cli.config import TrainConfig
from llmhd_cli.errors import LLMHDError
from llmhd_cli.workspace import check_name

LLMHD = Path(sys.executable).with_name("llmhd")

BAD_NAMES = [
    "", ".", "..", "../x", "../../x", "../../../../escaped", "a/b", "a/../../b", ".hidden", "-dash", "x\n", "\nx",
    "a b", "a\x00b", "[/x]", "[bold]x", "~", "$HOME", "a" * 101, "é", "a\\b",
]


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user config or LLMHD_* variable of the machine running the tests leaks in."""
    for key in list(os.environ):
        if key.startswith("LLMHD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "no-config.toml"))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """The workspace, three folders below ``tmp_path`` (which every test snapshots)."""
    return tmp_path / "o1" / "o2" / "ws"


def tree(root: Path) -> set[str]:
    """Every file and folder under ``root`` (the test's LLMHD_CONFIG path is never created)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_rejected(capsys: pytest.CaptureFixture, ws: Path, root: Path, *args: str, words: tuple[str, ...] = ()) -> str:
    """``llmhd --workspace ws ARGS`` is one line with exit 2 and writes nothing under ``root``."""
    before = tree(root)
    code, out, err = run_cli(capsys, ws, *args)
    assert_user_error(code, out, err, *words)
    assert err.count("\n") == 1 and not out, (out, err)  # not even a blank line (of a progress display)
    assert tree(root) == before, sorted(tree(root) - before)
    return err


def fake_run(folder: Path, dataset: str = "d", log: str | None = None, metrics: str | None = None) -> Path:
    """A finished run folder as train writes it (config, metrics, log), without training."""
    folder.mkdir(parents=True)
    config = TrainConfig(dataset=dataset).to_dict()
    import tomli_w

    (folder / runs.CONFIG).write_text(tomli_w.dumps(config))
    (folder / runs.METRICS).write_text(metrics if metrics is not None else json.dumps(
        {"best_epoch": 1, "valid": {"ndcg@10": 0.1}, "test": {"recall@5": 0.1, "recall@10": 0.2, "ndcg@5": 0.1,
                                                              "ndcg@10": 0.15}}))
    rows = [{"epoch": e, "loss": 1.0 / (e + 1), "samples": 10, "dropped": e, "valid": {"ndcg@10": 0.1 * e}}
            for e in range(3)]
    (folder / runs.LOG).write_text(log if log is not None else "".join(json.dumps(r) + "\n" for r in rows))
    return folder


# ------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:24] for n in BAD_NAMES])
def test_bad_dataset_names_every_command(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path, name: str) -> None:
    for args in (["prepare", "--dataset", name],
                 ["prepare", "--dataset", name, "--source", str(tmp_path)],
                 ["summarize", "--dataset", name],
                 ["train", "--dataset", name, "--threads", "1"],
                 ["cost", "--dataset", name],
                 ["cost", "--spent", "--dataset", name]):
        err = assert_rejected(capsys, ws, tmp_path, *args, words=("--dataset",))
        assert "name" in err, (args, err)


def test_empty_dataset_is_not_the_default(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path) -> None:
    """--dataset '' used to mean the default dataset, and prepare then overwrote it."""
    assert_rejected(capsys, ws, tmp_path, "prepare", "--dataset", "", "--force", words=("a dataset name is needed",))
    assert_rejected(capsys, ws, tmp_path, "train", "--dataset", "", words=("a dataset name is needed",))


def test_overlong_names(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path) -> None:
    err = assert_rejected(capsys, ws, tmp_path, "summarize", "--dataset", "a" * 5000, words=("too long", "5000"))
    assert len(err) < 400  # the name is shortened in the message
    # 100 characters are a name: the error is about the missing source, not the name
    assert_rejected(capsys, ws, tmp_path, "prepare", "--dataset", "a" * 100, words=("not a built-in dataset",))


def test_config_file_and_user_config_names(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "train.toml"
    config.write_text('dataset = "../../../../escaped"\n')
    assert_rejected(capsys, ws, tmp_path, "train", "--config", str(config), words=("not a usable dataset name",))
    user = tmp_path / "user.toml"
    user.write_text('default_dataset = "/tmp/abs"\n')
    monkeypatch.setenv("LLMHD_CONFIG", str(user))
    for command in ("prepare", "summarize", "train", "cost"):
        assert_rejected(capsys, ws, tmp_path, command, words=("'/tmp/abs'",))


def test_evaluate_recompute_checks_the_runs_dataset(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path) -> None:
    run = fake_run(tmp_path / "run", dataset="../../../../../etc")
    assert_rejected(capsys, ws, tmp_path, "evaluate", str(run), "--recompute", "--device", "cpu",
                    words=("not a usable dataset name",))


@pytest.mark.parametrize("name", ["../../../../x", "/abs", 5])
def test_tampered_dataset_json_name(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path, name: object) -> None:
    """Split files are named after dataset.json's name: a planted path there is refused too."""
    from llmhd_cli.datasets import DatasetInfo

    folder = ws / "datasets" / "d"
    folder.mkdir(parents=True)
    info = DatasetInfo("d", "movies", "atomic", None, 0, {}, {}, False, True, False)
    info.name = name  # type: ignore[assignment]
    (folder / "dataset.json").write_text(info.to_json())
    for args in (["summarize", "--dataset", "d"], ["cost", "--spent", "--dataset", "d"], ["train", "--dataset", "d"]):
        assert_rejected(capsys, ws, tmp_path, *args, words=(str(folder / "dataset.json"), "name"))


def test_run_folders_only_inside_runs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    made = runs.new_run_dir(root, "d-lightgcn-bpr-none")
    again = runs.new_run_dir(root, "d-lightgcn-bpr-none")
    assert made.parent == root and again.parent == root and made != again
    for name in ("../../x", "/abs", "a/b", ""):
        with pytest.raises(LLMHDError, match="not a usable run name|a run name is needed"):
            runs.new_run_dir(root, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    (tmp_path / "file").write_text("")
    with pytest.raises(LLMHDError, match="cannot create the run folder"):
        runs.new_run_dir(tmp_path / "file" / "runs", "d")


NAMES = st.one_of(st.text(max_size=120), st.text(alphabet="./\\-_~$ a\n\x00[]", max_size=12))


@settings(max_examples=300, deadline=None)
@given(name=NAMES)
def test_names_property(name: str) -> None:
    """Any string: a one-line error, or a name that stays directly inside its folder."""
    root = Path("/nonexistent-llmhd-root/datasets")
    try:
        checked = check_name(name)
    except LLMHDError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    path = Path(os.path.normpath(root / checked))
    assert path.parent == root and path.name == name and not Path(name).is_absolute()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
@example(name="a-valid_name.1")  # accepted, and not prepared: still one line
@example(name="../../../../x")
def test_names_property_through_the_cli(name: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """Any --dataset through the commands: exit 2 with one line, nothing written anywhere."""
    ws = tmp_path / "o1" / "o2" / "ws"
    for args in (["summarize", f"--dataset={name}"], ["cost", "--spent", f"--dataset={name}"],
                 ["train", f"--dataset={name}", "--threads", "1"],
                 ["prepare", f"--dataset={name}", "--source", str(tmp_path / "missing")]):
        assert_rejected(capsys, ws, tmp_path, *args)


# ------------------------------------------------------------------------------- values

TOML_VALUES = st.one_of(st.integers(-2**40, 2**40), st.floats(), st.booleans(), st.text(max_size=12),
                        st.dictionaries(st.text(max_size=8), st.integers(-5, 5), max_size=2))
CONFIG_KEYS = st.one_of(st.sampled_from(sorted(TrainConfig.__dataclass_fields__)), st.text(min_size=1, max_size=10))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.dictionaries(CONFIG_KEYS, TOML_VALUES, max_size=6))
def test_property_any_train_config_file_is_a_config_or_one_user_error(table: dict, tmp_path: Path) -> None:
    """Any TOML table as a --config file: a checked TrainConfig, or one LLMHDError line (never a traceback)."""
    import tomli_w

    from llmhd_cli.config import train_config

    path = tmp_path / "any.toml"
    path.write_text(tomli_w.dumps(table))
    try:
        config = train_config(path, {}, {})
    except LLMHDError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
        return
    config.validate()  # what came back is a valid config of the right types, its numbers finite
    defaults = TrainConfig()
    for key in TrainConfig.__dataclass_fields__:
        value = getattr(config, key)
        assert type(value) is type(getattr(defaults, key)), (key, value)
        assert not isinstance(value, float) or math.isfinite(value), (key, value)


NUMBER_TEXT = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats().map(repr),
                        st.sampled_from(["nan", "inf", "-inf", "1e400", "", "x", "0x10", "1_000"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(epochs=NUMBER_TEXT, lr=NUMBER_TEXT, batch=NUMBER_TEXT, early=NUMBER_TEXT, decay=NUMBER_TEXT)
def test_property_any_train_numbers_are_one_line_and_write_nothing(epochs: str, lr: str, batch: str, early: str,
                                                                  decay: str, capsys: pytest.CaptureFixture,
                                                                  tmp_path: Path) -> None:
    """Any numeric train flags (on a dataset that is not prepared, so a valid set stops there):
    exit 2 with one line, nothing written anywhere."""
    ws = tmp_path / "o1" / "o2" / "ws"
    assert_rejected(capsys, ws, tmp_path, "train", "--dataset", "absent", f"--epochs={epochs}", f"--lr={lr}",
                    f"--batch-size={batch}", f"--early-stop={early}", f"--weight-decay={decay}", "--threads", "1")




@pytest.mark.parametrize("flags,words", [
    (["--noise-ratio", "nan"], ["--noise-ratio nan"]),
    (["--noise-ratio", "inf"], ["--noise-ratio inf"]),
    (["--noise-ratio=-0.1"], ["--noise-ratio"]),
    (["--min-rating", "nan"], ["--min-rating nan", "finite"]),
    (["--min-rating", "inf"], ["--min-rating inf", "finite"]),
    (["--min-rating=-inf"], ["--min-rating -inf", "finite"]),
    (["--seed=-1"], ["--seed -1"]),
])
def test_prepare_numbers(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path, flags: list[str],
                         words: list[str]) -> None:
    assert_rejected(capsys, ws, tmp_path, "prepare", "--dataset", "ml-100k", *flags, words=tuple(words))


@pytest.mark.parametrize("entry,words", [
    ("{ input = nan, output = 1.0 }", ["finite", "mine.m"]),
    ("{ input = 1.0, output = inf }", ["finite", "mine.m"]),
    ("{ input = -1.0, output = 1.0 }", ["not negative", "mine.m"]),
    ("{ input = true, output = 1.0 }", ["numeric", "mine.m"]),
    ('{ input = "1", output = 1.0 }', ["numeric", "mine.m"]),
    ("{ output = 1.0 }", ["numeric", "mine.m"]),
    ("5", ["numeric", "mine.m"]),
])
def test_price_table_values(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path,
                            monkeypatch: pytest.MonkeyPatch, entry: str, words: list[str]) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(f"[mine]\nm = {entry}\n")
    monkeypatch.setenv("LLMHD_PRICES", str(prices))
    # cost would prepare ml-100k first, summarize would open the cache: the table fails before either
    assert_rejected(capsys, ws, tmp_path, "cost", words=(str(prices), *words))
    assert_rejected(capsys, ws, tmp_path, "summarize", words=(str(prices), *words))


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_max_cost(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path, monkeypatch: pytest.MonkeyPatch,
                  value: str) -> None:
    assert_rejected(capsys, ws, tmp_path, "summarize", f"--max-cost={value}", words=("--max-cost", "finite"))
    monkeypatch.setenv("LLMHD_MAX_COST", value)
    assert_rejected(capsys, ws, tmp_path, "summarize", words=("LLMHD_MAX_COST", "finite"))


def test_unknown_set_keys(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path) -> None:
    """Checked against the backbone's RecBole settings before ml-100k is prepared (nothing written)."""
    assert_rejected(capsys, ws, tmp_path, "train", "--set", "n_layer=3", "--threads", "1",
                    words=("--set n_layer", "lightgcn", "known: embedding_size, n_layers, reg_weight, require_pow"))
    assert_rejected(capsys, ws, tmp_path, "train", "--backbone", "ncl", "--set", "n_layers=2", "--set",
                    "num_cluster=5", words=("--set num_cluster", "'ncl'", "num_clusters"))
    assert_rejected(capsys, ws, tmp_path, "train", "--set", "epochs=5", words=("--set epochs", "use --epochs instead"))
    assert_rejected(capsys, ws, tmp_path, "train", "--set", "seed=5", words=("--set seed", "set by llmhd", "use --seed"))
    # RecBole Trainer settings llmhd's loop never reads: the flag that does the job, or why there is none.
    for key, flag in (("train_batch_size", "--batch-size"), ("learning_rate", "--learning-rate"),
                      ("eval_step", "--eval-every"), ("stopping_step", "--early-stop")):
        assert_rejected(capsys, ws, tmp_path, "train", "--set", f"{key}=5", words=(f"--set {key}", "trainer setting",
                                                                                   f"use {flag} instead"))
    for key in ("learner", "clip_grad_norm", "train_neg_sample_args", "neg_sampling"):
        assert_rejected(capsys, ws, tmp_path, "train", "--set", f"{key}=1", words=(f"--set {key}", "trainer setting", "llmhd "))
    config = tmp_path / "train.toml"
    config.write_text("[backbone_params]\nhidden_size=[8]\n")
    assert_rejected(capsys, ws, tmp_path, "train", "--backbone", "ngcf", "--config", str(config),
                    words=("hidden_size", "hidden_size_list"))


def test_known_set_keys_pass_the_check() -> None:
    from llmhd_cli import plugins
    from llmhd_cli.recbole_data import backbone_settings, check_backbone_params

    registry = plugins.registry("backbone")
    for name in ("lightgcn", "ngcf", "sgl", "ncl"):
        backbone = registry.get(name, "--backbone")
        keys = backbone_settings(backbone)
        assert "embedding_size" in keys and "seed" not in keys
        check_backbone_params(backbone, {k: None for k in keys})
    assert "require_pow" in backbone_settings(registry.get("lightgcn", "--backbone"))  # read by LightGCN's code
    assert "warm_up_step" in backbone_settings(registry.get("ncl", "--backbone"))


def _deny_writes(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``folder`` reads as not writable (as for a non-root user; the tests may run as root)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).absolute() == folder.absolute() and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_unwritable_run_and_cache_dirs(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    locked = tmp_path / "locked"
    locked.mkdir()
    for target in (blocker, blocker / "sub", blocker / "a" / "b"):
        assert_rejected(capsys, ws, tmp_path, "train", "--run-dir", str(target), words=("--run-dir", "file"))
        assert_rejected(capsys, ws, tmp_path, "cost", "--train", "--run-dir", str(target), words=("--run-dir", "file"))
    for target in (blocker / "sub", blocker / "a" / "b"):
        assert_rejected(capsys, ws, tmp_path, "summarize", "--cache-dir", str(target), words=("--cache-dir", "file"))
        assert_rejected(capsys, ws, tmp_path, "cost", "--cache-dir", str(target), words=("--cache-dir", "file"))
    monkeypatch.setenv("LLMHD_LLM_CACHE", str(blocker / "cache"))
    assert_rejected(capsys, ws, tmp_path, "summarize", words=("LLMHD_LLM_CACHE", "file"))
    monkeypatch.delenv("LLMHD_LLM_CACHE")
    _deny_writes(monkeypatch, locked)
    for target in (locked, locked / "new", locked / "a" / "b"):
        assert_rejected(capsys, ws, tmp_path, "train", "--run-dir", str(target), words=("--run-dir", "writable"))
        assert_rejected(capsys, ws, tmp_path, "summarize", "--cache-dir", str(target), words=("--cache-dir", "writable"))


@pytest.mark.parametrize("args", [["train", "--run-dir", ""], ["cost", "--train", "--run-dir", " "],
                                  ["summarize", "--cache-dir", ""], ["cost", "--cache-dir", ""],
                                  ["summarize", "--prompts", ""], ["prepare", "-d", "x", "--source", ""],
                                  ["prompts", "export", ""], ["evaluate", ""], ["--workspace", "", "providers"]],
                         ids=lambda a: " ".join(a))
def test_empty_paths_are_refused_not_the_current_folder(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path,
                                                        args: list[str]) -> None:
    """Path('') is '.': ``--run-dir ''`` used to write a run into the current folder."""
    flag = next((a for a in args if a.startswith("--") and a != "--train"), None)
    assert_rejected(capsys, ws, tmp_path, *args, words=("an empty path", *([flag] if flag else [])))


def test_plot_output(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = fake_run(tmp_path / "run")
    for output, words in ((tmp_path / "curves.foo", ("'.foo' is not an image format", "png", "svg")),
                          (tmp_path / "curves", ("no file extension",)),
                          (tmp_path / "run" / runs.LOG, ("'.jsonl' is not an image format",)),
                          (tmp_path / "run" / runs.CONFIG / "x.png", ("a file is in the way",))):
        assert_rejected(capsys, ws, tmp_path, "plot", str(run), "-o", str(output), words=(str(output), *words))
    (tmp_path / "adir.png").mkdir()
    assert_rejected(capsys, ws, tmp_path, "plot", str(run), "-o", str(tmp_path / "adir.png"))
    locked = tmp_path / "locked"
    locked.mkdir()
    with monkeypatch.context() as m:
        _deny_writes(m, locked)
        assert_rejected(capsys, ws, tmp_path, "plot", str(run), "-o", str(locked / "new" / "c.png"),
                        words=("not writable",))

    # A failing save leaves no partial file, no temporary file and no folder it made.
    import matplotlib.figure

    def broken(self, *args, **kwargs):
        Path(args[0]).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(matplotlib.figure.Figure, "savefig", broken)
        assert_rejected(capsys, ws, tmp_path, "plot", str(run), "-o", str(tmp_path / "new" / "c.png"),
                        words=("No space left on device",))

    for output in (tmp_path / "out" / "deeper" / "c.png", tmp_path / "c.svg", tmp_path / "c.PDF"):
        code, out, err = run_cli(capsys, ws, "plot", str(run), "-o", str(output))
        assert code == 0, err
        assert output.stat().st_size > 1000
    assert not [p for p in tmp_path.rglob(".*.tmp")]
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("file,content,words", [
    (runs.METRICS, "{", ["unreadable metrics"]),
    (runs.METRICS, "[]", ["unreadable metrics"]),
    (runs.METRICS, '{"test": {"ndcg@10": "high"}}', ["unreadable metrics"]),
    (runs.METRICS, '{"test": [1, 2]}', ["unreadable metrics"]),
    (runs.METRICS, b"\xff\xfe{", ["unreadable metrics"]),
    (runs.LOG, '{"epoch": 0}\n{"epoch": 1, "loss": \n', ["line 2", "unreadable log record"]),
    (runs.LOG, '{"epoch": 0}\n\n5\n', ["line 3", "unreadable log record"]),
    (runs.LOG, '{"loss": 1.0}\n', ["line 1", "'epoch'"]),
    (runs.LOG, '{"epoch": "0"}\n', ["line 1", "'epoch'"]),
    (runs.LOG, b'{"epoch": 0}\n\xff\n', ["unreadable log"]),
])
def test_corrupt_run_files(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path, file: str, content: str | bytes,
                           words: list[str]) -> None:
    run = fake_run(tmp_path / "run")
    path = run / file
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for args in (["evaluate", str(run)], ["plot", str(run), "-o", str(tmp_path / "c.png")]):
        assert_rejected(capsys, ws, tmp_path, *args, words=(str(path), *words))


def test_plot_tolerates_odd_but_valid_log_fields(capsys: pytest.CaptureFixture, tmp_path: Path, ws: Path) -> None:
    """Fields plot does not understand are skipped, not a traceback."""
    log = "".join(json.dumps(r) + "\n" for r in [
        {"epoch": 0, "loss": "x", "valid": [1], "samples": 0, "dropped": 3, "noise": None},
        {"epoch": 1, "loss": 0.5, "valid": {"ndcg@10": None}, "samples": "10", "dropped": 3, "noise": {"f1": True}},
    ])
    run = fake_run(tmp_path / "run", log=log)
    code, out, err = run_cli(capsys, ws, "plot", str(run), "-o", str(tmp_path / "c.png"))
    assert code == 0, err
    assert (tmp_path / "c.png").exists()


# ------------------------------------------------------------------------------- Ctrl-C


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _interrupt(command: list[str], ready, timeout: float = 240) -> tuple[int, str, str]:
    """Start ``command``, wait until ``ready(process)``, send SIGINT; (exit code, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # SIGINT back to its default in the child: a test run started in the background (`cmd &`
    # without job control) inherits it ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + timeout
        while not ready(proc):
            assert proc.poll() is None, ("ended before the moment to interrupt", proc.communicate())
            assert time.monotonic() < deadline, "never reached the moment to interrupt"
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def assert_interrupted(code: int, out: str, err: str) -> None:
    assert code == 130, (code, out, err)
    assert err.strip() == "interrupted", err  # click adds a blank line to close the terminal's ^C
    assert "Traceback" not in out + err


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see how far start-up got")
@pytest.mark.parametrize("entry", ["console-script", "python -m"])
@pytest.mark.parametrize("moment", [
    "_datetime",  # click and rich being imported (before cli.main runs)
    "libtorch",   # torch being imported (the plugins, inside cli.main)
])
def test_ctrl_c_during_start_up(tmp_path: Path, entry: str, moment: str) -> None:
    command = [str(LLMHD)] if entry == "console-script" else [sys.executable, "-m", "llmhd_cli"]
    command += ["--workspace", str(tmp_path / "ws"), "train", "--threads", "1"]
    code, out, err = _interrupt(command, lambda proc: _loaded(proc.pid, moment))
    assert_interrupted(code, out, err)


@pytest.mark.slow
def test_ctrl_c_during_a_training_epoch(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    src = write_ml100k_cut(tmp_path / "src", "cut", 120)
    code, out, err = run_cli(capsys, ws, "prepare", "--dataset", "cut", "--source", str(src), "--kcore", "5")
    assert code == 0, err
    lines: list[str] = []

    def in_training(proc: subprocess.Popen) -> bool:
        # the first epoch line: the loop is running its second epoch (or validating)
        lines.append(proc.stdout.readline())
        return lines[-1].startswith("epoch ")

    run_dir = tmp_path / "run"
    code, out, err = _interrupt([str(LLMHD), "--workspace", str(ws), "train", "--dataset", "cut", "--threads", "1",
                                 "--epochs", "500", "--early-stop", "0", "--batch-size", "256", "--device", "cpu",
                                 "--run-dir", str(run_dir)], in_training)
    assert_interrupted(code, "".join(lines) + out, err)
    assert (run_dir / runs.LOG).exists() and not (run_dir / runs.METRICS).exists()  # an unfinished run says so
