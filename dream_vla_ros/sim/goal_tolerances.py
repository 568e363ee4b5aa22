"""What a JointTrajectoryController does with a FollowJointTrajectory goal's tolerances, without ROS.

Semantics of ``ros2_controllers`` ``joint_trajectory_controller`` (Humble/Jazzy, ``tolerances.hpp``):

- **Defaults** come from the controller's parameters: ``constraints.<joint>.trajectory`` (path) and
  ``constraints.<joint>.goal`` position tolerances (0 = not checked), ``constraints.stopped_velocity_tolerance``
  (0.01: at the end, a joint must be slower than this) and ``constraints.goal_time`` (0 = no deadline).
- **A goal's tolerances** override them per joint and per field: a positive value replaces the default, 0 keeps
  it, -1 erases it (no check). A non-zero ``goal_time_tolerance`` replaces ``constraints.goal_time``.
- **While moving** (before the trajectory's last point) every joint must stay within its path tolerance of the
  desired state, else the goal aborts with ``PATH_TOLERANCE_VIOLATED`` (and the controller holds).
- **At the end** the goal succeeds once every joint is within its goal tolerance (position, and velocity
  below the stopped-velocity tolerance); if that has not happened ``goal_time_tolerance`` after the end
  (when it is set), the goal aborts with ``GOAL_TOLERANCE_VIOLATED``.

The trajectory the goal is checked against is whatever the controller runs: a trajectory published on the
topic while a goal is active replaces the goal's trajectory, and the goal is judged on the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dream_vla_ros.protocol import GOAL_TOLERANCE_VIOLATED, PATH_TOLERANCE_VIOLATED, SUCCESSFUL


@dataclass(frozen=True)
class Tolerance:
    """Position and velocity tolerance of one joint (0 = not checked)."""

    position: float = 0.0
    velocity: float = 0.0


@dataclass(frozen=True)
class ControllerConstraints:
    """The controller's default constraints (its ``constraints.*`` parameters)."""

    stopped_velocity_tolerance: float = 0.01
    goal_time: float = 0.0


@dataclass(frozen=True)
class GoalOutcome:
    """How a goal ended: ``succeeded`` or ``aborted``, the result's error code and string."""

    status: str
    error_code: int
    error_string: str


def _merge(default: float, requested: float) -> float:
    if requested < 0.0:
        return 0.0  # erased
    return requested if requested > 0.0 else default


def goal_tolerances(
    joint_names: Sequence[str],
    requested: Sequence[tuple[str, float, float]],
    default_position: float = 0.0,
    default_velocity: float = 0.0,
) -> list[Tolerance]:
    """Per joint (in ``joint_names`` order) the tolerance after applying a goal's ``(name, position,
    velocity)`` entries to the defaults; entries naming other joints are ignored."""
    out = [Tolerance(default_position, default_velocity) for _ in joint_names]
    index = {name: i for i, name in enumerate(joint_names)}
    for name, position, velocity in requested:
        if name in index:
            current = out[index[name]]
            out[index[name]] = Tolerance(_merge(current.position, position), _merge(current.velocity, velocity))
    return out


def _violation(names: Sequence[str], tolerances: Sequence[Tolerance], position_error: np.ndarray,
               velocity_error: np.ndarray | None) -> str:
    for i, (name, tol) in enumerate(zip(names, tolerances, strict=True)):
        if tol.position > 0.0 and abs(position_error[i]) > tol.position:
            return f"{name} position error {position_error[i]:+.4f} exceeds {tol.position:g}"
        if tol.velocity > 0.0 and velocity_error is not None and abs(velocity_error[i]) > tol.velocity:
            return f"{name} velocity error {velocity_error[i]:+.4f} exceeds {tol.velocity:g}"
    return ""


class GoalMonitor:
    """Judges one goal at every controller update (see the module docstring).

    path_requested / goal_requested: the goal's ``(name, position, velocity)`` tolerance entries; the defaults
    are the controller's (path: none; goal: position none, velocity the stopped-velocity tolerance).
    """

    def __init__(self, joint_names: Sequence[str], path_requested: Sequence[tuple[str, float, float]],
                 goal_requested: Sequence[tuple[str, float, float]], goal_time_tolerance: float,
                 constraints: ControllerConstraints = ControllerConstraints()) -> None:
        self.joint_names = tuple(joint_names)
        self.path = goal_tolerances(joint_names, path_requested)
        self.goal = goal_tolerances(joint_names, goal_requested,
                                    default_velocity=constraints.stopped_velocity_tolerance)
        self.goal_time_tolerance = goal_time_tolerance if goal_time_tolerance > 0.0 else constraints.goal_time

    def update(self, t: float, end_time: float, desired_q: np.ndarray, desired_v: np.ndarray,
               actual_q: np.ndarray, actual_v: np.ndarray) -> GoalOutcome | None:
        """The outcome at controller time ``t`` (None: still running). ``end_time``: the running trajectory's
        last point."""
        error_q = np.asarray(desired_q, dtype=float) - np.asarray(actual_q, dtype=float)
        if t < end_time:
            text = _violation(self.joint_names, self.path, error_q, np.asarray(desired_v) - np.asarray(actual_v))
            if text:
                return GoalOutcome("aborted", PATH_TOLERANCE_VIOLATED, f"path tolerance violated: {text}")
            return None
        text = _violation(self.joint_names, self.goal, error_q, -np.asarray(actual_v, dtype=float))
        if not text:
            return GoalOutcome("succeeded", SUCCESSFUL, "")
        late = t - end_time
        if self.goal_time_tolerance > 0.0 and late > self.goal_time_tolerance:
            return GoalOutcome("aborted", GOAL_TOLERANCE_VIOLATED,
                               f"goal tolerance not reached {late:.3f} s after the end "
                               f"(goal_time_tolerance {self.goal_time_tolerance:g} s): {text}")
        return None
