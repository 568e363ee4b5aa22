"""A training sample in physical units (numpy only; datasets build these without importing torch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dream_vla_ros.policy.observation import Observation


@dataclass(frozen=True)
class TrainingSample:
    """One dataset sample.

    images: camera name -> RGB uint8 [H, W, 3] (any size; resized like at inference).
    proprio: joint positions [J] at the observation time; instruction: the goal text.
    actions: target joint positions [H, J] for t + dt .. t + H dt, physical units.
    mask: optional bool [H]; False marks rows past the end of the episode (excluded from the loss).
    """

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    actions: np.ndarray
    mask: np.ndarray | None = None

    def observation(self, stamp: float = 0.0) -> Observation:
        """The inference-time view of this sample."""
        return Observation(images=dict(self.images), proprio=self.proprio, instruction=self.instruction, stamp=stamp)
