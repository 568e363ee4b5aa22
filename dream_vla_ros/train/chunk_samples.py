"""Training samples over episodes: the target chunk of a frame, a sampler, and train/validation splits (numpy).

A sample pairs the observation of frame t of an :class:`~dream_vla_ros.train.dataset.Episode` (images, proprio,
instruction) with the joint-position targets that follow it (``docs/dataset_format.md``, "Training samples").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.train.dataset import Episode


def chunk_targets(actions: np.ndarray, t: int, horizon: int, action_stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The target chunk of frame ``t``: row i is the target for time ``t + (i + 1) * action_stride * dt``.

    Row i is ``actions[t + (i + 1) * action_stride - 1]``; rows past the episode's end repeat the last
    action and are False in the returned mask. Returns (chunk [horizon, J], mask [horizon] bool).
    """
    steps = len(actions)
    if not 0 <= t < steps:
        raise InputError(f"t: must be in [0, {steps}), got {t}")
    if horizon < 1 or action_stride < 1:
        raise InputError(f"horizon and action_stride must be >= 1, got {horizon} and {action_stride}")
    rows = t + (np.arange(1, horizon + 1) * action_stride) - 1
    mask = rows < steps
    return actions[np.minimum(rows, steps - 1)], mask


@dataclass(frozen=True)
class Sample:
    """One training sample: the observation at frame t and the target chunk that follows it."""

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    task: str
    actions: np.ndarray
    mask: np.ndarray


class ChunkSampler:
    """Training samples over episodes held in memory.

    Sample starts are frames ``0, sample_stride, 2 * sample_stride, ...`` of every episode; the chunk of a
    sample is :func:`chunk_targets` with ``horizon`` and ``action_stride``.
    """

    def __init__(
        self, episodes: Sequence[Episode], horizon: int, action_stride: int = 1, sample_stride: int = 1
    ) -> None:
        if horizon < 1 or action_stride < 1 or sample_stride < 1:
            raise InputError("horizon, action_stride and sample_stride must be >= 1")
        if not episodes:
            raise InputError("episodes: no episode given")
        self.episodes = list(episodes)
        self.horizon = horizon
        self.action_stride = action_stride
        self.index = np.array(
            [(e, t) for e, ep in enumerate(self.episodes) for t in range(0, ep.length, sample_stride)],
            dtype=np.int64,
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> Sample:
        e, t = (int(v) for v in self.index[k])
        episode = self.episodes[e]
        chunk, mask = chunk_targets(episode.actions, t, self.horizon, self.action_stride)
        return Sample(
            images={name: frames[t] for name, frames in episode.images.items()},
            proprio=episode.proprio[t],
            instruction=episode.instruction,
            task=episode.task,
            actions=chunk,
            mask=mask,
        )

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Stacked samples: ``image_<camera>`` [B, H, W, 3], ``proprio`` [B, J], ``actions`` [B, horizon, J],
        ``mask`` [B, horizon], ``instruction`` and ``task`` (lists of B strings)."""
        samples = [self[int(k)] for k in indices]
        out: dict[str, Any] = {
            f"image_{name}": np.stack([s.images[name] for s in samples]) for name in samples[0].images
        }
        out["proprio"] = np.stack([s.proprio for s in samples])
        out["actions"] = np.stack([s.actions for s in samples])
        out["mask"] = np.stack([s.mask for s in samples])
        out["instruction"] = [s.instruction for s in samples]
        out["task"] = [s.task for s in samples]
        return out


def split_by_episode(tasks: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split episode indices into (train, validation), stratified by task, reproducibly.

    Each task with n episodes gives ``round(val_fraction * n)`` to validation, at least one when
    ``val_fraction > 0`` and n >= 2, and always keeps at least one for training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction: must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    by_task: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        by_task.setdefault(task, []).append(index)
    train: list[int] = []
    val: list[int] = []
    for task in sorted(by_task):
        indices = by_task[task]
        count = round(val_fraction * len(indices))
        if val_fraction > 0 and len(indices) >= 2:
            count = max(count, 1)
        count = min(count, len(indices) - 1)
        order = rng.permutation(len(indices))
        val.extend(indices[i] for i in order[:count])
        train.extend(indices[i] for i in order[count:])
    return sorted(train), sorted(val)
