"""Pure parts of the controller interfaces: JointJog velocities from the plan (chunking.jog), the JTC goal
tolerance semantics of the simulated arm (sim.goal_tolerances), and goal validation (TrajectoryFollower.check)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dream_vla_ros.chunking.jog import jog_velocities
from dream_vla_ros.protocol import GOAL_TOLERANCE_VIOLATED, PATH_TOLERANCE_VIOLATED
from dream_vla_ros.sim.goal_tolerances import ControllerConstraints, GoalMonitor, goal_tolerances
from dream_vla_ros.sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint

VMAX, AMAX, H = np.array([1.0, 2.0]), np.array([5.0, 10.0]), 0.01
floats = st.floats(-5.0, 5.0, allow_nan=False)


def test_jog_is_the_plans_mean_velocity_plus_a_pull_onto_the_plan():
    q, v = np.array([0.0, 1.0]), np.array([0.5, -0.5])
    ff = jog_velocities(q, v, 1.0, q + np.array([0.01, -0.01]), 1.02, VMAX, AMAX, H)
    assert ff == pytest.approx([0.5, -0.5])
    # Measured 0.02 behind the plan at its stamp (the plan moved on since): the gain pulls forward.
    pulled = jog_velocities(q, v, 1.0, q + np.array([0.01, -0.01]), 1.02, VMAX, AMAX, H,
                            measured=np.array([-0.02 - 0.005, 1.0 + 0.005]), measured_time=0.99, gain=2.0)
    assert pulled == pytest.approx([0.5 + 2.0 * 0.02, -0.5])


@given(st.lists(floats, min_size=2, max_size=2), st.lists(floats, min_size=2, max_size=2),
       st.lists(floats, min_size=2, max_size=2), st.floats(0.0, 20.0))
def test_jog_commands_stay_within_the_limits(q_next, measured, previous, gain):
    previous = np.clip(np.array(previous), -VMAX, VMAX)
    out = jog_velocities(np.zeros(2), np.zeros(2), 0.0, np.array(q_next), 0.02, VMAX, AMAX, H,
                         measured=np.array(measured), measured_time=0.0, gain=gain, previous=previous)
    assert np.all(np.abs(out) <= VMAX + 1e-12)
    assert np.all(np.abs(out - previous) <= AMAX * H + 1e-12)


def test_goal_tolerances_merge_like_the_jtc():
    merged = goal_tolerances(["a", "b", "c"], [("a", 0.1, 0.0), ("b", -1.0, -1.0), ("x", 9.0, 9.0)],
                             default_position=0.05, default_velocity=0.01)
    assert [(t.position, t.velocity) for t in merged] == [(0.1, 0.01), (0.0, 0.0), (0.05, 0.01)]


def test_goal_monitor_path_goal_and_deadline():
    zero = np.zeros(2)
    monitor = GoalMonitor(["a", "b"], [("a", 0.1, 0.0)], [("a", 0.05, 0.0), ("b", -1.0, -1.0)], 0.5)
    out = monitor.update(0.5, 1.0, np.array([0.2, 0.0]), zero, zero, zero)
    assert out.status == "aborted" and out.error_code == PATH_TOLERANCE_VIOLATED
    assert "a position error" in out.error_string
    assert monitor.update(0.5, 1.0, np.array([0.05, 9.0]), zero, zero, zero) is None  # b has no path tolerance
    assert monitor.update(1.2, 1.0, zero, zero, np.array([0.1, 0.0]), zero) is None  # late, still within 0.5 s
    out = monitor.update(1.6, 1.0, zero, zero, np.array([0.1, 0.0]), zero)
    assert out.error_code == GOAL_TOLERANCE_VIOLATED
    # The stopped-velocity tolerance applies at the end unless erased; b's was erased.
    assert monitor.update(1.0, 1.0, zero, zero, zero, np.array([0.02, 5.0])) is None
    assert monitor.update(1.0, 1.0, zero, zero, zero, np.array([0.0, 5.0])).status == "succeeded"
    patient = GoalMonitor(["a"], [], [("a", 0.05, 0.0)], 0.0, ControllerConstraints(goal_time=0.0))
    assert patient.update(100.0, 1.0, np.zeros(1), np.zeros(1), np.ones(1), np.zeros(1)) is None  # no deadline


def test_follower_check_validates_without_counting():
    follower = TrajectoryFollower(("a", "b"))
    good = [TrajectoryPoint(0.1, np.array([0.0, 0.0]))]
    assert follower.check(["b", "a"], 0.0, good, 5.0) == ""
    assert follower.check(["a"], 0.0, [TrajectoryPoint(0.1, np.zeros(1))], 5.0) == "partial joint goals are not allowed"
    assert follower.check(["a", "b"], 1.0, good, 5.0) == "trajectory ends in the past"
    assert follower.check(["a", "b"], 0.0, [], 5.0) == "empty trajectory"
    assert follower.rejected == {} and follower.accepted == 0
