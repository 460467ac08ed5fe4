"""Full-ranking evaluation (Recall@K, NDCG@K), run comparison tables and their statistics.

Every item is ranked for every user; items the user interacted with in the masked splits
(training for validation; training and validation for test) and RecBole's padding item are
excluded. Users without ground-truth items in the evaluated split are skipped. Definitions
follow RecBole: Recall@K = hits / |truth|; NDCG@K = DCG@K / IDCG@K with IDCG over
min(|truth|, K) hits. The reported metric is the mean over users; the per-user values are
kept (`UserMetrics`) so that two settings can be compared user by user.

Comparing settings (``llmhd evaluate --group --baseline SPEC``):

- A *setting* is a run's config without ``seed``, ``device``, ``threads`` and paths
  (``run_dir``): runs that differ only in those are one group, shown as mean ± std.
  Runs whose LLM may have seen the test data (`run_leaks`) never share a group with others.
- The *baseline* is one named group per block: SPEC is ``key=value[,key=value...]`` matched
  against the groups' configs (a bare word is ``denoiser=WORD``), or a run folder (its group
  is the baseline of every group). Blocks are the groups sharing the dataset, backbone and
  objective that SPEC does not name: ``denoiser=none`` compares within each
  dataset/backbone/objective, ``backbone=lightgcn,denoiser=none`` compares every backbone
  against LightGCN. Exactly one group of each block must match.
- Two tests per metric against the baseline. Welch's t-test over seeds (the runs' mean
  metrics: is the difference larger than seed-to-seed variation?) and a paired test over
  test users (each user's metric averaged over the setting's seeds, paired with the same
  user's under the baseline: is the difference consistent across users?). The paired test
  needs the same test split on both sides and refuses anything else. It is the paired
  t-test by default: the reported number is a mean over users, and the t-test is a test of
  exactly that mean difference (with hundreds of users the mean of the differences is close
  to normal even though single users' metrics are not); Wilcoxon's signed-rank test
  (``--paired-test wilcoxon``, zeros handled by Pratt's method) asks whether differences are
  symmetric around zero, which with many users at 0 under both settings can disagree with
  the sign of the mean difference. p-values are two-sided and not corrected for multiple
  comparisons.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import scipy.sparse as sp
import torch

from llmhd_cli.errors import LLMHDError

if TYPE_CHECKING:
    from recbole.model.abstract_recommender import GeneralRecommender

DEFAULT_KS = (5, 10)
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
PAIRED_TESTS = ("t", "wilcoxon")
# What makes two runs the same setting: they may differ in these (and nothing else).
IGNORED_FOR_GROUPING = ("seed", "device", "threads", "run_dir")
# Keys of a setting that split blocks of groups unless a baseline spec names them.
_BLOCK_KEYS = ("dataset", "backbone", "objective")
_IDENTITY = ("dataset", "backbone", "objective", "denoiser")
_NESTED = ("denoiser_params", "backbone_params")


# --------------------------------------------------------------------------- ranking


@dataclass
class UserMetrics:
    """Per-user metrics of one evaluated split: ``values[metric][i]`` belongs to ``users[i]``
    (RecBole's internal user ids). ``split`` fingerprints the split's ground truth, so that
    vectors of different splits are never paired."""

    users: np.ndarray
    values: dict[str, np.ndarray]
    split: str

    def means(self) -> dict[str, float]:
        n = max(len(self.users), 1)
        return {key: float(v.sum() / n) for key, v in self.values.items()}

    def save(self, path: Path) -> None:
        """As ``.npz`` (plain arrays, readable with ``allow_pickle=False``), written atomically."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            arrays: dict[str, Any] = {"users": self.users, "split": np.array(self.split), **self.values}
            np.savez(f, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> UserMetrics:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise LLMHDError(f"{path}: unreadable per-user metrics ({exc}); run evaluate with --recompute") from None
        users, split = arrays.pop("users", None), arrays.pop("split", None)
        if users is None or split is None or any(v.shape != users.shape for v in arrays.values()):
            raise LLMHDError(f"{path}: malformed per-user metrics; run evaluate with --recompute")
        return cls(users, arrays, str(split))


def split_fingerprint(truth: sp.csr_matrix) -> str:
    """A short hash of which users hold which items in ``truth``."""
    t = truth.tocsr(copy=True)
    t.sort_indices()
    h = hashlib.sha256()
    for part in (np.asarray(t.shape), t.indptr, t.indices):
        h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


@overload
def full_rank_metrics(model: GeneralRecommender, truth: sp.csr_matrix, masks: Sequence[sp.csr_matrix],
                      ks: Sequence[int] = ..., batch_users: int = ..., per_user: Literal[False] = ...) -> dict[str, float]: ...


@overload
def full_rank_metrics(model: GeneralRecommender, truth: sp.csr_matrix, masks: Sequence[sp.csr_matrix],
                      ks: Sequence[int] = ..., batch_users: int = ..., *, per_user: Literal[True]) -> UserMetrics: ...


@torch.no_grad()
def full_rank_metrics(
    model: GeneralRecommender,
    truth: sp.csr_matrix,
    masks: Sequence[sp.csr_matrix],
    ks: Sequence[int] = DEFAULT_KS,
    batch_users: int = 1024,
    per_user: bool = False,
) -> dict[str, float] | UserMetrics:
    """Recall@K and NDCG@K of ``model`` (a RecBole general recommender) on ``truth``: the
    means over users, or with ``per_user`` every user's values (`UserMetrics`)."""
    from recbole.data.interaction import Interaction

    model.eval()
    device = next(model.parameters()).device
    n_items = truth.shape[1]
    counts = np.diff(truth.indptr)
    users = np.flatnonzero(counts)
    mask = masks[0].copy()
    for m in masks[1:]:
        mask = mask + m
    mask = mask.tocsr()
    max_k = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))
    parts: dict[str, list[np.ndarray]] = {f"{name}@{k}": [] for k in ks for name in ("recall", "ndcg")}
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]
        inter = Interaction({model.USER_ID: torch.as_tensor(batch, dtype=torch.long, device=device)})
        scores = model.full_sort_predict(inter).view(len(batch), n_items)
        scores[:, 0] = -torch.inf  # RecBole's padding item
        rows, cols = mask[batch].nonzero()
        scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
        top = torch.topk(scores, max_k, dim=1).indices.cpu().numpy()
        # hits[u, r]: is the item at rank r in u's ground truth
        hits = np.take_along_axis(truth[batch].toarray() > 0, top, axis=1)
        n_truth = counts[batch]
        for k in ks:
            hit_k = hits[:, :k]
            parts[f"recall@{k}"].append(hit_k.sum(1) / n_truth)
            dcg = (hit_k * discounts[:k]).sum(1)
            ideal = np.cumsum(discounts[:k])[np.minimum(n_truth, k) - 1]
            parts[f"ndcg@{k}"].append(dcg / ideal)
    values = {key: np.concatenate(v) if v else np.zeros(0) for key, v in parts.items()}
    # The fingerprint only matters for stored vectors; validation every epoch skips the hash.
    result = UserMetrics(users.astype(np.int64), values, split_fingerprint(truth) if per_user else "")
    return result if per_user else result.means()


