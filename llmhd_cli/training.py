"""The training loop: RecBole model + objective + denoiser, one run directory per run.

The loop is llmhd's own (batching, negative sampling, early stopping), but every forward
and backward pass is RecBole's model code: each mini-batch goes through the backbone's own
``calculate_loss`` with the pairwise loss swapped for a `LossSeam` (see backbones.py).
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from llmhd_cli import plugins, runs
from llmhd_cli.checkpoints import save_checkpoint
from llmhd_cli.config import TrainConfig, check_value
from llmhd_cli.datasets import PreparedDataset
from llmhd_cli.denoising import Denoiser, DenoiserSpec, TrainContext
from llmhd_cli.errors import LLMHDError
from llmhd_cli.evaluation import full_rank_metrics
from llmhd_cli.objectives import LossSeam
from llmhd_cli.recbole_data import RecBoleData, build_model, load_recbole_data, resolve_device

log = logging.getLogger(__name__)


class NonFiniteLoss(LLMHDError):
    """The training loss became NaN or infinite (diverged); `train` names the run folder."""


def pairs_per_batch(objective: str, batch_size: int) -> int:
    """Training pairs (positives) per mini-batch of ``batch_size`` samples.

    As RecBole's ``train_batch_size``, the batch size counts samples after negative sampling:
    a BPR triple is one sample, but under BCE a positive and its sampled negative are two, so
    a BCE batch holds ``batch_size // 2`` positives (an odd size rounds down, as RecBole's
    dataloader does; never fewer than one).
    """
    return max(batch_size // 2, 1) if objective == "bce" else batch_size


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    samples: int
    dropped: int
    seconds: float
    valid: dict[str, float] | None = None
    best: bool = False
    # Detection of injected noise among the positives the run took out of training this epoch:
    # the samples its denoiser dropped and the graph edges its backbone pruned (RGCF).
    noise: dict[str, float] | None = None
    denoiser: dict[str, Any] = field(default_factory=dict)
    backbone: dict[str, Any] = field(default_factory=dict)  # Backbone.epoch_diagnostics


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs_run: int
    seconds_per_epoch: float
    noise_detection: dict[str, Any] | None = None  # see _noise_summary


class TrainObserver(Protocol):
    """What the CLI implements to show progress; every method is optional in practice."""

    def message(self, text: str) -> None: ...
    def epoch_start(self, epoch: int, n_batches: int) -> None: ...
    def batch_done(self) -> None: ...
    def epoch_end(self, record: EpochRecord) -> None: ...


class _Silent:
    def message(self, text: str) -> None:
        log.info(text)

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        pass

    def batch_done(self) -> None:
        pass

    def epoch_end(self, record: EpochRecord) -> None:
        pass


class NegativeSampler:
    """Uniform negatives: items the user has no training interaction with (as RecBole's sampler)."""

    def __init__(self, data: RecBoleData, rng: np.random.Generator) -> None:
        self.n_items = data.n_items
        self.keys = np.unique(data.train_users.astype(np.int64) * self.n_items + data.train_items)
        self.rng = rng

    def sample(self, users: np.ndarray) -> np.ndarray:
        neg = self.rng.integers(1, self.n_items, size=len(users))
        todo = np.arange(len(users))
        while len(todo):
            query = users[todo].astype(np.int64) * self.n_items + neg[todo]
            pos = np.searchsorted(self.keys, query)
            clash = self.keys[np.minimum(pos, len(self.keys) - 1)] == query
            todo = todo[clash]
            neg[todo] = self.rng.integers(1, self.n_items, size=len(todo))
        return neg


class EpochLoop:
    """One pass over the training pairs: shuffle, uniform negatives, then RecBole's loss per mini-batch.

    `train` runs one per epoch; benchmarks time it on its own. Every random draw comes from
    ``rng`` (order, then negatives) so a seed fixes the batches. ``batch_size`` counts samples
    of the seam's objective (`pairs_per_batch`).
    """

    def __init__(self, model: torch.nn.Module, backbone: Any, data: RecBoleData, seam: LossSeam,
                 optimizer: torch.optim.Optimizer, rng: np.random.Generator, batch_size: int,
                 device: torch.device) -> None:
        from recbole.data.interaction import Interaction

        self._interaction = Interaction
        self.model, self.backbone, self.data, self.seam = model, backbone, data, seam
        self.optimizer, self.rng, self.batch_size, self.device = optimizer, rng, batch_size, device
        self.sampler = NegativeSampler(data, rng)
        self.n_train = len(data.train_users)
        self.pairs = pairs_per_batch(seam.objective, batch_size)
        self.n_batches = -(-self.n_train // self.pairs)
        self.users_t = torch.as_tensor(data.train_users, dtype=torch.long)
        self.items_t = torch.as_tensor(data.train_items, dtype=torch.long)

    def run(self, epoch: int, step: int, observer: TrainObserver) -> tuple[int, dict[str, Any]]:
        """Train one epoch; returns the global step after it and the denoiser's epoch diagnostics."""
        model, backbone, data, seam, device, bs = self.model, self.backbone, self.data, self.seam, self.device, self.pairs
        uid, iid, nid = model.USER_ID, model.ITEM_ID, model.NEG_ITEM_ID
        if backbone.on_epoch_start is not None:
            backbone.on_epoch_start(model, epoch, data.config)
        model.train()
        seam.denoiser.start_epoch(epoch)
        seam.stats.reset()
        observer.epoch_start(epoch, self.n_batches)
        order = torch.as_tensor(self.rng.permutation(self.n_train))
        negatives = torch.as_tensor(self.sampler.sample(data.train_users[order.numpy()]), dtype=torch.long)
        # Gather the epoch's rows once and move them in one transfer each; batches are slices (views).
        users_e, items_e = self.users_t[order].to(device), self.items_t[order].to(device)
        neg_e, rows_e = negatives.to(device), order.to(device)
        # One flag per batch, read once after the epoch: a per-batch check would sync a GPU every
        # step. Once the loss is NaN the weights are too, so the epoch's rest changes nothing.
        finite: list[torch.Tensor] = []
        for b in range(self.n_batches):
            batch = slice(b * bs, (b + 1) * bs)
            users, pos, neg = users_e[batch], items_e[batch], neg_e[batch]
            seam.set_batch(users, pos, neg, rows_e[batch], step, epoch)
            loss = backbone.batch_loss(model, self._interaction({uid: users, iid: pos, nid: neg}), seam, epoch, data.config)
            finite.append(torch.isfinite(loss.detach()).all())  # all(): some models' losses have shape (1,)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            step += 1
            observer.batch_done()
        self._check_finite(epoch, finite)
        return step, seam.denoiser.end_epoch(epoch, model)

    def _check_finite(self, epoch: int, finite: list[torch.Tensor]) -> None:
        """Stop on the first batch whose loss was NaN or infinite, as RecBole's trainer does."""
        if not finite:
            return
        flags = torch.stack(finite).cpu()
        if bool(flags.all()):
            return
        batch = int((~flags).nonzero()[0, 0])
        lr = self.optimizer.param_groups[0]["lr"]
        raise NonFiniteLoss(f"epoch {epoch}, batch {batch + 1} of {self.n_batches}: the training loss is NaN or "
                            f"infinite (training diverged); lower --learning-rate (now {lr:g})")


def denoiser_options(spec: DenoiserSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The denoiser's options: its defaults overridden by ``given``; unknown keys are errors."""
    known = {o.name: o for o in spec.options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        listing = ", ".join(known) or "none"
        raise LLMHDError(f"denoiser '{spec.name}' has no option '{unknown[0]}' (its options: {listing})")
    options = {name: o.default for name, o in known.items()}
    for name, value in given.items():
        kind = known[name].type
        if kind in (int, float, str, bool):
            # Strict, as the run's other keys: int(3.7) or float(True) would pass silently.
            options[name] = check_value(value, kind, f"denoiser option {known[name].flag}", name)
        else:
            try:
                options[name] = kind(value)
            except (TypeError, ValueError):
                raise LLMHDError(f"{known[name].flag}: expected {kind.__name__}, got '{value}'") from None
        choices = known[name].choices
        if choices and options[name] not in choices:
            raise LLMHDError(f"{known[name].flag}: expected one of {', '.join(choices)}, got '{value}'")
    return options


def _noise_detection(data: RecBoleData, dropped_pairs: list[torch.Tensor]) -> dict[str, float] | None:
    """Precision/recall of this epoch's dropped positives (training rows, repeats counted) against the injected noise."""
    n_noise = int(data.is_noise.sum())
    if n_noise == 0:
        return None
    idx = torch.cat(dropped_pairs).numpy() if dropped_pairs else np.array([], dtype=np.int64)
    hits = int(data.is_noise[idx].sum()) if len(idx) else 0
    unique_hits = int(data.is_noise[np.unique(idx)].sum()) if len(idx) else 0
    precision = hits / len(idx) if len(idx) else 0.0
    recall = unique_hits / n_noise
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"dropped_positives": int(len(idx)), "precision": precision, "recall": recall, "f1": f1}


def train(config: TrainConfig, dataset: PreparedDataset, runs_root: Path, observer: TrainObserver | None = None,
          run_dir: Path | None = None,
          denoiser_factory: Callable[[dict[str, Any], TrainContext], Denoiser] | None = None) -> TrainResult:
    """Train one model and write its run directory. Same config and seed, same metrics.

    ``denoiser_factory`` builds the denoiser instead of its spec's factory (same options and
    context): ``llmhd cost`` trains with a dry-run llmhd denoiser this way.
    """
    observer = observer or _Silent()
    config.validate()
    backbone = plugins.registry("backbone").get(config.backbone, "--backbone")
    spec: DenoiserSpec = plugins.registry("denoiser").get(config.denoiser, "--denoiser")
    options = denoiser_options(spec, config.denoiser_params)
    device = resolve_device(config.device)
    if config.threads:
        # On a shared or small machine fewer threads than cores can be much faster.
        torch.set_num_threads(config.threads)
    if run_dir is not None and run_dir.exists() and any(run_dir.iterdir()):
        raise LLMHDError(f"--run-dir {run_dir}: folder is not empty; name a new one or remove it first")

    from recbole.utils import init_seed

    data = load_recbole_data(dataset, backbone, config.backbone_params, config.seed, device)
    init_seed(config.seed, reproducibility=True)
    model = build_model(data, backbone)
    n_train = len(data.train_users)
    n_batches = -(-n_train // pairs_per_batch(config.objective, config.batch_size))

    run_dir = run_dir or runs.new_run_dir(runs_root, f"{config.dataset}-{config.backbone}-{config.objective}-{config.denoiser}")
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_environment(run_dir, str(device))

    context = TrainContext(config.objective, data.n_users, data.n_items, n_train, n_batches, device, run_dir, dataset,
                           backbone=backbone, data=data, workspace=runs_root.parent, seed=config.seed)
    try:
        denoiser = (denoiser_factory or spec.factory)(options, context)
    except BaseException:
        # A rejected option or a missing LLM prerequisite: leave no half-made run behind.
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    # Written after the factory, which may fill in what it resolved (llmhd: the LLM provider and
    # model taken from the environment or the user config), so the run's config reruns it.
    resolved = config.to_dict()
    resolved["denoiser_params"] = options
    runs.write_config(run_dir, resolved)
    seam = LossSeam(config.objective, denoiser)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    loop = EpochLoop(model, backbone, data, seam, optimizer, rng, config.batch_size, device)

    observer.message(
        f"training {config.backbone} ({config.objective}, denoiser {config.denoiser}) on {dataset.name}: "
        f"{data.n_users - 1} users, {data.n_items - 1} items, {n_train} training interactions, {n_batches} batches/epoch, device {device}"
    )
    best_score, best_epoch, best_state, best_valid = -1.0, -1, None, {}
    stale, step, epoch_times = 0, 0, []
    epoch = -1
    try:
        for epoch in range(config.epochs):
            start = time.perf_counter()
            step, extra = loop.run(epoch, step, observer)
            train_seconds = time.perf_counter() - start
            epoch_times.append(train_seconds)
            structure = backbone.epoch_diagnostics(model, data) if backbone.epoch_diagnostics else {}
            pruned = structure.pop("pruned_rows", None)
            removed = [*seam.stats.dropped_pairs, *([torch.as_tensor(pruned, dtype=torch.long)] if pruned is not None else [])]
            record = EpochRecord(
                epoch=epoch,
                loss=seam.stats.loss_sum / max(seam.stats.samples, 1),
                samples=seam.stats.samples,
                dropped=seam.stats.dropped,
                seconds=train_seconds,
                noise=_noise_detection(data, removed),
                denoiser=extra,
                backbone=structure,
            )
            if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
                record.valid = full_rank_metrics(model, data.valid_csr, [data.train_csr])
                score = record.valid[config.valid_metric] if config.valid_metric in record.valid else _metric(model, data, config)
                if score > best_score:
                    best_score, best_epoch, best_valid = score, epoch, record.valid
                    best_state = copy.deepcopy(model.state_dict())
                    save_checkpoint(run_dir, best_state)
                    record.best, stale = True, 0
                else:
                    stale += 1
            runs.append_log(run_dir, asdict(record))
            observer.epoch_end(record)
            if config.early_stop and stale >= config.early_stop:
                observer.message(f"early stop: no {config.valid_metric} improvement in {stale} evaluations; best epoch {best_epoch}")
                break
    except NonFiniteLoss as exc:
        # The folder stays as an interrupted run's does: earlier epochs' log and best checkpoint, no metrics.json.
        raise NonFiniteLoss(f"{exc}; {run_dir} keeps the epochs before it, without metrics.json") from None
    finally:
        denoiser.close()
    if best_state is not None:
        # Also drops the propagated embeddings the last validation cached (Backbone.load_state).
        backbone.load_state(model, best_state)
    test_users = full_rank_metrics(model, data.test_csr, [data.train_csr, data.valid_csr], per_user=True)
    test = test_users.means()
    test_users.save(run_dir / runs.PER_USER)  # for evaluate's paired test over users
    result = TrainResult(run_dir, config, best_epoch, best_valid, test, epoch + 1,
                         float(np.mean(epoch_times)) if epoch_times else 0.0,
                         _noise_summary(record) if epoch >= 0 else None)
    runs.write_metrics(run_dir, {
        "best_epoch": best_epoch,
        "epochs_run": result.epochs_run,
        "seconds_per_epoch": result.seconds_per_epoch,
        "valid": best_valid,
        "test": test,
        "n_noise": int(data.is_noise.sum()),
        "noise_detection": result.noise_detection,
    })
    return result


def _noise_summary(record: EpochRecord) -> dict[str, Any] | None:
    """How the final epoch's denoiser treated the injected noise: precision/recall/F1 of the
    positives it dropped and, for denoisers with a notion of hard samples, the share of noise
    among its candidates that it kept as hard."""
    if record.noise is None:
        return None
    out: dict[str, Any] = {"epoch": record.epoch, **record.noise}
    candidates = record.denoiser.get("noise_candidates")
    if candidates:
        out["noise_candidates"] = candidates
        out["noise_kept_hard"] = record.denoiser.get("noise_kept_hard", 0)
        out["kept_hard_share"] = out["noise_kept_hard"] / candidates
    if "noise" in record.backbone:  # the backbone's own share (RGCF's pruned edges), apart from the denoiser's
        out["pruned"] = record.backbone["noise"]
    return out


def _metric(model: torch.nn.Module, data: RecBoleData, config: TrainConfig) -> float:
    """A validation metric at a K outside the default set."""
    k = int(config.valid_metric.partition("@")[2])
    return full_rank_metrics(model, data.valid_csr, [data.train_csr], ks=(k,))[config.valid_metric]
