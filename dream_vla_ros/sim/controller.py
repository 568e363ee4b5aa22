"""The simulated arm's JointTrajectoryController (JTC) with its FollowJointTrajectory goals, without ROS.

- Every trajectory, from the topic or from a goal, goes through
  :class:`~dream_vla_ros.sim.trajectory_follower.TrajectoryFollower` (the JTC's topic semantics; a rejected
  one is logged once per reason and the previous trajectory keeps running). The controller is sampled every
  physics step at the end time of the step, so a trajectory whose points lie on the step grid is reproduced
  exactly. While the controller is inactive (a reset) trajectories are counted and ignored.
- A goal is validated like a topic message; an invalid one, or any goal while the controller is inactive, is
  **rejected**. An accepted goal preempts the newest one before it (which ends ABORTED with ``INVALID_GOAL``,
  :data:`PREEMPTED`) and its trajectory goes through the same follower as the topic's messages. (The JTC ends
  a preempted goal *canceled*; rclpy cannot cancel a goal nobody asked to cancel, so here it is *aborted*
  with the JTC's error code and text.)
- While a goal runs, feedback (``desired``: the commanded state at the end of the step, ``actual``: the
  measured state after it, ``error`` = desired - actual) goes out every physics step, and the tolerances of
  :mod:`dream_vla_ros.sim.goal_tolerances` are checked against whatever trajectory runs: path tolerance
  before the last point (``PATH_TOLERANCE_VIOLATED``: abort, the arm holds where it is), goal tolerance after
  it (success, or ``GOAL_TOLERANCE_VIOLATED`` once ``goal_time_tolerance`` has passed). A cancel request holds
  the commanded position and ends the goal CANCELED; a reset ends the running goal ABORTED
  (``INVALID_GOAL``, :data:`DEACTIVATED`), like a controller switch.

Threads: :meth:`TrajectoryController.submit`, :meth:`~TrajectoryController.check_goal`,
:meth:`~TrajectoryController.accept`, :meth:`~TrajectoryController.wait` and the counts may be called from any
thread; everything else belongs to the simulation thread, which takes the submitted commands once per step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dream_vla_ros.protocol import INVALID_GOAL, SUCCESSFUL
from dream_vla_ros.sim.goal_tolerances import ControllerConstraints, GoalMonitor
from dream_vla_ros.sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint

PREEMPTED = "Current goal cancelled due to new incoming action."
DEACTIVATED = "Current goal cancelled during deactivate transition."
NOT_RUNNING = "Can't accept new action goals. Controller is not running."
MULTI_DOF = "multi-DOF trajectories are not supported"
CANCELED = "Goal canceled by the client"
SHUTTING_DOWN = "the simulated arm is shutting down"

Tolerances = Sequence[tuple[str, float, float]]  # (joint name, position, velocity) entries of a goal
# (t, desired positions, desired velocities, actual positions, actual velocities, position error, velocity error)
FeedbackSink = Callable[[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]
Outcome = tuple[str, int, str]  # status (succeeded, aborted, canceled), error code, error string


class Goal:
    """An accepted goal: resolved once (by the simulation thread, by preemption or at shutdown)."""

    def __init__(self, names: list[str], stamp: float, points: list[TrajectoryPoint], monitor: GoalMonitor,
                 cancel_requested: Callable[[], bool], feedback: FeedbackSink) -> None:
        self.names, self.stamp, self.points, self.monitor = names, stamp, points, monitor
        self.cancel_requested = cancel_requested
        self.feedback = feedback
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self._lock = threading.Lock()

    def resolve(self, status: str, code: int, text: str) -> bool:
        """End the goal (False: it had ended already)."""
        with self._lock:
            if self.outcome is not None:
                return False
            self.outcome = (status, code, text)
        self.done.set()
        return True

    @property
    def resolved(self) -> bool:
        return self.outcome is not None


Command = tuple[list[str], float, list[TrajectoryPoint], Goal | None]  # joint names, stamp, points, its goal


class TrajectoryController:
    """The JTC emulation (see the module docstring). ``warn`` logs rejections and aborts; ``constraints``: the
    controller's default tolerances (``ControllerConstraints()`` when None)."""

    def __init__(self, joint_names: Sequence[str], warn: Callable[[str], None],
                 interpolate_from_desired_state: bool = False,
                 constraints: ControllerConstraints | None = None) -> None:
        self.follower = TrajectoryFollower(tuple(joint_names), interpolate_from_desired_state)
        self._validator = TrajectoryFollower(tuple(joint_names))  # judges goals in the action server's threads
        self._constraints = constraints or ControllerConstraints()
        self._warn = warn
        self.active = False  # accepting trajectories and goals (set by the simulation thread)
        self.time = 0.0  # the controller's time at the current step (set by the simulation thread)
        self.goal: Goal | None = None  # the goal whose trajectory runs (simulation thread)
        self._lock = threading.Lock()
        self._pending: list[Command] = []
        self._newest_goal: Goal | None = None  # the last accepted one, until it ends: the next one preempts it
        self._logged: set[str] = set()
        self._counts = {"trajectories_received": 0, "trajectories_ignored_inactive": 0}
        self._follower_counts: dict[str, Any] = {"accepted": 0, "rejected": {}}
        self._goal_counts = {"goals_accepted": 0, "goals_rejected": 0, "goals_succeeded": 0, "goals_aborted": 0,
                             "goals_preempted": 0, "goals_canceled": 0}

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.follower.joint_names

    # -- any thread ------------------------------------------------------------------------------------------
    def submit(self, names: list[str], stamp: float, points: list[TrajectoryPoint]) -> None:
        """A trajectory from the topic, for the next step."""
        with self._lock:
            self._pending.append((names, stamp, points, None))
            self._counts["trajectories_received"] += 1

    def check_goal(self, names: list[str], stamp: float, points: list[TrajectoryPoint], multi_dof: bool) -> str:
        """Why a goal must be rejected now ('' = accept it); counts a rejection."""
        if not self.active:
            reason = NOT_RUNNING
        elif multi_dof:
            reason = MULTI_DOF
        else:
            reason = self._validator.check(names, stamp, points, self.time)
        if reason:
            with self._lock:
                self._goal_counts["goals_rejected"] += 1
        return reason

    def accept(self, names: list[str], stamp: float, points: list[TrajectoryPoint], path_tolerance: Tolerances,
               goal_tolerance: Tolerances, goal_time_tolerance: float, cancel_requested: Callable[[], bool],
               feedback: FeedbackSink) -> Goal:
        """An accepted goal, for the next step; it preempts the newest one before it."""
        monitor = GoalMonitor(self.joint_names, path_tolerance, goal_tolerance, goal_time_tolerance,
                              self._constraints)
        goal = Goal(names, stamp, points, monitor, cancel_requested, feedback)
        with self._lock:
            previous, self._newest_goal = self._newest_goal, goal
            self._pending.append((names, stamp, points, goal))
            self._goal_counts["goals_accepted"] += 1
        if previous is not None and previous.resolve("aborted", INVALID_GOAL, PREEMPTED):
            with self._lock:
                self._goal_counts["goals_preempted"] += 1
        return goal

    def wait(self, goal: Goal, stopping: Callable[[], bool]) -> Outcome:
        """Block until ``goal`` ends (aborted once ``stopping()`` turns true); its outcome, counted."""
        while not goal.done.wait(0.05):
            if stopping():
                goal.resolve("aborted", INVALID_GOAL, SHUTTING_DOWN)
        status, code, text = goal.outcome
        with self._lock:
            if self._newest_goal is goal:
                self._newest_goal = None
            if status != "aborted" or text != PREEMPTED:  # preemptions are counted when they happen
                key = {"succeeded": "goals_succeeded", "canceled": "goals_canceled"}.get(status, "goals_aborted")
                self._goal_counts[key] += 1
        return status, code, text

    def trajectory_counts(self) -> dict[str, int]:
        """Received, ignored, accepted and (per reason) rejected trajectories, for diagnostics."""
        with self._lock:
            counts, follower = dict(self._counts), dict(self._follower_counts)
        counts["trajectories accepted"] = follower["accepted"]
        for reason, count in follower["rejected"].items():
            counts[f"trajectories rejected ({reason})"] = count
        return counts

    def goal_counts(self) -> dict[str, int]:
        """Goals accepted, rejected, succeeded, aborted, preempted and canceled, for diagnostics."""
        with self._lock:
            return dict(self._goal_counts)

    # -- simulation thread -----------------------------------------------------------------------------------
    def take(self) -> list[Command]:
        """The commands submitted since the last call."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def abort_goals(self) -> None:
        """A reset: the running goal (and one accepted but not yet running) ends ABORTED."""
        with self._lock:
            newest, self._newest_goal = self._newest_goal, None
        for running in {g for g in (newest, self.goal) if g is not None}:
            running.resolve("aborted", INVALID_GOAL, DEACTIVATED)
        self.goal = None

    def hold(self, positions: np.ndarray) -> None:
        """Drop any trajectory and hold ``positions`` (activation after a reset)."""
        self.follower.hold(positions)

    def ignore(self, commands: list[Command]) -> None:
        """Commands that arrived while the controller is inactive: counted; their goals end ABORTED."""
        if not commands:
            return
        with self._lock:
            self._counts["trajectories_ignored_inactive"] += len(commands)
        for *_, goal in commands:
            if goal is not None:
                goal.resolve("aborted", INVALID_GOAL, DEACTIVATED)

    def receive(self, commands: list[Command], t: float, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Commands at time ``t``, the arm measured at ``positions`` / ``velocities``."""
        if not commands:
            return
        follower = self.follower
        for names, stamp, points, goal in commands:
            if goal is not None and goal.resolved:
                continue  # preempted before it reached the controller
            reason = follower.receive(names, stamp, points, t, positions, velocities)
            if reason and reason not in self._logged:
                self._logged.add(reason)
                self._warn(f"trajectory rejected: {reason} (the previous one keeps running)")
            if goal is not None:
                if reason:
                    goal.resolve("aborted", INVALID_GOAL, reason)
                else:
                    self.goal = goal
        with self._lock:
            self._follower_counts = {"accepted": follower.accepted, "rejected": dict(follower.rejected)}

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The commanded (positions, velocities) at time ``t``."""
        return self.follower.sample(t)

    def update_goal(self, t: float, desired_q: np.ndarray, desired_v: np.ndarray, actual_q: np.ndarray,
                    actual_v: np.ndarray) -> None:
        """Feedback and the tolerance checks of the running goal at time ``t`` (the end of a step)."""
        goal, follower = self.goal, self.follower
        if goal is None:
            return
        if goal.resolved:
            self.goal = None
            return
        if goal.cancel_requested():
            follower.hold(follower.sample(t)[0])
            goal.resolve("canceled", SUCCESSFUL, CANCELED)
            self.goal = None
            return
        goal.feedback(t, desired_q, desired_v, actual_q, actual_v, desired_q - actual_q, desired_v - actual_v)
        end = follower.end_time()
        outcome = goal.monitor.update(t, -np.inf if end is None else end, desired_q, desired_v, actual_q, actual_v)
        if outcome is None:
            return
        if outcome.status == "aborted":
            follower.hold(actual_q)  # the JTC holds where the arm is
            self._warn(f"goal aborted: {outcome.error_string}")
        goal.resolve(outcome.status, outcome.error_code, outcome.error_string)
        self.goal = None
