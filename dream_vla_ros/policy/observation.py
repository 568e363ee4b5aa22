"""The inference contract: what goes into a policy and what comes out (numpy only, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

CONVERGED = "converged"
"""Halting reason: the change fell below delta (recurrent) or every value was decided before k_max (discrete)."""
MAX_ITERATIONS = "max_iterations"
"""Halting reason: k_max iterations ran without converging."""
FIXED = "fixed"
"""Halting reason: halting is off (delta = 0), exactly k_max iterations ran."""


@dataclass(frozen=True)
class Observation:
    """One synchronized observation of the robot.

    images: camera name -> RGB uint8 array [H, W, 3], any size (the policy resizes).
    proprio: joint positions [J] in the model's joint order (the gripper is a joint), physical units.
    instruction: the language goal, non-empty.
    stamp: seconds; the ROS time of the image the observation was built from (header stamp).
    """

    images: dict[str, np.ndarray]
    proprio: np.ndarray
    instruction: str
    stamp: float = 0.0


@dataclass(frozen=True)
class ChunkPrediction:
    """A chunk of future joint-position targets predicted from one observation.

    positions: [H, J] targets in physical units, in ``joint_names`` order; row i is the target for
        time ``stamp + (i + 1) * dt``.
    iterations: recurrent-core iterations (or unmasking steps) actually run.
    halt_reason: why the decoder stopped: :data:`CONVERGED`, :data:`MAX_ITERATIONS` or :data:`FIXED`.
    timings_ms: stage name -> milliseconds (e.g. "preprocess", "trunk", "core", "coda", "total").
    """

    positions: np.ndarray
    joint_names: tuple[str, ...]
    dt: float
    stamp: float
    iterations: int
    halt_reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)


def chunk_predictions(
    positions: np.ndarray,
    *,
    joint_names: tuple[str, ...],
    dt: float,
    stamps: np.ndarray,
    iterations: np.ndarray,
    reasons: Sequence[str],
    timings_ms: dict[str, float],
) -> list[ChunkPrediction]:
    """A decoded batch -> one :class:`ChunkPrediction` per sample.

    positions: [B, H, J] in physical units; stamps, iterations: [B]; reasons: B strings; every prediction gets
    its own copy of ``timings_ms`` (the batch's stage timings).
    """
    return [
        ChunkPrediction(
            positions=positions[i],
            joint_names=joint_names,
            dt=dt,
            stamp=float(stamps[i]),
            iterations=int(iterations[i]),
            halt_reason=reasons[i],
            timings_ms=dict(timings_ms),
        )
        for i in range(len(reasons))
    ]
