"""A small synthetic training dataset shared by the trainer tests (CPU and GPU)."""

from __future__ import annotations

import numpy as np

from dream_vla_ros.train.dataset import DatasetWriter, Episode

JOINTS = ("j0", "j1", "gripper")
TASKS = {"up": ["move up", "go up"], "down": ["move down", "go down"]}


def synthetic_dataset(root, episodes_per_task=4, steps=24, dt=0.05, camera="cam"):
    """Task 'up' ramps every joint up, 'down' ramps down; the image colour tells which (so does the text)."""
    writer = DatasetWriter(root, JOINTS, dt, {camera: (32, 32)},
                           phrasings={t: {"train": p, "heldout": []} for t, p in TASKS.items()})
    entries, index = [], 0
    rng = np.random.default_rng(0)
    for task in TASKS:
        sign = 1.0 if task == "up" else -1.0
        for _ in range(episodes_per_task):
            start = rng.uniform(-0.2, 0.2, size=3)
            proprio = start + sign * 0.02 * np.arange(steps)[:, None]
            actions = proprio + sign * 0.02
            images = np.zeros((steps, 32, 32, 3), np.uint8)
            images[..., 0 if task == "up" else 2] = 200
            entries.append(writer.write(Episode(images={camera: images}, proprio=proprio.astype(np.float32),
                                                actions=actions.astype(np.float32), task=task,
                                                instruction=TASKS[task][0], seed=index), index))
            index += 1
    writer.finalize(entries)
    return root