# --------------------------------------------------------------------------- runs


@dataclass
class RunEvaluation:
    """One run as evaluate sees it: its table row, config and per-user test metrics."""

    path: Path
    config: dict[str, Any]
    row: dict[str, Any]
    per_user: UserMetrics | None  # None: trained before per-user metrics were stored
    leak: bool


def run_leaks(config: dict[str, Any]) -> bool:
    """Whether the run's LLM may have seen the evaluation data: its provider lists the model
    in ``leaky_models``. An absent model is the provider's default (its first); an absent or
    uninstalled provider cannot be judged and counts as not leaking."""
    from llmhd_cli import plugins

    params = config.get("denoiser_params") or {}
    name = params.get("provider")
    provider = plugins.registry("provider").items.get(name) if name else None
    if provider is None:
        return False
    models = tuple(getattr(provider, "models", ()) or ())
    model = params.get("model") or (models[0] if models else None)
    return model is not None and model in tuple(getattr(provider, "leaky_models", ()) or ())


def evaluate_runs(run_dirs: Sequence[Path], workspace: Path, recompute: bool = False,
                  device: str = "auto") -> list[RunEvaluation]:
    """Each run's identity and test metrics: stored (metrics.json, test_per_user.npz) or,
    with ``recompute``, ranked again from the checkpoint."""
    from llmhd_cli import runs

    out = []
    for path in run_dirs:
        record = runs.read_run(Path(path))
        test = record.metrics.get("test", {})
        per_user = None
        if recompute:
            from llmhd_cli.checkpoints import load_run_model

            model, data, _ = load_run_model(record.path, workspace, device)
            per_user = full_rank_metrics(model, data.test_csr, [data.train_csr, data.valid_csr], per_user=True)
            test = per_user.means()
        elif (record.path / runs.PER_USER).exists():
            per_user = UserMetrics.load(record.path / runs.PER_USER)
        cfg = record.config
        leak = run_leaks(cfg)
        row = {"run": record.path.name, "dataset": cfg.get("dataset"), "backbone": cfg.get("backbone"),
               "objective": cfg.get("objective"), "denoiser": cfg.get("denoiser"), "leak": leak,
               "seed": cfg.get("seed"), "best_epoch": record.metrics.get("best_epoch")}
        row.update({k: float(test[k]) for k in METRICS if k in test})
        noise = record.metrics.get("noise_detection")
        if noise:
            row.update({"noise P": float(noise["precision"]), "noise R": float(noise["recall"]),
                        "noise F1": float(noise["f1"]), "noise kept hard": float(noise.get("kept_hard_share", float("nan")))})
        out.append(RunEvaluation(record.path, cfg, row, per_user, leak))
    return out


