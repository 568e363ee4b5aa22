"""Training batches and losses (torch). The whole interface a training loop needs:

    samples: list[TrainingSample]              # camera -> uint8 [H, W, 3], proprio [J], instruction, target [H, J]
    batch = collate(samples, model.config, rng=rng, shift_pixels=4, brightness=0.03, contrast=0.05)
    objective = make_objective(model.config)   # RecurrentDepthObjective or MaskedDiffusionObjective
    loss, metrics = objective(model, batch.to(device), step)          # metrics: str -> float, for logging
    loss.backward(); optimizer.step(); optimizer.zero_grad()

Targets are physical joint positions; ``collate`` normalises them with the model's statistics (fit them first
with ``normalization.fit_normalization`` and put them in the config). Both objectives are deterministic given
``(seed, step)``.

Recurrent-depth recipe (RD-VLA): per step a depth N = Poisson(exp(tau)) + 1, tau ~ Normal(ln mu_rec - sigma^2/2,
sigma), capped at ``max_depth``; the scratchpad starts from scaled truncated-normal noise; the first N - T
iterations run without gradient and the last T = ``backprop_depth`` with it (truncated BPTT: when N > T nothing
before the window -- the noise gain, earlier iterations -- gets a gradient through the recurrence); L1 or MSE
on the final decode plus ``intermediate_weight`` x the mean loss of the other decodes in the window.

Masked discrete diffusion: per sample a mask ratio r ~ Uniform(mask_ratio_min, 1), each action value masked
with probability r (at least one), cross-entropy on the masked values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import ModelConfig, TrainingConfig
from dream_vla_ros.policy.model import VlaModel
from dream_vla_ros.policy.normalization import Normalizer
from dream_vla_ros.policy.preprocess import (
    NOISE_CLIP,
    check_proprio,
    images_to_float,
    prepare_images,
    random_exposure,
    random_shift,
)
from dream_vla_ros.policy.samples import TrainingSample
from dream_vla_ros.policy.tokenizer import make_tokenizer


@dataclass(frozen=True)
class TrainingBatch:
    """images float32 [B, C, 3, S, S] in [0, 1]; tokens int64 [B, L]; proprio float32 [B, J] normalised;
    actions float32 [B, H, J] normalised; mask float32 [B, H] (1 = row counts in the loss)."""

    images: torch.Tensor
    tokens: torch.Tensor
    proprio: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: str | torch.device) -> TrainingBatch:
        return TrainingBatch(*(t.to(device) for t in (self.images, self.tokens, self.proprio, self.actions, self.mask)))


def collate(
    samples: Sequence[TrainingSample],
    config: ModelConfig,
    *,
    rng: np.random.Generator | None = None,
    shift_pixels: int = 0,
    brightness: float = 0.0,
    contrast: float = 0.0,
) -> TrainingBatch:
    """Samples -> a normalised batch.

    Augmentation (each needs ``rng``): ``shift_pixels`` > 0 random shift; ``brightness`` / ``contrast`` > 0
    random exposure per camera (see :func:`~dream_vla_ros.policy.preprocess.random_exposure`).
    """
    if not samples:
        raise InputError("collate: no samples")
    augment = shift_pixels > 0 or brightness > 0 or contrast > 0
    if augment and rng is None:
        raise InputError("collate: augmentation (shift_pixels, brightness, contrast) needs an rng")
    normalizer = Normalizer.for_model(config)
    tokenizer = make_tokenizer(config.tokenizer)
    h, j = config.chunk_length, config.num_joints
    images, proprio, actions, masks = [], [], [], []
    for i, s in enumerate(samples):
        frame = prepare_images(s.images, config.vision)
        images.append(random_shift(frame, shift_pixels, rng) if shift_pixels > 0 and rng is not None else frame)
        proprio.append(check_proprio(s.proprio, j))
        target = np.asarray(s.actions, dtype=np.float64)
        if target.shape != (h, j):
            raise InputError(f"samples[{i}].actions: expected shape [{h}, {j}], got {list(target.shape)}")
        actions.append(target)
        mask = np.ones(h, dtype=bool) if s.mask is None else np.asarray(s.mask, dtype=bool)
        if mask.shape != (h,):
            raise InputError(f"samples[{i}].mask: expected shape [{h}], got {list(mask.shape)}")
        masks.append(mask)
    proprio_raw = np.stack(proprio)
    pixels = images_to_float(np.stack(images))
    if (brightness > 0 or contrast > 0) and rng is not None:
        pixels = random_exposure(pixels, brightness, contrast, rng)
    return TrainingBatch(
        images=torch.from_numpy(pixels),
        tokens=torch.from_numpy(tokenizer.encode_batch([s.instruction for s in samples])),
        proprio=torch.from_numpy(normalizer.normalize_proprio(proprio_raw)),
        actions=torch.from_numpy(normalizer.normalize_actions(np.stack(actions), proprio_raw)),
        mask=torch.from_numpy(np.stack(masks).astype(np.float32)),
    )


class Objective(Protocol):
    def __call__(self, model: VlaModel, batch: TrainingBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (scalar, differentiable) and metrics for logging."""
        ...


