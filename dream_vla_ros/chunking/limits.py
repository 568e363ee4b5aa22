"""Per-joint limits and the one integration step that can never violate them.

Clamping is by **saturation**, per joint, per control period, not by time-scaling. Chunks are placed on the
clock of the observation they came from; stretching time to make a segment feasible would push every later
point (and every later chunk) off that clock, so the executor would lag further behind the policy after each
clamp. Saturation keeps the timeline on the clock and only bends the motion where it is infeasible; with a
policy that respects the limits it is never active. The cost is that a saturated joint leaves the straight
joint-space path for a moment; the tracker then catches up within the acceleration budget.

The output of every step is a constant-acceleration segment of one control period:

    v1 = v + a*h,   q1 = q + h*(v + v1)/2,   |a| <= max_acceleration

so velocities move by at most ``max_acceleration * h`` per step (the velocity jump at any chunk boundary is
bounded by construction), and a cubic spline through the sampled (position, velocity) pairs, which is what a
JointTrajectoryController builds, reproduces each segment exactly. The next velocity is chosen inside the
intersection of the acceleration window, the velocity limit, and a braking bound: from the new state the joint
must still be able to stop before either position limit at full deceleration. That bound is recursively
feasible (braking at full deceleration from a state that satisfies it satisfies it again), so position limits
hold for every instant of the continuous trajectory, not only at the samples.

Jerk is not limited: the acceleration is piecewise constant per control period; a jerk bound would make the
braking proof third order and every stop longer. Smooth references keep the acceleration steps small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dream_vla_ros.configuration import require
from dream_vla_ros.errors import ConfigError

LIMIT_KINDS = ("position", "velocity", "acceleration")


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits in joint units (rad or m) and seconds, aligned with the executor's ``joint_names``.

    position_min: lowest position per joint.
    position_max: highest position per joint.
    max_velocity: largest speed per joint, units/s.
    max_acceleration: largest acceleration per joint, units/s^2 (also bounds every velocity step).

    Each field is a tuple with one value per joint, or a single value that applies to every joint. The
    defaults are conservative placeholders for a revolute arm; a robot's config sets its own.
    """

    position_min: tuple[float, ...] = (-math.pi,)
    position_max: tuple[float, ...] = (math.pi,)
    max_velocity: tuple[float, ...] = (1.0,)
    max_acceleration: tuple[float, ...] = (5.0,)

    def __post_init__(self) -> None:
        for name in ("position_min", "position_max", "max_velocity", "max_acceleration"):
            values = getattr(self, name)
            require(len(values) > 0, name, "needs one value per joint, or one value for all joints")
            require(all(math.isfinite(v) for v in values), name, f"must be finite, got {values}")
        require(all(v > 0 for v in self.max_velocity), "max_velocity", f"must be > 0, got {self.max_velocity}")
        require(
            all(v > 0 for v in self.max_acceleration),
            "max_acceleration",
            f"must be > 0, got {self.max_acceleration}",
        )
        lo, hi = self.position_min, self.position_max
        if len(lo) == len(hi) or 1 in (len(lo), len(hi)):
            n = max(len(lo), len(hi))
            pairs = zip(lo * n if len(lo) == 1 else lo, hi * n if len(hi) == 1 else hi, strict=True)
            require(all(a < b for a, b in pairs), "position_min", f"must be below position_max, got {lo} / {hi}")

    def resolve(self, n_joints: int) -> LimitArrays:
        """The limits as float arrays of length ``n_joints``; a tuple of another length raises ConfigError."""
        arrays = []
        for name in ("position_min", "position_max", "max_velocity", "max_acceleration"):
            values = getattr(self, name)
            if len(values) not in (1, n_joints):
                raise ConfigError(f"limits.{name}: expected 1 or {n_joints} values (one per joint), got {len(values)}")
            arrays.append(np.broadcast_to(np.asarray(values, dtype=float), (n_joints,)).copy())
        return LimitArrays(*arrays)