def run_rows(evaluations: Sequence[RunEvaluation]) -> list[dict[str, Any]]:
    """One row per run, the same columns in every row (runs without injected noise: NaN)."""
    columns = list(dict.fromkeys(k for e in evaluations for k in e.row))
    return [{k: e.row.get(k, float("nan")) for k in columns} for e in evaluations]


def render_rows(rows: list[dict], fmt: str) -> str:
    """Rows as json, csv or a markdown table."""
    import csv
    import io

    if fmt == "json":
        # NaN (undefined std or p-value) is not JSON: write null.
        clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows]
        return json.dumps(clean, indent=2) + "\n"
    columns = list(rows[0])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "markdown":
        def cell(v):
            return f"{v:.4f}" if isinstance(v, float) else str(v)
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    raise ValueError(fmt)


# --------------------------------------------------------------------------- statistics


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value of two sets of run means; NaN under two runs a side."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def paired_p(a: np.ndarray, b: np.ndarray, test: str = "t") -> float:
    """Two-sided p-value of a paired test over users (``a[i]`` and ``b[i]`` are one user's):
    the paired t-test, or Wilcoxon's signed-rank test with Pratt's zero handling. NaN when
    every user scores the same under both (nothing to test)."""
    from scipy import stats

    if test not in PAIRED_TESTS:
        raise ValueError(test)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == b):
        return float("nan")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if test == "t":
            return float(stats.ttest_rel(a, b).pvalue)
        return float(stats.wilcoxon(a, b, zero_method="pratt").pvalue)


# --------------------------------------------------------------------------- groups


@dataclass
class _Group:
    setting: dict[str, Any]  # flattened config without the ignored keys
    leak: bool
    members: list[RunEvaluation] = field(default_factory=list)

    def get(self, key: str) -> Any:
        return self.leak if key == "leak" else self.setting.get(key)


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in IGNORED_FOR_GROUPING:
            continue
        if isinstance(value, dict) and key in _NESTED:
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def make_groups(evaluations: Sequence[RunEvaluation]) -> list[_Group]:
    """Runs of one setting (and one leak status) together, in order of first appearance."""
    groups: dict[str, _Group] = {}
    for e in evaluations:
        setting = _flatten(e.config)
        key = json.dumps([setting, e.leak], sort_keys=True, default=str)
        groups.setdefault(key, _Group(setting, e.leak)).members.append(e)
    return list(groups.values())


def _short(key: str) -> str:
    # Options are shown without their table (alpha, not denoiser_params.alpha); --baseline takes either.
    table, _, rest = key.partition(".")
    return rest if table in _NESTED and rest else key


def _show(key: str, value: Any) -> str:
    if isinstance(value, bool):
        value = str(value).lower()
    return f"{_short(key)}={value}"


