"""The simulated JointTrajectoryController (sim/controller.py): topic commands while active and inactive, and
FollowJointTrajectory goals: validation, preemption, feedback, tolerances, cancel, reset, shutdown."""

from __future__ import annotations

import numpy as np
import pytest

from dream_vla_ros.protocol import GOAL_TOLERANCE_VIOLATED, INVALID_GOAL, PATH_TOLERANCE_VIOLATED, SUCCESSFUL
from dream_vla_ros.sim.controller import (
    CANCELED,
    DEACTIVATED,
    MULTI_DOF,
    NOT_RUNNING,
    PREEMPTED,
    SHUTTING_DOWN,
    TrajectoryController,
)
from dream_vla_ros.sim.trajectory_follower import TrajectoryPoint

JOINTS = ("a", "b")
ZERO = np.zeros(2)
DT = 0.0125


def points(*rows: tuple[float, list[float]]) -> list[TrajectoryPoint]:
    return [TrajectoryPoint(t, np.asarray(p, dtype=float)) for t, p in rows]


class Rig:
    """A controller on an ideal arm (it reaches every target within the step), with its warnings and feedback."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.feedback: list[tuple] = []
        self.controller = TrajectoryController(JOINTS, self.warnings.append)
        self.controller.hold(ZERO)
        self.controller.active = True
        self.q, self.t = ZERO.copy(), 0.0
        self.cancel = False

    def goal(self, rows, stamp: float = 0.0, path=(), goal=(), goal_time: float = 0.0):
        return self.controller.accept(list(JOINTS), stamp, points(*rows), list(path), list(goal), goal_time,
                                      lambda: self.cancel, lambda *values: self.feedback.append(values))

    def step(self, lag: np.ndarray | None = None) -> None:
        """One physics step at time t: commands, sample at the end of the step, the arm, the goal."""
        controller = self.controller
        controller.time = self.t
        controller.receive(controller.take(), self.t, self.q, ZERO)
        end = self.t + DT
        q, v = controller.sample(end)
        self.q = q if lag is None else q - lag
        controller.update_goal(end, q, v, self.q, ZERO)
        self.t = end


def test_topic_commands_are_followed_while_active_and_ignored_while_inactive():
    rig = Rig()
    controller = rig.controller
    controller.submit(list(JOINTS), 0.0, points((1.0, [1.0, 2.0])))
    rig.step()
    np.testing.assert_allclose(rig.q, [DT, 2 * DT])
    controller.active = False
    controller.submit(list(JOINTS), 0.0, points((1.0, [5.0, 5.0])))
    controller.ignore(controller.take())
    counts = controller.trajectory_counts()
    assert counts == {"trajectories_received": 2, "trajectories_ignored_inactive": 1, "trajectories accepted": 1}


def test_a_rejection_is_logged_once_per_reason_and_counted_each_time():
    rig = Rig()
    for _ in range(3):
        rig.controller.submit(["a"], 0.0, points((1.0, [1.0])))
        rig.step()
    assert rig.warnings == ["trajectory rejected: partial joint goals are not allowed (the previous one keeps "
                            "running)"]
    assert rig.controller.trajectory_counts()["trajectories rejected (partial joint goals are not allowed)"] == 3
    np.testing.assert_allclose(rig.q, ZERO)


def test_goals_are_checked_like_topic_messages_and_refused_while_inactive():
    rig = Rig()
    controller = rig.controller
    assert controller.check_goal(list(JOINTS), 0.0, points((1.0, [1, 1])), multi_dof=False) == ""
    assert controller.check_goal(list(JOINTS), 0.0, points((1.0, [1, 1])), multi_dof=True) == MULTI_DOF
    assert "strictly increasing" in controller.check_goal(list(JOINTS), 0.0, points((1.0, [1, 1]), (1.0, [2, 2])),
                                                          multi_dof=False)
    controller.active = False
    assert controller.check_goal(list(JOINTS), 0.0, points((1.0, [1, 1])), multi_dof=False) == NOT_RUNNING
    assert controller.goal_counts()["goals_rejected"] == 3


def test_a_goal_succeeds_at_its_end_with_feedback_every_step():
    rig = Rig()
    goal = rig.goal([(0.05, [0.1, 0.2])])
    for _ in range(3):
        rig.step()
        assert not goal.resolved
    rig.step()  # ends at 50 ms: the last point, at rest
    assert goal.outcome == ("succeeded", SUCCESSFUL, "")
    assert len(rig.feedback) == 4
    t, desired_q, desired_v, actual_q, actual_v, error_q, error_v = rig.feedback[0]
    assert t == pytest.approx(DT)
    np.testing.assert_allclose(desired_q, [0.025, 0.05])
    np.testing.assert_allclose(error_q, desired_q - actual_q)
    np.testing.assert_allclose(error_v, desired_v - actual_v)
    assert rig.controller.wait(goal, lambda: False) == ("succeeded", SUCCESSFUL, "")
    assert rig.controller.goal_counts() == {"goals_accepted": 1, "goals_rejected": 0, "goals_succeeded": 1,
                                            "goals_aborted": 0, "goals_preempted": 0, "goals_canceled": 0}


def test_a_new_goal_preempts_the_previous_one_which_is_counted_as_preempted_only():
    rig = Rig()
    first = rig.goal([(1.0, [1.0, 1.0])])
    rig.step()
    second = rig.goal([(1.0, [-1.0, -1.0])])
    assert first.outcome == ("aborted", INVALID_GOAL, PREEMPTED)
    assert rig.controller.wait(first, lambda: False) == first.outcome
    rig.step()
    assert rig.controller.goal is second
    counts = rig.controller.goal_counts()
    assert (counts["goals_accepted"], counts["goals_preempted"], counts["goals_aborted"]) == (2, 1, 0)


def test_path_tolerance_violation_aborts_and_holds_where_the_arm_is():
    rig = Rig()
    goal = rig.goal([(1.0, [1.0, 0.0])], path=[("a", 0.01, 0.0)])
    rig.step(lag=np.array([0.02, 0.0]))
    assert goal.outcome[:2] == ("aborted", PATH_TOLERANCE_VIOLATED)
    assert "path tolerance violated: a position error" in goal.outcome[2]
    assert rig.warnings == [f"goal aborted: {goal.outcome[2]}"]
    held = rig.q.copy()
    rig.step()
    np.testing.assert_allclose(rig.q, held)
    assert rig.controller.goal is None


def test_goal_tolerance_not_reached_in_time_aborts():
    rig = Rig()
    goal = rig.goal([(0.025, [0.5, 0.0])], goal=[("a", 0.01, 0.0)], goal_time=0.02)
    for _ in range(6):
        rig.step(lag=np.array([0.1, 0.0]))
    assert goal.outcome[:2] == ("aborted", GOAL_TOLERANCE_VIOLATED)


def test_cancel_holds_the_commanded_position_and_ends_canceled():
    rig = Rig()
    goal = rig.goal([(1.0, [1.0, 1.0])])
    rig.step()
    rig.cancel = True
    rig.step()
    assert goal.outcome == ("canceled", SUCCESSFUL, CANCELED)
    held = rig.q.copy()
    rig.step()
    np.testing.assert_allclose(rig.q, held)
    assert rig.controller.wait(goal, lambda: False)[0] == "canceled"
    assert rig.controller.goal_counts()["goals_canceled"] == 1


def test_a_reset_aborts_the_running_goal_and_any_goal_that_arrives_while_inactive():
    rig = Rig()
    controller = rig.controller
    running = rig.goal([(1.0, [1.0, 1.0])])
    rig.step()
    controller.abort_goals()
    assert running.outcome == ("aborted", INVALID_GOAL, DEACTIVATED) and controller.goal is None
    late = rig.goal([(1.0, [1.0, 1.0])])
    controller.active = False
    controller.ignore(controller.take())
    assert late.outcome == ("aborted", INVALID_GOAL, DEACTIVATED)


def test_a_goal_rejected_on_receipt_aborts_with_the_reason():
    rig = Rig()
    goal = rig.goal([(0.01, [1.0, 1.0])], stamp=-10.0)  # ended long before the controller gets it
    rig.t = 1.0
    rig.step()
    assert goal.outcome == ("aborted", INVALID_GOAL, "trajectory ends in the past")


def test_waiting_goals_end_at_shutdown():
    rig = Rig()
    goal = rig.goal([(1.0, [1.0, 1.0])])
    assert rig.controller.wait(goal, lambda: True) == ("aborted", INVALID_GOAL, SHUTTING_DOWN)
    assert rig.controller.goal_counts()["goals_aborted"] == 1
