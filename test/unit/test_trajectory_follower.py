"""The simulated arm's JointTrajectoryController semantics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dream_vla_ros.sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint

JOINTS = ("a", "b")
ZERO = np.zeros(2)


def follower(**kwargs) -> TrajectoryFollower:
    f = TrajectoryFollower(JOINTS, **kwargs)
    f.hold(ZERO)
    return f


def point(t, p, v=None):
    return TrajectoryPoint(t, np.asarray(p, float), None if v is None else np.asarray(v, float))


def test_holds_until_a_trajectory_arrives_and_after_it_ends():
    f = follower()
    assert np.array_equal(f.sample(5.0)[0], ZERO)
    assert f.receive(JOINTS, 0.0, [point(1.0, [1, 2])], now=10.0, measured_positions=ZERO,
                     measured_velocities=ZERO) == ""
    pos, vel = f.sample(10.5)
    np.testing.assert_allclose(pos, [0.5, 1.0])
    np.testing.assert_allclose(vel, [1.0, 2.0])
    np.testing.assert_allclose(f.sample(12.0)[0], [1, 2])
    np.testing.assert_allclose(f.sample(12.0)[1], [0, 0])


def test_nonzero_stamp_starts_at_the_stamp_and_splines_from_the_state_at_receipt():
    f = follower()
    f.receive(JOINTS, 20.0, [point(1.0, [1, 1])], now=10.0, measured_positions=ZERO, measured_velocities=ZERO)
    np.testing.assert_allclose(f.sample(10.0)[0], ZERO)  # the point before the trajectory is at receipt,
    np.testing.assert_allclose(f.sample(15.5)[0], [0.5, 0.5])  # not at the stamp (the JTC's trajectory.cpp)
    np.testing.assert_allclose(f.sample(21.0)[0], [1, 1])


def test_future_stamp_from_the_desired_state_continues_the_running_trajectory():
    g = follower(interpolate_from_desired_state=True)
    g.receive(JOINTS, 0.0, [point(1.0, [1, 1], [1, 1])], now=0.0, measured_positions=ZERO, measured_velocities=ZERO)
    commanded = g.sample(0.4)
    g.receive(JOINTS, 0.5, [point(0.1, [0.6, 0.6], [1, 1])], now=0.4, measured_positions=ZERO,
              measured_velocities=ZERO)
    np.testing.assert_allclose(g.sample(0.4)[0], commanded[0])  # no step at the replacement
    np.testing.assert_allclose(g.sample(0.4)[1], commanded[1])
    np.testing.assert_allclose(g.sample(0.6)[0], [0.6, 0.6])


def test_joint_order_is_mapped_by_name():
    f = follower()
    f.receive(("b", "a"), 0.0, [point(1.0, [2, 1])], now=0.0, measured_positions=ZERO, measured_velocities=ZERO)
    np.testing.assert_allclose(f.sample(1.0)[0], [1, 2])


def test_hard_replacement_and_start_from_measured_or_desired():
    measured = np.array([0.1, 0.1])
    f = follower()
    f.receive(JOINTS, 0.0, [point(1.0, [1, 1])], now=0.0, measured_positions=ZERO, measured_velocities=ZERO)
    f.receive(JOINTS, 0.0, [point(1.0, [-1, -1])], now=0.5, measured_positions=measured, measured_velocities=ZERO)
    np.testing.assert_allclose(f.sample(0.5)[0], measured)  # replaced: splines from the measured state
    np.testing.assert_allclose(f.sample(1.5)[0], [-1, -1])
    g = follower(interpolate_from_desired_state=True)
    g.receive(JOINTS, 0.0, [point(1.0, [1, 1])], now=0.0, measured_positions=ZERO, measured_velocities=ZERO)
    g.receive(JOINTS, 0.0, [point(1.0, [-1, -1])], now=0.5, measured_positions=measured, measured_velocities=ZERO)
    np.testing.assert_allclose(g.sample(0.5)[0], [0.5, 0.5])  # from the last commanded state


def test_past_first_points_jump_into_the_current_segment():
    f = follower()
    points = [point(0.1, [1, 1]), point(0.2, [2, 2]), point(1.2, [3, 3])]
    assert f.receive(JOINTS, 5.0, points, now=5.7, measured_positions=ZERO, measured_velocities=ZERO) == ""
    np.testing.assert_allclose(f.sample(5.7)[0], [2.5, 2.5])  # no bridge from the measured state


@pytest.mark.parametrize(
    ("names", "stamp", "points", "reason"),
    [
        (JOINTS, 0.0, [], "empty trajectory"),
        (("a", "c"), 0.0, [point(1, [0, 0])], "joints not in this controller: c"),
        (("a",), 0.0, [TrajectoryPoint(1.0, np.zeros(1))], "partial joint goals are not allowed"),
        (JOINTS, 0.0, [point(1, [0, 0]), point(1, [0, 0])], "time_from_start must be strictly increasing and >= 0"),
        (JOINTS, 0.0, [point(1, [0, 0, 0])], "positions size does not match joint_names"),
        (JOINTS, 0.0, [point(1, [np.nan, 0])], "non-finite values"),
        (JOINTS, 0.0, [point(1, [0, 0], [0, 0]), point(2, [0, 0])], "velocities given for some points only"),
        (JOINTS, 1.0, [point(1, [0, 0])], "trajectory ends in the past"),
    ],
)
def test_rejections_keep_the_running_trajectory(names, stamp, points, reason):
    f = follower()
    f.receive(JOINTS, 0.0, [point(10.0, [1, 1])], now=0.0, measured_positions=ZERO, measured_velocities=ZERO)
    before = f.sample(5.0)[0]
    assert f.receive(names, stamp, points, now=5.0, measured_positions=ZERO, measured_velocities=ZERO) == reason
    assert f.rejected[reason] == 1
    np.testing.assert_allclose(f.sample(5.0)[0], before)


finite = st.floats(-3, 3, allow_nan=False)


@given(st.lists(st.tuples(finite, finite, finite, finite), min_size=1, max_size=6), st.floats(0.01, 0.2))
def test_cubic_interpolation_passes_through_points_with_their_velocities(rows, dt):
    f = follower()
    points = [point((i + 1) * dt, [r[0], r[1]], [r[2], r[3]]) for i, r in enumerate(rows)]
    assert f.receive(JOINTS, 0.0, points, now=0.0, measured_positions=ZERO, measured_velocities=ZERO) == ""
    for i, p in enumerate(points[:-1]):
        pos, vel = f.sample((i + 1) * dt)
        np.testing.assert_allclose(pos, p.positions, atol=1e-9)
        np.testing.assert_allclose(vel, p.velocities, atol=1e-6)
    # velocity is the derivative of position (finite difference inside a segment)
    t, h = 0.5 * dt, 1e-6
    np.testing.assert_allclose((f.sample(t + h)[0] - f.sample(t - h)[0]) / (2 * h), f.sample(t)[1], atol=1e-3)