def _differences(group: _Group, others: Sequence[_Group], skip: Sequence[str] = ()) -> str:
    """The settings in which ``group`` differs from some of ``others`` (its own values)."""
    keys = [k for k in dict.fromkeys([*group.setting, "leak"]) if k not in skip]
    shown = [k for k in keys if any(o is not group and o.get(k) != group.get(k) for o in others)]
    return " ".join(_show(k, group.get(k)) for k in shown)


def _label(group: _Group, among: Sequence[_Group]) -> str:
    return _differences(group, among) or _show("denoiser", group.get("denoiser"))


@dataclass
class BaselineSpec:
    """What ``--baseline`` names: setting key=value pairs, or the group of one run folder."""

    text: str
    pairs: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = None


def parse_baseline(text: str) -> BaselineSpec:
    """``key=value[,key=value...]``, a run folder, or a bare denoiser name (``denoiser=NAME``)."""
    text = text.strip()
    if "=" in text:
        pairs: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or not key or not value:
                raise LLMHDError(f"--baseline {text}: expected key=value pairs separated by commas, got '{part.strip()}'")
            if key in IGNORED_FOR_GROUPING:
                raise LLMHDError(f"--baseline {text}: '{key}' is not part of a setting (runs that differ only in "
                                 f"{', '.join(IGNORED_FOR_GROUPING)} are one group)")
            if key in pairs:
                raise LLMHDError(f"--baseline {text}: '{key}' given twice")
            pairs[key] = value
        return BaselineSpec(text, pairs)
    path = Path(text)
    if "/" in text or path.is_dir():
        if not (path / "config.toml").exists():
            raise LLMHDError(f"--baseline {text}: not a run folder (no config.toml)")
        return BaselineSpec(text, run_dir=path)
    if not text:
        raise LLMHDError("--baseline: empty; name a setting (denoiser=none), a run folder or a denoiser")
    return BaselineSpec(text, {"denoiser": text})


def _resolve_key(key: str, groups: Sequence[_Group], spec: BaselineSpec) -> str:
    """A spec key as a setting key: top-level, dotted, or a bare option of denoiser_params/backbone_params."""
    known = {k for g in groups for k in g.setting} | {"leak"}
    if key in known:
        return key
    nested = [f"{n}.{key}" for n in _NESTED if f"{n}.{key}" in known]
    if len(nested) == 1:
        return nested[0]
    if nested:
        raise LLMHDError(f"--baseline {spec.text}: '{key}' is in both {' and '.join(nested)}; name one of them")
    listing = ", ".join(sorted({_short(k) for k in known}))
    raise LLMHDError(f"--baseline {spec.text}: no run has a setting '{key}' (settings: {listing})")