def sample_depth(rng: np.random.Generator, training: TrainingConfig) -> int:
    """Heavy-tailed depth: Poisson(exp(tau)) + 1, tau ~ Normal(ln mu - sigma^2 / 2, sigma), capped."""
    sigma = training.depth_sigma
    tau = rng.normal(math.log(training.mean_depth) - 0.5 * sigma**2, sigma)
    rate = min(math.exp(tau), float(training.max_depth))
    return int(min(rng.poisson(rate) + 1, training.max_depth))


def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))


def chunk_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Masked mean L1 or MSE over [B, H, J] (mask [B, H])."""
    error = (pred - target).abs() if kind == "l1" else (pred - target).square()
    weights = mask[:, :, None].expand_as(error)
    return (error * weights).sum() / weights.sum().clamp(min=1.0)


class RecurrentDepthObjective:
    """RD-VLA training step for the recurrent decoder (see module doc)."""

    def __init__(self, training: TrainingConfig, seed: int = 0) -> None:
        self.training = training
        self.seed = seed

    def depth(self, step: int) -> int:
        """The recurrence depth N of training step ``step``."""
        return sample_depth(np.random.default_rng([self.seed, step]), self.training)

    def noise(self, shape: tuple[int, ...], step: int) -> torch.Tensor:
        """The scratchpad noise of training step ``step`` (truncated standard normal)."""
        noise = torch.empty(shape)
        torch.nn.init.trunc_normal_(noise, 0.0, 1.0, -NOISE_CLIP, NOISE_CLIP, generator=_generator(self.seed, step))
        return noise

    def __call__(self, model: VlaModel, batch: TrainingBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        decoder = model.recurrent()
        cfg = self.training
        depth = self.depth(step)
        window = min(cfg.backprop_depth, depth)
        noise = self.noise(model.noise_shape(batch.size), step).to(batch.images.device)
        mid, final = model.features(batch.images, batch.tokens, batch.proprio)
        prelude_state, scratchpad, kv = decoder.prepare(mid, final, batch.proprio, noise)
        if depth > window:
            with torch.no_grad():
                for _ in range(depth - window):
                    scratchpad = decoder.step(scratchpad, prelude_state, kv)
        losses: list[torch.Tensor] = []
        previous = scratchpad
        for i in range(window):
            previous = scratchpad
            scratchpad = decoder.step(scratchpad, prelude_state, kv)
            if i == window - 1 or cfg.intermediate_weight > 0.0:
                losses.append(chunk_loss(decoder.decode(scratchpad), batch.actions, batch.mask, cfg.loss))
        loss = losses[-1]
        if cfg.intermediate_weight > 0.0 and len(losses) > 1:
            loss = loss + cfg.intermediate_weight * torch.stack(losses[:-1]).mean()
        with torch.no_grad():
            change = (decoder.decode(scratchpad) - decoder.decode(previous)).square().mean()
        return loss, {
            "loss": float(loss.detach()),
            "action_loss": float(losses[-1].detach()),
            "depth": float(depth),
            "backprop_depth": float(window),
            "change": float(change),
        }


class MaskedDiffusionObjective:
    """Masked cross-entropy with random mask ratios for the discrete decoder."""

    def __init__(self, training: TrainingConfig, seed: int = 0) -> None:
        self.training = training
        self.seed = seed

    def __call__(self, model: VlaModel, batch: TrainingBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        decoder = model.discrete()
        target = decoder.quantize(batch.actions)  # [B, H, J]
        generator = _generator(self.seed, step)
        low = self.training.mask_ratio_min
        ratio = low + (1.0 - low) * torch.rand(batch.size, generator=generator)
        draw = torch.rand(target.shape, generator=generator).to(target.device)
        masked = draw < ratio.to(target.device)[:, None, None]
        masked |= draw == draw.flatten(1).amin(dim=1)[:, None, None]  # at least one value per sample
        values = torch.where(masked, torch.full_like(target, decoder.mask_id), target)
        _, final = model.features(batch.images, batch.tokens, batch.proprio)
        rows, kv = decoder.prepare(final, batch.proprio)
        logits = decoder.logits(values, rows, kv)
        counted = masked & (batch.mask[:, :, None] > 0)
        if not bool(counted.any()):  # every masked value fell on padded rows: train on them anyway
            counted = masked
        loss = F.cross_entropy(logits[counted], target[counted])
        with torch.no_grad():
            accuracy = (logits[counted].argmax(dim=-1) == target[counted]).float().mean()
        return loss, {
            "loss": float(loss.detach()),
            "accuracy": float(accuracy),
            "mask_ratio": float(masked.float().mean()),
        }


def make_objective(config: ModelConfig, seed: int = 0) -> RecurrentDepthObjective | MaskedDiffusionObjective:
    """The objective that matches ``config.decoder.kind``, with ``config.training`` settings."""
    if config.decoder.kind == "recurrent":
        return RecurrentDepthObjective(config.training, seed)
    return MaskedDiffusionObjective(config.training, seed)
