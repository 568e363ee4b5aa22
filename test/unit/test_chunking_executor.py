"""ChunkExecutor behaviour: config, reset, windows, starvation, stop and resume, chunk requests, benchmark."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from dream_vla_ros.chunking import ActionChunk, ChunkExecutor, ExecutorConfig, JointLimits, WindowConfig
from dream_vla_ros.configuration import from_mapping, to_mapping
from dream_vla_ros.errors import ConfigError, InputError

NAMES = ("shoulder", "elbow")
LIMITS = JointLimits(position_min=(-2.0,), position_max=(2.0,), max_velocity=(1.0,), max_acceleration=(4.0,))
PERIOD = 0.01


def _executor(**overrides) -> ChunkExecutor:
    config = ExecutorConfig(joint_names=NAMES, limits=LIMITS, control_period=PERIOD, **overrides)
    executor = ChunkExecutor(config)
    executor.reset(0.0, [0.0, 0.0])
    return executor


def _ramp(t0: float, velocity=(0.5, -0.25), horizon: int = 20, dt: float = 0.05, start=(0.0, 0.0)) -> ActionChunk:
    """Constant-velocity motion from ``start`` at the observation time ``t0``."""
    times = dt * np.arange(1, horizon + 1)[:, None]
    return ActionChunk(NAMES, t0, dt, np.asarray(start) + times * np.asarray(velocity))


def _run(executor: ChunkExecutor, start: float, stop: float):
    """Tick every period in [start, stop); the commanded states after each tick."""
    states = []
    for k in range(round(start / PERIOD), round(stop / PERIOD)):
        executor.tick(k * PERIOD)
        states.append(executor.state)
    return states


def test_config_loads_from_a_yaml_mapping_and_round_trips():
    mapping = {
        "joint_names": ["shoulder", "elbow"],
        "limits": {"max_velocity": [1.0, 2.0], "max_acceleration": [4.0]},
        "merge": {"rule": "ensemble", "ensemble_decay": 0.8},
        "window": {"points": 5, "stamp": "now_plus_lead", "lead": 0.02},
        "control_period": 0.02,
    }
    config = from_mapping(ExecutorConfig, mapping)
    assert config.limits.max_velocity == (1.0, 2.0) and config.merge.rule == "ensemble"
    assert config.window.lead == 0.02
    assert from_mapping(ExecutorConfig, to_mapping(config)) == config


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({}, "joint_names: at least one joint is required"),
        ({"joint_names": ["a", "a"]}, "joint_names: names repeat"),
        ({"joint_names": ["a"], "limits": {"max_velocity": [1.0, 2.0]}}, "limits.max_velocity: expected 1 or 1"),
        ({"joint_names": ["a"], "control_period": 0.0}, "control_period: must be in (0, 1]"),
        ({"joint_names": ["a"], "merge": {"rule": "average"}}, "merge.rule: must be one of"),
        ({"joint_names": ["a"], "merge": {"ensemble_decay": 0.0}}, "merge.ensemble_decay: must be in (0, 1]"),
        ({"joint_names": ["a"], "window": {"points": 0}}, "window.points: must be in [1, 1000]"),
        ({"joint_names": ["a"], "brake_fraction": 1.5}, "brake_fraction: must be in (0, 1]"),
        ({"joint_names": ["a"], "latency_quantile": 2.0}, "latency_quantile: must be in [0, 1]"),
    ],
)
def test_bad_config_names_the_key(mapping, message):
    with pytest.raises(ConfigError) as info:
        from_mapping(ExecutorConfig, mapping)
    assert message in str(info.value)


def test_reset_checks_the_measured_state_and_maps_names():
    executor = ChunkExecutor(ExecutorConfig(joint_names=NAMES, limits=LIMITS))
    assert executor.mode == "idle" and executor.state is None and not executor.wants_chunk(0.0)
    executor.reset(1.0, [0.3, 0.1, -0.2], joint_names=["elbow", "gripper", "shoulder"])
    np.testing.assert_array_equal(executor.state.positions, [-0.2, 0.3])
    assert executor.mode == "holding"
    with pytest.raises(InputError, match="outside their position limits"):
        executor.reset(1.0, [0.0, 2.5])
    with pytest.raises(InputError, match="NaN"):
        executor.reset(1.0, [0.0, np.nan])
    with pytest.raises(InputError, match="expected 2 positions"):
        executor.reset(1.0, [0.0])
    with pytest.raises(InputError, match="lacks joints"):
        executor.reset(1.0, [0.0, 0.0], joint_names=["elbow", "wrist"])


def test_holding_window_is_at_rest_where_reset_put_it():
    executor = ChunkExecutor(ExecutorConfig(joint_names=NAMES, limits=LIMITS))
    executor.reset(5.0, [0.5, -0.5])
    window = executor.tick(5.003)
    assert window.mode == "holding" and window.stamp == 0.0 and window.start_time == 5.003
    np.testing.assert_array_equal(window.positions, np.tile([0.5, -0.5], (20, 1)))
    np.testing.assert_array_equal(window.velocities, 0.0)
    np.testing.assert_allclose(window.time_from_start, 0.01 * np.arange(1, 21) - 0.003)
    assert window.joint_names == NAMES and window.planned_points == 20


def test_windows_continue_each_other_and_end_at_rest():
    executor = _executor(window=WindowConfig(points=10, spacing_ticks=2))
    executor.add_chunk(_ramp(0.0), 0.02)
    windows = []
    for k in range(3, 40):
        window = executor.tick(k * PERIOD + 0.004)
        assert np.all(np.diff(window.time_from_start) > 0) and window.time_from_start[0] > 0
        assert np.array_equal(window.velocities[-1], np.zeros(2))
        assert window.planned_points < len(window.time_from_start)  # moving: a braking tail follows the plan
        windows.append(window)
    # no chunk in between: the same plan, point for point
    for earlier, later in zip(windows[:-2], windows[2:], strict=True):
        n = later.planned_points - 1
        np.testing.assert_allclose(
            later.start_time + later.time_from_start[:n], earlier.start_time + earlier.time_from_start[1 : n + 1]
        )
        np.testing.assert_array_equal(later.positions[:n], earlier.positions[1 : n + 1])
        np.testing.assert_array_equal(later.velocities[:n], earlier.velocities[1 : n + 1])


def test_now_plus_lead_stamps_the_window_ahead():
    executor = _executor(window=WindowConfig(points=4, spacing_ticks=1, stamp="now_plus_lead", lead=0.035))
    window = executor.tick(1.0)
    assert window.stamp == pytest.approx(1.035) and window.start_time == window.stamp
    np.testing.assert_allclose(window.time_from_start, [0.005, 0.015, 0.025, 0.035])


def test_follows_a_chunk_and_requests_the_next_one_in_time():
    executor = _executor(low_water_margin=0.1, initial_latency=0.2)
    assert executor.wants_chunk(0.0)
    result = executor.add_chunk(_ramp(0.0, horizon=30), 0.1)  # 0.05 .. 1.5 s
    assert result.accepted and result.delay == pytest.approx(0.1) and result.dropped_points == 2
    assert executor.latency_estimate == pytest.approx(0.1)
    assert executor.mode == "running"
    assert not executor.wants_chunk(1.2)
    assert executor.wants_chunk(1.3)  # 0.2 s left <= 0.1 s delay + 0.1 s margin
    states = _run(executor, 0.1, 1.3)
    assert executor.mode == "running"
    # the catch-up from rest is over (at most half the acceleration limit): the ramp is followed exactly
    np.testing.assert_allclose(states[-1].positions, [0.5 * 1.29, -0.25 * 1.29], atol=1e-9)
    np.testing.assert_allclose(states[-1].velocities, [0.5, -0.25], atol=1e-9)
    accelerations = np.diff([s.velocities for s in states], axis=0) / PERIOD
    assert np.abs(accelerations).max() <= 0.5 * 4.0 + 1e-9


def test_starvation_comes_to_rest_within_the_deceleration_distance():
    executor = _executor(brake_fraction=0.5)
    executor.add_chunk(_ramp(0.0, velocity=(0.8, -0.4), horizon=30), 0.0)  # ends at 1.5 s
    states = _run(executor, 0.0, 1.51)
    q, v = states[-1].positions, states[-1].velocities  # 1.5 s: the last point of the chunk
    np.testing.assert_allclose(v, [0.8, -0.4], atol=1e-9)
    modes = []
    for k in range(151, 220):
        executor.tick(k * PERIOD)
        modes.append(executor.mode)
    rest = executor.state
    assert modes[0] == "starved" and modes[-1] == "holding"
    assert executor.stats.starvation_events == 1
    np.testing.assert_array_equal(rest.velocities, 0.0)
    decel = 0.5 * 4.0
    distance = np.abs(rest.positions - q)
    assert np.all(distance <= v * v / (2 * decel) + 1e-9)
    assert np.all(distance >= v * v / (2 * decel) - 0.01)  # it does not stop short either
    assert executor.wants_chunk(2.2)
    assert executor.add_chunk(_ramp(2.1, start=rest.positions, velocity=(0.1, 0.1)), 2.12).accepted
    assert executor.mode == "running"


def test_stop_holds_and_resume_needs_a_fresh_chunk():
    executor = _executor()
    executor.add_chunk(_ramp(0.0, velocity=(0.8, -0.8)), 0.0)
    _run(executor, 0.0, 0.4)
    executor.stop(0.405)
    moving = executor.state  # 0.40 s: the stop starts from here
    assert moving.time == pytest.approx(0.4) and np.all(np.abs(moving.velocities) > 0.5)
    assert executor.mode == "stopping" and executor.stopped and not executor.wants_chunk(0.405)
    states = _run(executor, 0.41, 1.0)
    velocities = np.array([moving.velocities] + [s.velocities for s in states])
    assert np.abs(np.diff(velocities, axis=0)).max() <= 4.0 * PERIOD + 1e-12
    assert executor.mode == "holding"
    held = executor.state.positions
    assert np.all(np.abs(held - moving.positions) <= 0.8**2 / (2 * 4.0) + 1e-9)
    assert executor.add_chunk(_ramp(0.95, start=held), 1.0).reason == "stopped"
    window = executor.tick(1.0)
    np.testing.assert_array_equal(window.positions, np.tile(held, (20, 1)))
    executor.resume(1.05)
    assert executor.wants_chunk(1.05) and executor.mode == "holding"
    assert executor.add_chunk(_ramp(1.0, start=held), 1.1).reason == "predates_resume"
    _run(executor, 1.1, 1.2)
    np.testing.assert_array_equal(executor.state.positions, held)  # still holding without a fresh chunk
    assert executor.add_chunk(_ramp(1.15, start=held), 1.2).accepted
    assert executor.mode == "running"
    _run(executor, 1.2, 1.5)
    assert np.all(executor.state.velocities != 0)


def test_targets_outside_the_position_limits_are_clipped_and_never_reached_beyond():
    executor = _executor()
    positions = np.stack([np.linspace(0.5, 3.0, 20), np.zeros(20)], axis=1)
    executor.add_chunk(ActionChunk(NAMES, 0.0, 0.2, positions), 0.0)
    assert executor.stats.limit_clamps["target_position"] == 1
    states = _run(executor, 0.0, 5.0)
    top = max(s.positions[0] for s in states)
    assert top <= 2.0 and top == pytest.approx(2.0, abs=1e-6)


def test_bench_executor_reports_every_rule():
    from dream_vla_ros.benchmarks import executor as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    result = bench.run(parser.parse_args(["--seconds", "3", "--joints", "3"]))
    assert set(result["rules"]) == set(bench.RULES)
    for metrics in [result["naive"], *result["rules"].values()]:
        assert {
            "tracking_error",
            "max_boundary_velocity_jump",
            "limit_violations",
            "starvation_events",
            "tick_us",
        } <= set(metrics)
    assert result["best_rule"] in result["rules"]
    assert result["limit_violations"] == 0
    assert result["boundary_jump_ratio"] <= 0.1
    assert "best rule" in bench.summary(result)