@dataclass(frozen=True, eq=False)
class LimitArrays:
    """:class:`JointLimits` resolved to arrays ``[J]`` (what the step below works with)."""

    position_min: np.ndarray
    position_max: np.ndarray
    max_velocity: np.ndarray
    max_acceleration: np.ndarray

    def contains(self, positions: np.ndarray) -> np.ndarray:
        """Per joint: is the position inside [position_min, position_max]?"""
        return (positions >= self.position_min) & (positions <= self.position_max)


def _braking_velocity_bound(distance: np.ndarray, v: np.ndarray, accel: np.ndarray, h: float) -> np.ndarray:
    """Largest next velocity toward a limit ``distance`` ahead that still lets the joint stop before it.

    With ``u`` the next velocity the step ends at ``q1 = q + h*(v + u)/2``. If ``q + h*v/2 <= limit``, some
    ``u >= 0`` works and the bound is the largest with ``q1 + u**2/(2*accel) <= limit`` (the motion within the
    step is monotone, so its end is its extreme). Otherwise the joint must turn around inside the step, and
    the turning point ``q + v**2/(2*|a|)`` must stay inside: ``u <= v - h*v**2/(2*distance)``, which the
    acceleration window allows whenever the state was safe (``distance >= v**2/(2*accel)``).
    """
    c = 0.5 * v * h - distance  # q + h*v/2 - limit
    root = accel * (-0.5 * h + np.sqrt(np.maximum(0.25 * h * h - 2.0 * c / accel, 0.0)))
    turn = np.maximum(v - h * v * v / (2.0 * np.maximum(distance, 1e-300)), v - accel * h)
    return np.where(c <= 0.0, root, turn)


class LimitedIntegrator:
    """Advances (positions, velocities) by one control period without violating any limit."""

    def __init__(self, limits: LimitArrays, period: float) -> None:
        self.limits = limits
        self.period = period
        self._dv = limits.max_acceleration * period
        vmax = limits.max_velocity
        # Farther than this from both position limits, the braking bound cannot be below max_velocity.
        envelope = vmax * vmax / (2.0 * limits.max_acceleration) + 2.0 * vmax * period
        self._free_min = limits.position_min + envelope
        self._free_max = limits.position_max - envelope

    def step(
        self, q: np.ndarray, v: np.ndarray, v_wanted: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[bool, bool, bool]]:
        """One period toward the velocity ``v_wanted``.

        Returns the new positions, the new velocities, and whether a (position, velocity, acceleration) limit
        had to clamp ``v_wanted`` on any joint.
        """
        lim, h = self.limits, self.period
        vmax = lim.max_velocity
        acc_lo = v - self._dv
        acc_hi = v + self._dv
        lo = np.maximum(acc_lo, -vmax)
        hi = np.minimum(acc_hi, vmax)
        near_limit = bool(((q < self._free_min) | (q > self._free_max)).any())
        if near_limit:
            up = _braking_velocity_bound(lim.position_max - q, v, lim.max_acceleration, h)
            down = -_braking_velocity_bound(q - lim.position_min, -v, lim.max_acceleration, h)
            lo = np.maximum(lo, down)
            hi = np.minimum(hi, up)
        v1 = np.minimum(np.maximum(v_wanted, lo), hi)
        q1 = q + 0.5 * h * (v + v1)
        if near_limit:
            q1 = np.minimum(np.maximum(q1, lim.position_min), lim.position_max)  # rounding guard
        if (v1 == v_wanted).all():
            return q1, v1, (False, False, False)
        clamped = (
            near_limit and bool(((v_wanted > up) | (v_wanted < down)).any()),
            bool((np.abs(v_wanted) > vmax).any()),
            bool(((v_wanted > acc_hi) | (v_wanted < acc_lo)).any()),
        )
        return q1, v1, clamped
