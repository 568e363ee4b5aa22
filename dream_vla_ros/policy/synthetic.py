"""A small synthetic visuomotor task for tests and benchmarks.

Each sample shows a bright square at a random place on a dark background in every camera. The instruction
says whether to move "towards" or "away from" it (several phrasings). The target chunk interpolates linearly
from the current joint positions to a goal that depends on the square's position and the instruction's sign,
so a model has to use the image, the text and the proprio to fit it. :func:`fit` is a minimal training loop
(AdamW, fixed learning rate) for tests; the real one lives in ``dream_vla_ros.train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from dream_vla_ros.policy.config import ModelConfig
from dream_vla_ros.policy.samples import TrainingSample

if TYPE_CHECKING:
    from dream_vla_ros.policy.model import VlaModel

PHRASES = {
    1.0: ("move towards the square", "Go to the bright square", "reach the square"),
    -1.0: ("move away from the square", "Avoid the bright square", "back off from the square"),
}


def synthetic_samples(
    config: ModelConfig, count: int, rng: np.random.Generator, image_size: int | None = None
) -> list[TrainingSample]:
    """``count`` samples for ``config`` (images ``image_size`` px, default the model's input size)."""
    size = image_size or config.vision.image_size
    j, h = config.num_joints, config.chunk_length
    side = max(2, size // 5)
    samples = []
    for _ in range(count):
        x, y = rng.uniform(0.15, 0.85, size=2)
        sign = float(rng.choice([1.0, -1.0]))
        phrase = str(rng.choice(PHRASES[sign]))
        image = np.full((size, size, 3), 20, dtype=np.uint8)
        cy, cx = int(y * (size - side)), int(x * (size - side))
        image[cy : cy + side, cx : cx + side] = (230, 200, 60)
        features = np.array([x - 0.5, y - 0.5, x + y - 1.0, x - y])
        goal = sign * 2.0 * features[np.arange(j) % features.size]
        proprio = rng.uniform(-1.0, 1.0, size=j)
        fraction = (np.arange(1, h + 1) / h)[:, None]
        actions = proprio[None, :] + fraction * (goal - proprio)[None, :]
        images = {camera: image.copy() for camera in config.vision.cameras}
        samples.append(TrainingSample(images=images, proprio=proprio, instruction=phrase, actions=actions))
    return samples


def fit(
    model: VlaModel,
    samples: Sequence[TrainingSample],
    steps: int,
    *,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` on ``samples`` for ``steps`` AdamW steps (torch); returns the loss of every step.

    Batches are drawn without replacement (all samples when ``batch_size`` >= their number)."""
    import torch

    from dream_vla_ros.policy.objectives import collate, make_objective

    rng = np.random.default_rng(seed)
    objective = make_objective(model.config, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        picks = rng.choice(len(samples), size=batch_size, replace=batch_size > len(samples))
        batch = collate([samples[i] for i in picks], model.config)
        loss, _ = objective(model, batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
