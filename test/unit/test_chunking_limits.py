"""Limit enforcement, the tracking law and the braking tail of the chunk executor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dream_vla_ros.chunking.limits import JointLimits, LimitedIntegrator
from dream_vla_ros.chunking.tracking import braking_velocity, tracking_velocity
from dream_vla_ros.chunking.window import braking_tail
from dream_vla_ros.configuration import from_mapping
from dream_vla_ros.errors import ConfigError

H = 0.01
TOL = 1e-9


def _integrator(vmax=2.0, amax=10.0, lo=-1.0, hi=1.0, joints=1) -> LimitedIntegrator:
    limits = JointLimits(position_min=(lo,), position_max=(hi,), max_velocity=(vmax,), max_acceleration=(amax,))
    return LimitedIntegrator(limits.resolve(joints), H)


@settings(max_examples=60)
@given(
    vmax=st.floats(0.2, 5.0),
    amax=st.floats(0.5, 50.0),
    width=st.floats(0.05, 3.0),
    start=st.floats(0.0, 1.0),
    wanted=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=120),
)
def test_no_command_sequence_leaves_the_limits(vmax, amax, width, start, wanted):
    integrator = _integrator(vmax, amax, -width / 2, width / 2)
    q, v = np.array([-width / 2 + start * width]), np.zeros(1)
    for target in wanted:
        q1, v1, _ = integrator.step(q, v, np.array([target]))
        assert abs(v1[0] - v[0]) <= amax * H * (1 + 1e-9) + TOL
        assert abs(v1[0]) <= vmax * (1 + 1e-12)
        assert -width / 2 - TOL <= q1[0] <= width / 2 + TOL
        # inside the step the motion is a parabola; its extremum must stay inside too
        a = (v1[0] - v[0]) / H
        if a != 0 and 0 < -v[0] / a < H:
            peak = q[0] - v[0] * v[0] / (2 * a)
            assert -width / 2 - TOL <= peak <= width / 2 + TOL
        q, v = q1, v1


def test_full_speed_toward_a_limit_stops_before_it():
    integrator = _integrator(vmax=2.0, amax=5.0, lo=-1.0, hi=1.0)
    q, v = np.array([0.0]), np.array([2.0])  # 2 rad/s needs 0.4 rad to stop: just enough from 0
    trace = []
    for _ in range(200):
        q, v, _ = integrator.step(q, v, np.array([100.0]))
        trace.append(q[0])
    assert max(trace) <= 1.0 + TOL
    assert trace[-1] == pytest.approx(1.0, abs=1e-3)
    assert v[0] == pytest.approx(0.0, abs=1e-9)


def test_clamp_flags_name_the_limit():
    integrator = _integrator(vmax=1.0, amax=10.0, lo=-1.0, hi=1.0)
    _, _, flags = integrator.step(np.zeros(1), np.zeros(1), np.array([0.05]))
    assert flags == (False, False, False)
    _, _, flags = integrator.step(np.zeros(1), np.zeros(1), np.array([0.5]))
    assert flags == (False, False, True)
    _, _, flags = integrator.step(np.zeros(1), np.array([0.95]), np.array([1.5]))
    assert flags == (False, True, True)
    _, _, flags = integrator.step(np.array([0.999]), np.array([0.5]), np.array([0.5]))
    assert flags[0]


def _follow(reference, velocity, q0, v0, steps, catch_up=5.0, integrator=None):
    integrator = integrator or _integrator(vmax=5.0, amax=10.0, lo=-10.0, hi=10.0)
    q, v = np.array([q0]), np.array([v0])
    out = []
    for k in range(steps):
        t = k * H
        wanted = tracking_velocity(q, v, reference(t), velocity(t), velocity(t + H), np.array([catch_up]), H)
        q, v, _ = integrator.step(q, v, wanted)
        out.append((q[0], v[0]))
    return np.array(out)


def test_a_feasible_reference_is_reproduced():
    out = _follow(lambda t: np.array([0.3 * t * t]), lambda t: np.array([0.6 * t]), 0.0, 0.0, 100)
    t = np.arange(1, 101) * H
    assert np.abs(out[:, 0] - 0.3 * t * t).max() < 1e-6
    assert np.abs(out[:, 1] - 0.6 * t).max() < 1e-6


@pytest.mark.parametrize(("error", "rate"), [(0.2, 0.0), (-0.05, 0.3), (0.001, 0.0), (0.3, -0.5)])
def test_a_tracking_error_closes_without_overshoot(error, rate):
    out = _follow(lambda t: np.zeros(1), lambda t: np.zeros(1), error, rate, 300)
    assert np.abs(out[-1]).max() < 1e-9
    braking = rate * rate / (2 * 5.0) if rate * error < 0 else 0.0  # unavoidable overshoot moving toward it
    assert (-np.sign(error) * out[:, 0]).max() <= max(braking, 0) + 1e-3 * abs(error)


def test_braking_velocity_reaches_exact_rest():
    v = np.array([1.0, -0.3, 0.0])
    for _ in range(30):
        v = braking_velocity(v, np.array([5.0, 5.0, 5.0]), H)
    assert np.array_equal(v, np.zeros(3))


def test_braking_tail_is_constant_deceleration_to_rest():
    q, v, decel = np.array([0.0, 1.0, 0.5]), np.array([1.0, -0.5, 0.0]), np.array([5.0, 2.0, 4.0])
    times, positions, velocities = braking_tail(q, v, decel)
    np.testing.assert_allclose(times, [0.2, 0.25])
    np.testing.assert_allclose(positions[-1], [0.1, 1.0 - 0.0625, 0.5])
    assert np.array_equal(velocities[-1], np.zeros(3))
    np.testing.assert_allclose(positions[0], [0.1, 1.0 - 0.5 * 0.2 + 0.5 * 2.0 * 0.04, 0.5])
    assert braking_tail(q, np.zeros(3), decel)[0].size == 0


def test_joint_limits_config():
    limits = from_mapping(JointLimits, {"max_velocity": [1.0, 2.0], "position_min": [-1, -2], "position_max": [1]})
    arrays = limits.resolve(2)
    np.testing.assert_array_equal(arrays.position_max, [1.0, 1.0])
    np.testing.assert_array_equal(arrays.max_velocity, [1.0, 2.0])
    with pytest.raises(ConfigError, match=r"limits\.position_min: expected 1 or 3 values"):
        limits.resolve(3)
    for bad, message in [
        ({"max_velocity": [0.0]}, "max_velocity: must be > 0"),
        ({"max_acceleration": []}, "max_acceleration: needs one value per joint"),
        ({"position_min": [1.0], "position_max": [0.5]}, "position_min: must be below position_max"),
        ({"position_max": [float("inf")]}, "position_max: must be finite"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_mapping(JointLimits, bad)
