"""Proprio and action normalisation (numpy only; training, torch inference and engines share it).

``normalised = (x - offset) / scale`` per joint (proprio) and per joint or per (step, joint) (actions). With
``action_mode="delta"`` the model predicts ``target - current proprio`` in normalised units, which keeps the
output well conditioned when the joints sit far from their mean. :func:`fit_normalization` computes the
statistics from training data ("bounds": quantile range mapped to [-1, 1], the OpenVLA BOUNDS_Q99 idea, or
"gaussian": mean and standard deviation).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import ModelConfig, NormalizationConfig

MIN_SCALE = 1e-4
"""Floor on every scale so a joint that never moves in the data does not blow up (physical units)."""


class Normalizer:
    """Applies a :class:`NormalizationConfig` for J joints and chunks of H steps."""

    def __init__(self, config: NormalizationConfig, num_joints: int, chunk_length: int) -> None:
        self.config = config
        self.num_joints = num_joints
        self.chunk_length = chunk_length
        j, h = num_joints, chunk_length
        self.proprio_offset = _stat(config.proprio_offset, (j,), 0.0)
        self.proprio_scale = _stat(config.proprio_scale, (j,), 1.0)
        self.action_offset = _stat(config.action_offset, (h, j), 0.0)
        self.action_scale = _stat(config.action_scale, (h, j), 1.0)
        self.delta = config.action_mode == "delta"

    @classmethod
    def for_model(cls, config: ModelConfig) -> Normalizer:
        return cls(config.normalization, config.num_joints, config.chunk_length)

    def _check(self, value: np.ndarray, tail: tuple[int, ...], name: str) -> np.ndarray:
        array = np.asarray(value, dtype=np.float64)
        if array.shape[array.ndim - len(tail) :] != tail or array.ndim < len(tail):
            raise InputError(f"{name}: expected shape [..., {', '.join(map(str, tail))}], got {list(array.shape)}")
        if not np.all(np.isfinite(array)):
            raise InputError(f"{name}: contains NaN or infinite values")
        return array

    def normalize_proprio(self, proprio: np.ndarray) -> np.ndarray:
        """[..., J] physical -> [..., J] float32 normalised."""
        p = self._check(proprio, (self.num_joints,), "proprio")
        return ((p - self.proprio_offset) / self.proprio_scale).astype(np.float32)

    def denormalize_proprio(self, proprio_norm: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize_proprio` (float64)."""
        p = np.asarray(proprio_norm, dtype=np.float64)
        return p * self.proprio_scale + self.proprio_offset

    def normalize_actions(self, actions: np.ndarray, proprio: np.ndarray) -> np.ndarray:
        """Targets [..., H, J] physical (+ current proprio [..., J]) -> [..., H, J] float32 normalised."""
        a = self._check(actions, (self.chunk_length, self.num_joints), "actions")
        if self.delta:
            a = a - self._check(proprio, (self.num_joints,), "proprio")[..., None, :]
        return ((a - self.action_offset) / self.action_scale).astype(np.float32)

    def denormalize_actions(self, actions_norm: np.ndarray, proprio: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize_actions`: [..., H, J] normalised -> physical (float64)."""
        a = np.asarray(actions_norm, dtype=np.float64) * self.action_scale + self.action_offset
        if self.delta:
            a = a + np.asarray(proprio, dtype=np.float64)[..., None, :]
        return a


def _stat(values: tuple[float, ...], shape: tuple[int, ...], default: float) -> np.ndarray:
    if not values:
        return np.full(shape, default)
    array = np.asarray(values, dtype=np.float64)
    return np.broadcast_to(array.reshape(-1, shape[-1]) if len(shape) == 2 else array, shape).copy()


def fit_normalization(
    proprio: np.ndarray,
    actions: np.ndarray,
    *,
    action_mode: Literal["absolute", "delta"] = "absolute",
    kind: Literal["bounds", "gaussian"] = "bounds",
    per_step: bool = True,
    quantile: float = 0.01,
) -> NormalizationConfig:
    """Statistics from training data: proprio [N, J] and target chunks [N, H, J] in physical units.

    kind "bounds" maps the [quantile, 1 - quantile] range to [-1, 1]; "gaussian" uses mean and standard
    deviation. per_step keeps separate action statistics for every chunk row (useful in delta mode, where
    later rows move further).
    """
    p = np.asarray(proprio, dtype=np.float64)
    a = np.asarray(actions, dtype=np.float64)
    if p.ndim != 2 or a.ndim != 3 or a.shape[0] != p.shape[0] or a.shape[2] != p.shape[1] or p.shape[0] == 0:
        raise InputError(f"fit_normalization: expected proprio [N, J] and actions [N, H, J], got {p.shape}, {a.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(a))):
        raise InputError("fit_normalization: data contains NaN or infinite values")
    if action_mode == "delta":
        a = a - p[:, None, :]
    a = a if per_step else a.reshape(-1, 1, a.shape[2])

    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if kind == "gaussian":
            return x.mean(axis=0), np.maximum(x.std(axis=0), MIN_SCALE)
        low, high = np.quantile(x, quantile, axis=0), np.quantile(x, 1.0 - quantile, axis=0)
        return (low + high) / 2.0, np.maximum((high - low) / 2.0, MIN_SCALE)

    p_off, p_scale = stats(p)
    a_off, a_scale = stats(a)
    return NormalizationConfig(
        proprio_offset=tuple(float(v) for v in p_off),
        proprio_scale=tuple(float(v) for v in p_scale),
        action_offset=tuple(float(v) for v in a_off.reshape(-1)),
        action_scale=tuple(float(v) for v in a_scale.reshape(-1)),
        action_mode=action_mode,
    )
