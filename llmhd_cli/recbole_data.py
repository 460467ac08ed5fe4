"""Build RecBole's config, dataset and model for a prepared dataset.

RecBole loads the prepared benchmark files itself (``<name>.{train,valid,test}.inter``), so
the id mapping, the training graph and the model are exactly RecBole's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from llmhd_cli import recbole_compat
from llmhd_cli.backbones import Backbone
from llmhd_cli.datasets import PreparedDataset
from llmhd_cli.errors import LLMHDError

log = logging.getLogger(__name__)


@dataclass
class RecBoleData:
    """RecBole's view of a prepared dataset, plus the arrays llmhd's loop needs (internal ids)."""

    config: Any
    train_dataset: Any  # recbole Dataset of the training split (what models are built on)
    n_users: int  # including RecBole's padding id 0
    n_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    train_csr: sp.csr_matrix  # users x items, training interactions (noise included)
    valid_csr: sp.csr_matrix
    test_csr: sp.csr_matrix
    is_noise: np.ndarray  # per training row: injected noise?
    user_tokens: np.ndarray  # internal id -> source token
    item_tokens: np.ndarray


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LLMHDError("--device cuda: no CUDA device is available here; use --device auto or cpu")
    if device not in ("cpu", "cuda"):
        raise LLMHDError(f"--device: expected auto, cpu or cuda, got '{device}'")
    return torch.device(device)


def _csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    data = np.ones(len(users), dtype=np.float32)
    return sp.csr_matrix((data, (users, items)), shape=shape)


def load_recbole_data(dataset: PreparedDataset, backbone: Backbone, params: dict[str, Any], seed: int,
                      device: torch.device) -> RecBoleData:
    """Create RecBole's Config and Dataset for ``dataset`` and the arrays of its splits."""
    check_backbone_params(backbone, params)
    recbole_compat.apply()
    from recbole.config import Config

    config_dict = {
        "data_path": str(dataset.path.parent),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"]},
        "seed": seed,
        "reproducibility": True,
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "checkpoint_dir": str(dataset.recbole_dir),
        **backbone.defaults,
        **params,
    }
    with recbole_compat.isolated_argv(), recbole_compat.preserved_cuda_env():
        try:
            config = Config(model=backbone.load_class(), dataset=dataset.name, config_dict=config_dict)
        except (KeyError, ValueError, TypeError) as exc:
            raise LLMHDError(f"backbone '{backbone.name}': invalid RecBole setting ({exc})") from exc
    _check_setting_types(config, params, backbone.name)
    config["device"] = device
    recbole_compat.read_prepared_files(config, dataset.path)
    full = recbole_compat.create_dataset_uncached(config)
    train_ds, valid_ds, test_ds = full.build()
    n_users, n_items = full.user_num, full.item_num

    def ids(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        return ds.inter_feat["user_id"].numpy(), ds.inter_feat["item_id"].numpy()

    tu, ti = ids(train_ds)
    vu, vi = ids(valid_ds)
    su, si = ids(test_ds)
    user_tokens = np.asarray(full.field2id_token["user_id"])
    item_tokens = np.asarray(full.field2id_token["item_id"])

    is_noise = np.zeros(len(tu), dtype=bool)
    noise_users, noise_items = dataset.read_noise()
    if len(noise_users):
        u_map, i_map = full.field2token_id["user_id"], full.field2token_id["item_id"]
        noise_keys = np.array([u_map[u] * n_items + i_map[i] for u, i in zip(noise_users, noise_items, strict=True)], dtype=np.int64)
        is_noise = np.isin(tu.astype(np.int64) * n_items + ti, noise_keys)

    if backbone.adjust_config is not None:
        for key, value in backbone.adjust_config(dict(config.final_config_dict), n_users - 1, n_items - 1).items():
            if config[key] != value:
                log.info("%s: %s adjusted from %s to %s for this dataset", backbone.name, key, config[key], value)
                config[key] = value

    return RecBoleData(
        config=config,
        train_dataset=train_ds,
        n_users=n_users,
        n_items=n_items,
        train_users=tu,
        train_items=ti,
        train_csr=_csr(tu, ti, (n_users, n_items)),
        valid_csr=_csr(vu, vi, (n_users, n_items)),
        test_csr=_csr(su, si, (n_users, n_items)),
        is_noise=is_noise,
        user_tokens=user_tokens,
        item_tokens=item_tokens,
    )


# Settings llmhd itself gives RecBole (load_recbole_data) or owns as flags: not --set keys.
_LLMHD_OWNED = {"data_path", "benchmark_filename", "load_col", "seed", "reproducibility", "show_progress",
                "save_dataset", "save_dataloaders", "checkpoint_dir", "device"}
# RecBole Trainer settings (recbole/trainer/trainer.py and its properties/overall.yaml) that
# llmhd's own loop (training.py) never reads: as --set keys they would silently do nothing, so
# they are refused, naming the llmhd flag that does the job, or why there is none.
_TRAINER_SETTINGS: dict[str, str] = {
    "epochs": "--epochs",
    "train_batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "weight_decay": "--weight-decay",
    "eval_step": "--eval-every",
    "stopping_step": "--early-stop",
    "valid_metric": "--valid-metric",
    "gpu_id": "--device",
    "use_gpu": "--device",
    "learner": "llmhd always trains with Adam",
    "clip_grad_norm": "llmhd does not clip gradients",
    "neg_sampling": "llmhd samples one uniform negative per positive",
    "train_neg_sample_args": "llmhd samples one uniform negative per positive",
    "eval_neg_sample_args": "llmhd evaluates by full ranking",
    "eval_args": "llmhd evaluates by full ranking on the prepared split",
    "metrics": "llmhd reports Recall and NDCG (llmhd evaluate)",
    "topk": "llmhd reports Recall and NDCG (llmhd evaluate)",
    "valid_metric_bigger": "llmhd's metrics are all bigger-is-better",
    "eval_batch_size": "llmhd's evaluation batches itself",
    "enable_amp": "llmhd trains in full precision",
    "enable_scaler": "llmhd trains in full precision",
    "save_step": "llmhd saves the best epoch's checkpoint",
    "loss_decimal_place": "llmhd logs full precision (log.jsonl)",
    "metric_decimal_place": "llmhd logs full precision (log.jsonl)",
}
_OWNED_FLAGS = {"seed": "--seed", "device": "--device"}
_CONFIG_KEY = re.compile(r"""config\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]""")


def backbone_settings(backbone: Backbone) -> list[str]:
    """The RecBole settings a backbone's model reads: its ``properties/model/<Model>.yaml``,
    the backbone's defaults, and the overall settings its model's code reads (``config["..."]``,
    e.g. LightGCN's ``require_pow``)."""
    import inspect
    from pathlib import Path

    import recbole
    import yaml

    cls = backbone.load_class()
    keys = set(backbone.defaults)
    model_yaml = Path(recbole.__file__).parent / "properties" / "model" / f"{cls.__name__}.yaml"
    if model_yaml.is_file():
        keys.update(yaml.safe_load(model_yaml.read_text(encoding="utf-8")) or {})
    module = inspect.getmodule(cls)
    try:
        keys.update(_CONFIG_KEY.findall(inspect.getsource(module)) if module is not None else ())
    except (OSError, TypeError):  # no source (a compiled plugin): the yaml and defaults only
        pass
    return sorted(keys - _LLMHD_OWNED - set(_TRAINER_SETTINGS))


def check_backbone_params(backbone: Backbone, params: dict[str, Any]) -> None:
    """Every ``--set`` / ``[backbone_params]`` key must be a setting the backbone reads; RecBole
    itself accepts any key, so a typo (``n_layer=3``) would silently train the default. RecBole
    Trainer settings are refused even where a model's code mentions one: llmhd's loop ignores them."""
    for key in sorted(set(params) & set(_TRAINER_SETTINGS)):
        hint = _TRAINER_SETTINGS[key]
        instead = f"use {hint} instead" if hint.startswith("--") else hint
        raise LLMHDError(f"--set {key}: a RecBole trainer setting that llmhd's training loop does not read ({instead})")
    unknown = sorted(set(params) - set(backbone_settings(backbone)))
    if unknown:
        owned = [k for k in unknown if k in _LLMHD_OWNED]
        hint = f" ('{owned[0]}' is set by llmhd; use {_OWNED_FLAGS.get(owned[0], 'its flag')})" if owned else ""
        raise LLMHDError(f"--set {unknown[0]}: not a setting of backbone '{backbone.name}'{hint} "
                         f"(known: {', '.join(backbone_settings(backbone))})")


def _check_setting_types(config: Any, params: dict[str, Any], backbone: str) -> None:
    """A --set value must have the type of RecBole's default for that key (ints pass for floats),
    or the model fails mid-training with a traceback instead of a clear message."""
    defaults = getattr(config, "internal_config_dict", {})
    for key, value in params.items():
        default = defaults.get(key)
        if default is None:
            continue
        numeric = isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
        if not (numeric or isinstance(value, type(default))):
            raise LLMHDError(f"--set {key}={value!r}: backbone '{backbone}' expects {type(default).__name__} "
                             f"like its default {default!r}")


def build_model(data: RecBoleData, backbone: Backbone) -> torch.nn.Module:
    """Instantiate RecBole's model on the training split (seeded by the caller)."""
    model_class = backbone.load_class()
    try:
        model = model_class(data.config, data.train_dataset)
    except (KeyError, ValueError, TypeError) as exc:
        raise LLMHDError(f"backbone '{backbone.name}': RecBole could not build the model ({exc})") from exc
    return model.to(data.config["device"])
