"""ActionChunk: what the policy hands the executor, and the checks a chunk must pass to be used at all.

A chunk is all or nothing: one bad number, one unknown joint or a wrong shape rejects the whole chunk with a
reason (one of :data:`REJECT_REASONS`), because a partially used prediction is motion from data that cannot be
trusted.

Joints are matched by name, in any order. A chunk must carry **every** configured joint: the executor never
guesses a target for a joint the policy did not predict. Configure the executor with exactly the policy's
joints; joints of the controller the policy does not drive are held by the controller
(``allow_partial_joints_goal: true``). Extra joints the executor does not know are rejected as well, since
they mean the policy and the executor disagree about the robot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dream_vla_ros.errors import InputError

# Why a chunk was rejected (keys of ExecutorStats.rejected).
NOT_INITIALISED = "not_initialised"  # add_chunk before reset()
STOPPED = "stopped"  # stop() latched, resume() not called
BAD_SHAPE = "bad_shape"  # positions not [H>=1, J], velocities not the same shape
NOT_FINITE = "not_finite"  # NaN or inf in positions or velocities
BAD_DT = "bad_dt"  # dt not a finite number > 0
BAD_STAMP = "bad_stamp"  # t0 not finite
UNKNOWN_JOINTS = "unknown_joints"  # a name the executor is not configured with
MISSING_JOINTS = "missing_joints"  # a configured joint the chunk does not carry
DUPLICATE_JOINTS = "duplicate_joints"  # a joint name twice
FROM_FUTURE = "from_future"  # t0 later than now + max_clock_skew: the stamp is on another clock
PREDATES_RESET = "predates_reset"  # observation taken before the last reset()
PREDATES_RESUME = "predates_resume"  # observation taken before the last resume()
OUT_OF_ORDER = "out_of_order"  # not newer than the newest merged chunk
STALE = "stale"  # every point already in the past on arrival

REJECT_REASONS = (
    NOT_INITIALISED,
    STOPPED,
    BAD_SHAPE,
    NOT_FINITE,
    BAD_DT,
    BAD_STAMP,
    UNKNOWN_JOINTS,
    MISSING_JOINTS,
    DUPLICATE_JOINTS,
    FROM_FUTURE,
    PREDATES_RESET,
    PREDATES_RESUME,
    OUT_OF_ORDER,
    STALE,
)


@dataclass(frozen=True, eq=False)
class ActionChunk:
    """Future joint targets predicted from one observation.

    joint_names: the joints of the columns, any order (mapped by name to the executor's order).
    t0: seconds on the caller's clock; the stamp of the observation the chunk was computed from.
    dt: seconds between points, > 0.
    positions: [H, J] targets; row i is the target for time ``t0 + (i + 1) * dt``.
    velocities: optional [H, J] velocities at the same times; without them the executor uses finite
        differences of the positions.
    """

    joint_names: tuple[str, ...]
    t0: float
    dt: float
    positions: np.ndarray
    velocities: np.ndarray | None = None


class RejectedChunkError(InputError):
    """A chunk that cannot be used; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _as_matrix(values: object, what: str, n_joints: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise RejectedChunkError(BAD_SHAPE, f"{what} is not a numeric [H, J] array") from None
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != n_joints:
        raise RejectedChunkError(BAD_SHAPE, f"{what} has shape {array.shape}, expected [H >= 1, {n_joints}]")
    return array


def _finite_float(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def conform(chunk: ActionChunk, joint_names: tuple[str, ...]) -> tuple[float, float, np.ndarray, np.ndarray | None]:
    """Check ``chunk`` and return (t0, dt, positions, velocities), the arrays [H, J] in ``joint_names`` order.

    Raises :class:`RejectedChunkError` naming the first problem found.
    """
    t0 = _finite_float(chunk.t0)
    if t0 is None:
        raise RejectedChunkError(BAD_STAMP, f"t0 must be a finite time in seconds, got {chunk.t0!r}")
    dt = _finite_float(chunk.dt)
    if dt is None or dt <= 0:
        raise RejectedChunkError(BAD_DT, f"dt must be a finite number of seconds > 0, got {chunk.dt!r}")
    names = tuple(chunk.joint_names)
    if len(set(names)) != len(names):
        raise RejectedChunkError(DUPLICATE_JOINTS, f"joint names repeat: {list(names)}")
    unknown = [n for n in names if n not in joint_names]
    if unknown:
        raise RejectedChunkError(UNKNOWN_JOINTS, f"unknown joints {unknown}; configured: {list(joint_names)}")
    missing = [n for n in joint_names if n not in names]
    if missing:
        raise RejectedChunkError(MISSING_JOINTS, f"chunk lacks joints {missing}")
    positions = _as_matrix(chunk.positions, "positions", len(names))
    velocities = None if chunk.velocities is None else _as_matrix(chunk.velocities, "velocities", len(names))
    if velocities is not None and velocities.shape != positions.shape:
        raise RejectedChunkError(BAD_SHAPE, f"velocities {velocities.shape} differ from positions {positions.shape}")
    if not np.isfinite(positions).all() or (velocities is not None and not np.isfinite(velocities).all()):
        raise RejectedChunkError(NOT_FINITE, "NaN or inf in the chunk")
    if names != joint_names:
        order = [names.index(n) for n in joint_names]
        positions = positions[:, order]
        velocities = None if velocities is None else velocities[:, order]
    return t0, dt, positions, velocities
