"""Offline evaluation: a checkpoint's loss on a dataset's episodes, optionally under exposure changes.

The loss is the one the trainer logs as ``val_loss`` (the model's training objective at a fixed seed and
step, L1 on normalised chunks for the recurrent decoder), on ``samples`` frames spread evenly over the chosen
episodes: ``split="val"`` takes the episodes that ``train`` holds out with the same ``val_fraction`` and
``seed`` (so the number matches the trainer's), ``"all"`` every episode (for a dataset the model never saw).

``exposure_levels`` adds a uniform offset, in grey levels, to every pixel of every camera before
preprocessing (clipped to 0-255): how much a renderer's or a real camera's brightness change costs the model.
No closed loop, no simulator, no ROS: minutes on a CPU for a few thousand samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dream_vla_ros.configuration import require
from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.checkpoint import load_checkpoint
from dream_vla_ros.policy.objectives import make_objective
from dream_vla_ros.policy.samples import TrainingSample
from dream_vla_ros.train.chunk_samples import ChunkSampler, split_by_episode
from dream_vla_ros.train.dataset import Dataset
from dream_vla_ros.train.trainer import SampleBuilder, action_stride, mean_loss


@dataclass(frozen=True)
class OfflineEvalConfig:
    """model, dataset: directories; split: "val" or "all"; val_fraction, seed: the trainer's split settings;
    samples: frames evaluated (evenly spaced); exposure_levels: grey-level offsets, one loss each (the
    per-task losses are at 0, or at the first level without 0); batch_size: samples per forward pass (the
    trainer's ``batch_size`` reproduces its ``val_loss`` exactly)."""

    model: str
    dataset: str
    split: str = "val"
    val_fraction: float = 0.1
    seed: int = 0
    samples: int = 1024
    exposure_levels: tuple[int, ...] = (0,)
    batch_size: int = 128

    def __post_init__(self) -> None:
        require(self.split in ("val", "all"), "split", f"must be 'val' or 'all', got {self.split!r}")
        require(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(len(self.exposure_levels) > 0, "exposure_levels", "at least one level is needed")
        for level in self.exposure_levels:
            require(-255 <= level <= 255, "exposure_levels", f"must be within +-255 grey levels, got {level}")


def shift_exposure(images: Mapping[str, np.ndarray], level: int) -> dict[str, np.ndarray]:
    """Add ``level`` grey levels to every uint8 pixel of every camera, clipped to 0-255 (0 returns the inputs)."""
    if level == 0:
        return dict(images)
    return {name: np.clip(image.astype(np.int16) + level, 0, 255).astype(np.uint8) for name, image in images.items()}


def episode_indices(dataset: Dataset, split: str, val_fraction: float, seed: int) -> list[int]:
    """The episodes of ``split``: the trainer's validation episodes, or all of them."""
    if split == "all":
        return list(range(len(dataset)))
    _, val = split_by_episode([e.task for e in dataset.meta.episodes], val_fraction, seed)
    if not val:
        raise InputError(f"split 'val': val_fraction {val_fraction} holds out no episode of {dataset.root}")
    return val


@torch.no_grad()
def offline_eval(config: OfflineEvalConfig) -> dict[str, Any]:
    """Loss per exposure level, and per task at level 0 (the first level if 0 is not asked for).
    Returns a JSON-able dict."""
    model = load_checkpoint(config.model).eval()
    dataset = Dataset(config.dataset)
    missing = [c for c in model.config.vision.cameras if c not in dataset.meta.cameras]
    if missing:
        raise InputError(f"dataset {config.dataset} has no camera {missing[0]!r}; the model reads "
                         f"{list(model.config.vision.cameras)}, the dataset has {sorted(dataset.meta.cameras)}")
    indices = episode_indices(dataset, config.split, config.val_fraction, config.seed)
    stride = action_stride(model.config.dt, dataset.meta.dt)
    sampler = ChunkSampler(list(dataset.episodes(indices)), model.config.chunk_length, stride)
    builder = SampleBuilder(sampler, {c: c for c in model.config.vision.cameras}, None)
    objective = make_objective(model.config, seed=config.seed)
    count = min(config.samples, len(sampler))
    picks = np.linspace(0, len(sampler) - 1, count).astype(np.int64)
    tasks = np.array([sampler.episodes[int(sampler.index[k][0])].task for k in picks])

    def loss_at(chosen: np.ndarray, level: int) -> float:
        def samples(chunk: np.ndarray) -> list[TrainingSample]:
            return [TrainingSample(shift_exposure(s.images, level), s.proprio, s.instruction, s.actions, s.mask)
                    for s in builder.samples(chunk, None)]

        return mean_loss(model, objective, samples, chosen, config.batch_size)

    task_level = 0 if 0 in config.exposure_levels else config.exposure_levels[0]
    return {
        "model": str(config.model),
        "dataset": str(config.dataset),
        "split": config.split,
        "episodes": len(indices),
        "samples": int(count),
        "loss_by_exposure": {str(level): loss_at(picks, level) for level in config.exposure_levels},
        "task_exposure_level": task_level,
        "loss_by_task": {task: loss_at(picks[tasks == task], task_level) for task in sorted(set(tasks.tolist()))},
    }


def summary(result: Mapping[str, Any], digits: int = 5) -> str:
    """A human-readable table of :func:`offline_eval`'s result."""
    levels = result["loss_by_exposure"]
    base_level = "0" if "0" in levels else next(iter(levels))
    base = levels[base_level]
    lines = [f"{result['model']} on {result['dataset']} ({result['split']}: {result['episodes']} episodes, "
             f"{result['samples']} samples)", "",
             f"exposure (grey levels) | loss (x at {int(base_level):+d})", "---|---"]
    for level, loss in levels.items():
        lines.append(f"{int(level):+d} | {loss:.{digits}f} ({loss / base:.2f}x)")
    lines += ["", f"task | loss at {int(result['task_exposure_level']):+d}", "---|---"]
    lines += [f"{task} | {loss:.{digits}f}" for task, loss in result["loss_by_task"].items()]
    return "\n".join(lines)

