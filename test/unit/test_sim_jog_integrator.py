"""The MoveIt Servo stand-in's integration (sim/jog_integrator.py): start from the measured state, integrate
fresh commands, halt once on stale ones, restart from the measured state."""

from __future__ import annotations

import numpy as np

from dream_vla_ros.sim.jog_integrator import JogIntegrator

MEASURED = (["a", "b"], np.array([1.0, 2.0]))


def test_integrates_fresh_commands_from_the_measured_state():
    jog = JogIntegrator(command_timeout=0.1)
    assert jog.update(10.0, None, MEASURED) is None
    assert jog.update(10.0, (9.99, {"a": 1.0}), None) is None  # nothing measured yet
    q, v = jog.update(10.0, (9.99, {"a": 1.0}), MEASURED)
    np.testing.assert_allclose(q, [1.0, 2.0])
    np.testing.assert_allclose(v, [1.0, 0.0])  # joints not in the command hold
    q, v = jog.update(10.05, (10.04, {"a": 1.0, "b": -2.0}), MEASURED)
    np.testing.assert_allclose(q, [1.05, 1.9])
    q, _ = jog.update(10.5, (10.45, {"a": 1.0}), MEASURED)  # a late tick: at most one timeout of motion
    np.testing.assert_allclose(q, [1.15, 1.9])
    assert jog.names == ["a", "b"]


def test_stale_commands_hold_once_then_nothing_and_the_next_start_is_measured_again():
    jog = JogIntegrator(command_timeout=0.1)
    jog.update(10.0, (10.0, {"a": 1.0}), MEASURED)
    jog.update(10.05, (10.0, {"a": 1.0}), MEASURED)
    q, v = jog.update(10.2, (10.0, {"a": 1.0}), MEASURED)
    np.testing.assert_allclose(q, [1.05, 2.0])
    np.testing.assert_allclose(v, [0.0, 0.0])
    assert not jog.running
    assert jog.update(10.3, (10.0, {"a": 1.0}), MEASURED) is None
    q, _ = jog.update(11.0, (11.0, {"b": 1.0}), (["a", "b"], np.array([3.0, 4.0])))
    np.testing.assert_allclose(q, [3.0, 4.0])
