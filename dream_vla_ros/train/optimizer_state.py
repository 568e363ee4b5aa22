"""Optimiser state for ``train --resume``: safetensors for the tensors, JSON for the rest (never pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dream_vla_ros.errors import CheckpointError

STATE_DIR = "training_state"


@dataclass(frozen=True)
class TrainingState:
    step: int
    optimizer: dict[str, Any]


def save_training_state(out: Path, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Write the optimiser's state dict and the step under ``out/training_state`` (atomically per file)."""
    from safetensors.torch import save_file

    directory = out / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().cpu().contiguous()
        for index, entry in state["state"].items()
        for name, value in entry.items()
        if isinstance(value, torch.Tensor)
    }
    save_file(tensors, str(directory / ".optimizer.safetensors.tmp"))
    os.replace(directory / ".optimizer.safetensors.tmp", directory / "optimizer.safetensors")
    document = {"step": step, "param_groups": state["param_groups"], "indices": sorted(state["state"])}
    (directory / ".state.json.tmp").write_text(json.dumps(document))
    os.replace(directory / ".state.json.tmp", directory / "state.json")


def load_training_state(out: Path) -> TrainingState | None:
    """The saved state under ``out``, or None when there is none; a damaged state raises CheckpointError."""
    from safetensors.torch import load_file

    directory = out / STATE_DIR
    if not (directory / "state.json").is_file():
        return None
    try:
        document = json.loads((directory / "state.json").read_text())
        tensors = load_file(str(directory / "optimizer.safetensors"))
    except Exception as exc:  # noqa: BLE001 - any damage means we cannot resume
        raise CheckpointError(f"{directory}: cannot read the training state ({exc})") from None
    state: dict[int, dict[str, torch.Tensor]] = {int(i): {} for i in document["indices"]}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state[int(index)][name] = value
    return TrainingState(int(document["step"]), {"state": state, "param_groups": document["param_groups"]})