def _matches(value: Any, text: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return text.lower() in (("true", "yes", "1") if value else ("false", "no", "0"))
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return str(value) == text


def pick_baselines(groups: Sequence[_Group], spec: BaselineSpec) -> list[_Group]:
    """The baseline group of each group (see the module docstring); one-line errors when a
    block has no matching group or several."""
    if spec.run_dir is not None:
        target = spec.run_dir.resolve()
        hits = [g for g in groups if any(m.path.resolve() == target for m in g.members)]
        if not hits:
            raise LLMHDError(f"--baseline {spec.text}: not among the runs evaluated; add it to the RUN_DIR arguments")
        return [hits[0]] * len(groups)
    pairs = {_resolve_key(k, groups, spec): v for k, v in spec.pairs.items()}
    block_keys = [k for k in _BLOCK_KEYS if k not in pairs]
    blocks: dict[tuple, list[_Group]] = {}
    for g in groups:
        blocks.setdefault(tuple(g.get(k) for k in block_keys), []).append(g)
    chosen: dict[tuple, _Group] = {}
    for block, members in blocks.items():
        hits = [g for g in members if all(_matches(g.get(k), v) for k, v in pairs.items())]
        where = f" among {'/'.join(str(v) for v in block)}" if block_keys else ""
        if not hits:
            listing = "; ".join(_label(g, members) for g in members)
            raise LLMHDError(f"--baseline {spec.text}: no setting matches{where}; candidates: {listing}")
        if len(hits) > 1:
            listing = "; ".join(_label(g, hits) for g in hits)
            raise LLMHDError(f"--baseline {spec.text}: {len(hits)} settings match{where} ({listing}); "
                             "add key=value pairs to name one")
        chosen[block] = hits[0]
    return [chosen[tuple(g.get(k) for k in block_keys)] for g in groups]


def _user_means(group: _Group) -> UserMetrics:
    """Each user's metrics averaged over the group's runs (all on one test split)."""
    first = group.members[0]
    per_user: list[UserMetrics] = []
    for m in group.members:
        if m.per_user is None:
            raise LLMHDError(f"{m.path}: no per-user test metrics (trained before they were stored); "
                             "the paired test needs them: run evaluate with --recompute")
        if per_user and m.per_user.split != per_user[0].split:
            raise LLMHDError(f"paired test: {first.path.name} and {m.path.name} (one setting) were evaluated on "
                             f"different test splits of '{group.get('dataset')}'; was the dataset prepared again?")
        per_user.append(m.per_user)
    values = {k: np.mean([u.values[k] for u in per_user], axis=0) for k in per_user[0].values}
    return UserMetrics(per_user[0].users, values, per_user[0].split)


def group_rows(evaluations: Sequence[RunEvaluation], baseline: str | BaselineSpec | None = None,
               paired_test: str = "t") -> list[dict[str, Any]]:
    """One row per setting: mean and std over its runs and, with ``baseline``, p-values of
    Welch's test over seeds and of the paired test over users against its baseline group."""
    groups = make_groups(evaluations)
    spec = parse_baseline(baseline) if isinstance(baseline, str) else baseline
    bases = pick_baselines(groups, spec) if spec else [None] * len(groups)
    user_means: dict[int, UserMetrics] = {}
    out = []
    for group, base in zip(groups, bases, strict=True):
        rows = [m.row for m in group.members]
        first = rows[0]
        siblings = [g for g in groups if all(g.get(k) == group.get(k) for k in _IDENTITY)]
        summary: dict[str, Any] = {k: first[k] for k in _IDENTITY}
        summary["setting"] = _differences(group, siblings, skip=("leak",))
        summary["leak"] = group.leak
        summary["runs"] = len(rows)
        summary["seeds"] = ",".join(str(r["seed"]) for r in rows)
        for metric in METRICS:
            values = np.array([r[metric] for r in rows if metric in r], dtype=float)
            summary[f"{metric} mean"] = float(values.mean()) if len(values) else float("nan")
            summary[f"{metric} std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        for extra in ("noise F1", "noise kept hard"):
            values = np.array([r.get(extra, np.nan) for r in rows], dtype=float)
            summary[f"{extra} mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        if base is not None:
            summary["baseline"] = "(baseline)" if base is group else _differences(base, [group]) or "(same setting)"
            summary.update(_p_values(group, base, user_means, paired_test))
        out.append(summary)
    return out


def _p_values(group: _Group, base: _Group, cache: dict[int, UserMetrics], paired_test: str) -> dict[str, float]:
    nan = float("nan")
    welch = {f"p welch {m}": nan for m in METRICS}
    paired = {f"p paired-{paired_test} {m}": nan for m in METRICS}
    if base is group:
        return {**welch, **paired}
    for metric in METRICS:
        welch[f"p welch {metric}"] = welch_p([m.row[metric] for m in group.members if metric in m.row],
                                             [m.row[metric] for m in base.members if metric in m.row])
    if group.get("dataset") != base.get("dataset"):
        raise LLMHDError(f"paired test: '{group.get('dataset')}' runs cannot be paired with the baseline's "
                         f"'{base.get('dataset')}' runs (different test users); leave dataset out of --baseline")
    for g in (group, base):
        if id(g) not in cache:
            cache[id(g)] = _user_means(g)
    a, b = cache[id(group)], cache[id(base)]
    if a.split != b.split or not np.array_equal(a.users, b.users):
        raise LLMHDError(f"paired test: {group.members[0].path.name} and the baseline {base.members[0].path.name} were "
                         f"evaluated on different test splits of '{group.get('dataset')}'; was the dataset prepared again?")
    for metric in METRICS:
        if metric in a.values and metric in b.values:
            paired[f"p paired-{paired_test} {metric}"] = paired_p(a.values[metric], b.values[metric], paired_test)
    return {**welch, **paired}
