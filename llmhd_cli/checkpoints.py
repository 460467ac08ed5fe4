"""A run's checkpoint (``model.pt``): written by training, read back to rebuild the run's model.

Apart from `llmhd_cli.training` so that evaluation (``llmhd evaluate --recompute``) rebuilds a
model without importing the training loop, which itself imports evaluation's metrics.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhd_cli import plugins, runs
from llmhd_cli.config import TrainConfig
from llmhd_cli.errors import LLMHDError

if TYPE_CHECKING:
    import torch

    from llmhd_cli.recbole_data import RecBoleData


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    """Write a model's state dict (tensors only) as the run's checkpoint."""
    import torch

    torch.save(state, Path(run_dir) / runs.CHECKPOINT)


def load_run_model(run_dir: Path, workspace: Path, device: str = "auto") -> tuple[torch.nn.Module, RecBoleData, TrainConfig]:
    """Rebuild a finished run's model from its directory (config + checkpoint) for evaluation."""
    import torch

    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.recbole_data import build_model, load_recbole_data, resolve_device

    record = runs.read_run(run_dir)
    config = TrainConfig.from_dict(record.config, where=str(Path(run_dir) / runs.CONFIG))
    backbone = plugins.registry("backbone").get(config.backbone, f"{run_dir}: backbone")
    dataset = open_dataset(workspace, config.dataset)
    data = load_recbole_data(dataset, backbone, config.backbone_params, config.seed, resolve_device(device))
    model = build_model(data, backbone)
    checkpoint = Path(run_dir) / runs.CHECKPOINT
    try:
        # weights_only: a checkpoint holds tensors; anything else (a pickled payload) is refused.
        state = torch.load(checkpoint, map_location=data.config["device"], weights_only=True)
        backbone.load_state(model, state)
    except FileNotFoundError:
        raise LLMHDError(f"{checkpoint}: no checkpoint; the run saved none (train it again)") from None
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LLMHDError(f"{checkpoint}: not a checkpoint of this run's model ({first[:200]})") from None
    return model, data, config
