"""What a ros2_control JointTrajectoryController (JTC) does with a ``JointTrajectory``, without ROS.

The simulated arm feeds every trajectory message it receives through :class:`TrajectoryFollower` and samples
it at the physics rate, so the closed loop under test sees the semantics a real arm's JTC has in
Humble/Jazzy/Kilted (``ros2_controllers`` ``doc/trajectory.rst``):

- **Hard replacement.** A new trajectory replaces the running one entirely; nothing is blended.
- **Start time.** ``header.stamp == 0`` starts the trajectory at the update that receives it; otherwise at
  the stamp. ``time_from_start`` of each point is relative to that start.
- **Rejection.** Empty trajectories, joints that are not the controller's (or missing ones: partial goals are
  off, the JTC default), sizes that do not match, non-increasing ``time_from_start``, non-finite values, and
  trajectories whose last point is already in the past are rejected and the previous one keeps running.
- **Point before the trajectory.** Until the first point is due the JTC splines to it from the state at the
  update that received the trajectory (also when the stamp lies in the future): the *measured* state by
  default, or the last *commanded* state when ``interpolate_from_desired_state`` (Jazzy; Humble
  ``open_loop_control``) is set.
- **Past points.** If the first points are already in the past, sampling jumps into the current segment (a
  position step, as the real controller does).
- **Interpolation.** Positions only: linear; positions and velocities: cubic Hermite. After the last point
  the controller holds its position with zero velocity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrajectoryPoint:
    time_from_start: float
    positions: np.ndarray
    velocities: np.ndarray | None = None


@dataclass(frozen=True)
class _Active:
    times: np.ndarray  # absolute times [N] or [N + 1], with the point before the trajectory (at receipt) first
    positions: np.ndarray  # [len(times), J]
    velocities: np.ndarray | None  # [len(times), J] or None (linear interpolation)


class TrajectoryFollower:
    """Accepts trajectories with JTC semantics and samples the commanded state at any time."""

    def __init__(self, joint_names: tuple[str, ...], interpolate_from_desired_state: bool = False) -> None:
        self.joint_names = tuple(joint_names)
        self.interpolate_from_desired_state = interpolate_from_desired_state
        self._active: _Active | None = None
        self._hold_position: np.ndarray | None = None
        self.accepted = 0
        self.rejected: dict[str, int] = {}

    def hold(self, positions: np.ndarray) -> None:
        """Drop any trajectory and hold ``positions`` (what the controller does on activation)."""
        self._active = None
        self._hold_position = np.asarray(positions, dtype=float).copy()

    def _reject(self, reason: str) -> str:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return reason

    def check(
        self, joint_names: tuple[str, ...] | list[str], stamp: float, points: list[TrajectoryPoint], now: float
    ) -> str:
        """The reason ``receive`` would reject this trajectory at ``now`` ("" = acceptable); counts nothing.
        (The action interface decides with it whether to accept a goal, as the JTC's goal callback does.)"""
        return self._validate(joint_names, stamp, points, now)[0]

    def _validate(self, joint_names, stamp: float, points: list[TrajectoryPoint], now: float):
        """(reason, times, positions, velocities) with positions/velocities in the controller's joint order."""
        if not points:
            return "empty trajectory", None, None, None
        names = tuple(joint_names)
        if len(set(names)) != len(names):
            return "duplicate joint names", None, None, None
        unknown = [n for n in names if n not in self.joint_names]
        if unknown:
            return f"joints not in this controller: {', '.join(unknown)}", None, None, None
        if set(names) != set(self.joint_names):
            return "partial joint goals are not allowed", None, None, None
        order = [names.index(n) for n in self.joint_names]
        times = np.array([p.time_from_start for p in points], dtype=float)
        if np.any(np.diff(times) <= 0) or times[0] < 0:
            return "time_from_start must be strictly increasing and >= 0", None, None, None
        has_velocities = points[0].velocities is not None and len(points[0].velocities) > 0
        positions, velocities = [], []
        for point in points:
            if len(point.positions) != len(names):
                return "positions size does not match joint_names", None, None, None
            point_has_velocities = point.velocities is not None and len(point.velocities) > 0
            if point_has_velocities != has_velocities:
                return "velocities given for some points only", None, None, None
            if has_velocities and len(point.velocities) != len(names):
                return "velocities size does not match joint_names", None, None, None
            positions.append(np.asarray(point.positions, dtype=float)[order])
            if has_velocities:
                velocities.append(np.asarray(point.velocities, dtype=float)[order])
        positions_arr = np.array(positions)
        velocities_arr = np.array(velocities) if has_velocities else None
        if not np.all(np.isfinite(positions_arr)) or (
            velocities_arr is not None and not np.all(np.isfinite(velocities_arr))
        ):
            return "non-finite values", None, None, None
        start = now if stamp == 0.0 else stamp
        if start + times[-1] < now:
            return "trajectory ends in the past", None, None, None
        return "", times, positions_arr, velocities_arr

    def receive(
        self,
        joint_names: tuple[str, ...] | list[str],
        stamp: float,
        points: list[TrajectoryPoint],
        now: float,
        measured_positions: np.ndarray,
        measured_velocities: np.ndarray,
    ) -> str:
        """Take a trajectory message received at ``now``; return "" if accepted, else the rejection reason."""
        reason, times, positions_arr, velocities_arr = self._validate(joint_names, stamp, points, now)
        if reason:
            return self._reject(reason)
        start = now if stamp == 0.0 else stamp
        all_times, all_positions, all_velocities = start + times, positions_arr, velocities_arr
        if all_times[0] > now:  # the point before the trajectory: the state at receipt, at the receipt time
            if self.interpolate_from_desired_state and (self._active is not None or self._hold_position is not None):
                before_pos, before_vel = self.sample(now)
            else:
                before_pos = np.asarray(measured_positions, dtype=float)
                before_vel = np.asarray(measured_velocities, dtype=float)
            all_times = np.concatenate([[now], all_times])
            all_positions = np.vstack([before_pos, positions_arr])
            all_velocities = None if velocities_arr is None else np.vstack([before_vel, velocities_arr])
        self._active = _Active(all_times, all_positions, all_velocities)
        self._hold_position = None
        self.accepted += 1
        return ""

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Commanded (positions, velocities) at time ``t``; holds the last point after the end."""
        if self._active is None:
            if self._hold_position is None:
                raise RuntimeError("the follower holds no position yet: call hold() first")
            return self._hold_position.copy(), np.zeros_like(self._hold_position)
        active = self._active
        times = active.times
        if t >= times[-1]:
            return active.positions[-1].copy(), np.zeros(active.positions.shape[1])
        if t <= times[0]:
            velocity = np.zeros(active.positions.shape[1]) if active.velocities is None else active.velocities[0]
            return active.positions[0].copy(), velocity.copy()
        i = int(np.searchsorted(times, t, side="right")) - 1
        t0, t1 = times[i], times[i + 1]
        span = t1 - t0
        s = (t - t0) / span
        p0, p1 = active.positions[i], active.positions[i + 1]
        if active.velocities is None:
            return p0 + s * (p1 - p0), (p1 - p0) / span
        v0, v1 = active.velocities[i] * span, active.velocities[i + 1] * span
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
        position = h00 * p0 + h10 * v0 + h01 * p1 + h11 * v1
        velocity = (d00 * p0 + d10 * v0 + d01 * p1 + d11 * v1) / span
        return position, velocity

    @property
    def active(self) -> bool:
        """True while a trajectory is being followed (not yet past its last point)."""
        return self._active is not None

    def end_time(self) -> float | None:
        return None if self._active is None else float(self._active.times[-1])
