"""Every workaround llmhd needs around RecBole 1.2.1 on current numpy / scipy / torch, in one place.

Each one says in one line why it exists. `apply()` (process-wide patches, idempotent) runs
before anything touches RecBole; the rest are scoped helpers that the data layer
(`llmhd_cli.recbole_data`), the backbone contract (`llmhd_cli.backbones`) and the built-in
backbones (``llmhd_plugins.backbones``) call instead of writing their own:

- `isolated_argv`, `preserved_cuda_env`, `read_prepared_files`, `create_dataset_uncached`:
  building RecBole's Config and Dataset without its side effects;
- `swapped_submodule`: the loss seam (llmhd's per-sample loss put where a model keeps its
  pairwise loss module, ``mf_loss``), written once for every backbone;
- `replaced_method`: the same for a model that computes its pairwise loss in a method
  (SGL's ``calc_bpr_loss``);
- `eval_mode`, `drop_cached_embeddings`: model modes and caches as RecBole's graph models need.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a model is used
    import torch

_applied = False


def apply() -> None:
    """Process-wide patches and warning filters RecBole needs; call before touching RecBole."""
    global _applied
    if _applied:
        return
    _applied = True
    import numpy as np
    import scipy.sparse as sp

    # numpy 2 removed these aliases; RecBole's Config.compatibility_settings reads them.
    for alias, target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, alias):
            setattr(np, alias, target)

    # scipy >= 1.13 dropped dok_matrix._update, which NGCF/LightGCN/NCL use to build the graph.
    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self: Any, data: dict[Any, Any]) -> None:  # dict.update semantics, as the old private method had
            for key, value in data.items():
                self[key] = value
        sp.dok_matrix._update = _update

    # torch.load keeps torch's default weights_only=True: no RecBole load llmhd reaches needs
    # more (llmhd never uses RecBole's Trainer/quick_start checkpoints, which pickle a Config, nor
    # the pretrained-model loads of NeuMF/ConvNCF/NAIS/RaCT/S3Rec), and a process-wide
    # weights_only=False would let any tampered .pt file run code.

    # torch.sparse.FloatTensor (used by RecBole's graph models) warns on every call.
    warnings.filterwarnings("ignore", message=".*torch.sparse.SparseTensor.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="recbole")
    # torch warns once per process that CSR tensors are "beta"; the two kernels RGCF uses are stable.
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


# ------------------------------------------------------------------ RecBole's Config and Dataset


@contextlib.contextmanager
def isolated_argv() -> Iterator[None]:
    """RecBole's Config parses ``--key=value`` words from sys.argv: hide ours and pytest's."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def preserved_cuda_env() -> Iterator[None]:
    """RecBole's Config writes CUDA_VISIBLE_DEVICES (from gpu_id) as a side effect: keep the process's own."""
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def read_prepared_files(config: Any, folder: Path) -> None:
    """RecBole's Config points a dataset named "ml-100k" at its bundled copy whatever data_path says:
    set it again after building the Config, so the prepared files are read."""
    config["data_path"] = str(folder)


def create_dataset_uncached(config: Any) -> Any:
    """RecBole's ``create_dataset`` for ``config``, never reading a cached ``<name>-Dataset.pth``.

    create_dataset unpickles ``<checkpoint_dir>/<name>-Dataset.pth`` whenever that file exists, so a
    file planted in the dataset folder would run code: it looks in an empty folder of ours instead.
    """
    from recbole.data import create_dataset

    with tempfile.TemporaryDirectory(prefix="llmhd-recbole-") as empty:
        saved_dir, config["checkpoint_dir"], config["dataset_save_path"] = config["checkpoint_dir"], empty, None
        try:
            return create_dataset(config)
        finally:
            config["checkpoint_dir"] = saved_dir


# ------------------------------------------------------------------------------- models


@contextlib.contextmanager
def swapped_submodule(model: torch.nn.Module, attr: str, replacement: torch.nn.Module) -> Iterator[None]:
    """Put ``replacement`` where ``model`` keeps the submodule ``attr`` (the loss seam in place of
    ``mf_loss``) while the block runs: RecBole's calculate_loss takes no loss argument, and
    nn.Module keeps submodules in ``_modules``, not in the instance ``__dict__``."""
    original = model._modules[attr]
    model._modules[attr] = replacement
    try:
        yield
    finally:
        model._modules[attr] = original


@contextlib.contextmanager
def replaced_method(obj: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """Shadow the method ``name`` of one instance with ``replacement`` while the block runs: a model
    that computes its pairwise loss inline in a method (SGL's calc_bpr_loss) has no module to swap."""
    setattr(obj, name, replacement)
    try:
        yield
    finally:
        delattr(obj, name)  # the class's method shows again


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode while the block runs, its training mode restored after without calling
    ``train(True)``: SGL's train() override redraws its random subgraphs whenever mode is True."""
    was_training = model.training
    model.train(False)  # nn.Module.train(False) is eval(); SGL rebuilds nothing then
    try:
        yield
    finally:
        if was_training:
            model.training = True
            for module in model.children():
                module.train(True)


def drop_cached_embeddings(model: torch.nn.Module) -> None:
    """Clear what a RecBole model caches outside its state dict (``other_parameter_name``).

    RecBole's graph models keep their propagated embeddings there (``restore_user_e`` /
    ``restore_item_e``): filled by ``full_sort_predict``, cleared only by ``calculate_loss``, so
    after a state-dict load they would still rank with the old weights. RecBole's trainer restores
    them from its checkpoint; llmhd's checkpoints hold weights only, so they are cleared and
    recomputed on the next ranking. (For the general recommenders llmhd trains,
    ``other_parameter_name`` lists only such caches; NCL's k-means prototypes are a training-time
    E-step, redone at epoch starts, never used to rank.)
    """
    for name in getattr(model, "other_parameter_name", ()):
        setattr(model, name, None)
