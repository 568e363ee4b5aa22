"""Property tests: random chunk streams (delays, jitter, reordering, bad chunks, stops) never make the executor
emit motion that violates the limits, contains NaN, or jumps at a chunk boundary."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dream_vla_ros.chunking import (
    ActionChunk,
    ChunkExecutor,
    ExecutorConfig,
    JointLimits,
    MergeConfig,
    WindowConfig,
)

RULES = [
    MergeConfig(rule="replace"),
    MergeConfig(rule="crossfade", crossfade_shape="linear"),
    MergeConfig(rule="crossfade", crossfade_shape="cosine", crossfade_duration=0.1),
    MergeConfig(rule="ensemble", ensemble_favour="newest", ensemble_decay=0.5),
    MergeConfig(rule="ensemble", ensemble_favour="oldest", ensemble_decay=0.8),
]
KINDS = ["smooth"] * 6 + ["wild", "nan", "shape", "unknown", "permuted", "future"]
REL = 1e-9  # relative tolerance for floating-point rounding


@st.composite
def scenarios(draw):
    joints = draw(st.integers(1, 3))
    names = tuple(f"j{i}" for i in range(joints))
    half_range = draw(st.floats(0.3, 2.0))
    config = ExecutorConfig(
        joint_names=names,
        limits=JointLimits(
            position_min=(-half_range,),
            position_max=(half_range,),
            max_velocity=(draw(st.floats(0.3, 2.0)),),
            max_acceleration=(draw(st.floats(2.0, 30.0)),),
        ),
        control_period=draw(st.sampled_from([0.01, 0.02])),
        merge=draw(st.sampled_from(RULES)),
        window=draw(
            st.builds(
                WindowConfig,
                points=st.integers(1, 6),
                spacing_ticks=st.integers(1, 3),
                stamp=st.sampled_from(["zero", "now_plus_lead"]),
                lead=st.sampled_from([0.0, 0.015, 0.05]),
            )
        ),
        catch_up_fraction=draw(st.sampled_from([0.3, 0.5, 1.0])),
        brake_fraction=draw(st.sampled_from([0.5, 1.0])),
    )
    chunks = draw(
        st.lists(
            st.tuples(
                st.sampled_from(KINDS),
                st.floats(0.0, 0.5),  # delay from observation to arrival
                st.floats(0.01, 0.3),  # time to the next observation
                st.floats(0.02, 0.12),  # dt
                st.integers(1, 15),  # horizon
                st.integers(0, 2**31 - 1),  # seed of the values
            ),
            min_size=1,
            max_size=8,
        )
    )
    stop_at = draw(st.one_of(st.none(), st.floats(0.1, 2.0)))
    resume_after = draw(st.floats(0.05, 0.5))
    tick_jitter = draw(st.floats(0.0, 0.9))
    return config, chunks, stop_at, resume_after, tick_jitter, draw(st.integers(0, 2**31 - 1))


def _make_chunk(names, kind, t0, dt, horizon, seed, half_range):
    rng = np.random.default_rng(seed)
    joints = len(names)
    if kind == "wild":  # far outside the limits, jumping from point to point
        positions = rng.uniform(-3 * half_range, 3 * half_range, (horizon, joints))
    else:
        start = rng.uniform(-half_range, half_range, joints)
        steps = np.cumsum(rng.normal(0, 0.3 * dt, (horizon, joints)), axis=0)
        positions = start + steps
    velocities = None
    if kind == "nan":
        positions[rng.integers(horizon), rng.integers(joints)] = np.nan
    elif kind == "shape":
        positions = positions[:, :-1] if joints > 1 else positions[:, 0]
    elif kind == "unknown":
        names = (*names[:-1], "stranger")
    elif kind == "permuted":
        order = rng.permutation(joints)
        names = tuple(names[i] for i in order)
        positions = positions[:, order]
        velocities = rng.normal(0, 0.5, positions.shape)
    elif kind == "future":
        t0 += 1.0
    return ActionChunk(names, t0, dt, positions, velocities)


def _check_window(window, state, limits, config):
    q, v = window.positions, window.velocities
    assert np.isfinite(q).all() and np.isfinite(v).all() and np.isfinite(window.time_from_start).all()
    assert q.shape == v.shape == (len(window.time_from_start), len(config.joint_names))
    tfs = window.time_from_start
    assert tfs[0] > 0 and np.all(np.diff(tfs) > 0)
    assert np.array_equal(v[-1], np.zeros(len(config.joint_names)))
    lo, hi = limits.position_min, limits.position_max
    assert np.all(q >= lo - 1e-9) and np.all(q <= hi + 1e-9)
    assert np.all(np.abs(v) <= limits.max_velocity * (1 + REL))
    # from the commanded state now, through every point: accelerations within the limit
    times = np.concatenate([[state.time], window.start_time + tfs])
    velocities = np.vstack([state.velocities, v])
    positions = np.vstack([state.positions, q])
    dt = np.diff(times)[:, None]
    assert np.all(np.abs(np.diff(velocities, axis=0)) <= limits.max_acceleration * dt * (1 + 1e-6) + 1e-9)
    assert np.all(np.abs(np.diff(positions, axis=0)) <= limits.max_velocity * dt * (1 + 1e-6) + 1e-9)
    assert window.stamp == (window.start_time if config.window.stamp == "now_plus_lead" else 0.0)


def _events(config, chunks, stop_at, resume_after, half_range):
    """(arrival, kind, chunk) in arrival order, and the time by which the executor is surely at rest."""
    limits = config.limits.resolve(len(config.joint_names))
    events, t0, last_end = [], 0.0, 0.0
    for kind, delay, gap, dt, horizon, chunk_seed in chunks:
        chunk = _make_chunk(config.joint_names, kind, t0, dt, horizon, chunk_seed, half_range)
        events.append((t0 + delay, "chunk", chunk))
        last_end = max(last_end, t0 + delay + horizon * dt)
        t0 += gap
    if stop_at is not None:
        events += [(stop_at, "stop", None), (stop_at + resume_after, "resume", None)]
    events.sort(key=lambda e: e[0])  # arrival order: later observations may arrive first
    braking = float(np.max(limits.max_velocity / (config.brake_fraction * limits.max_acceleration)))
    return events, max(last_end, events[-1][0]) + braking + 0.2


def _deliver(executor, event) -> None:
    arrival, what, chunk = event
    if what == "chunk":
        result = executor.add_chunk(chunk, arrival)
        assert result.accepted == (result.reason == "accepted")
    elif what == "stop":
        executor.stop(arrival)
    else:
        executor.resume(arrival)


@settings(max_examples=40)
@given(scenarios())
def test_random_streams_never_violate_limits_or_jump(scenario):
    config, chunks, stop_at, resume_after, tick_jitter, seed = scenario
    rng = np.random.default_rng(seed)
    names, period = config.joint_names, config.control_period
    limits = config.limits.resolve(len(names))
    half_range = limits.position_max[0]
    executor = ChunkExecutor(config)
    executor.reset(0.0, rng.uniform(-half_range, half_range, len(names)))

    events, end = _events(config, chunks, stop_at, resume_after, half_range)

    states = [executor.state]
    index = 0
    for k in range(1, int(end / period) + 1):
        now = (k + tick_jitter) * period
        while index < len(events) and events[index][0] <= now:
            _deliver(executor, events[index])
            index += 1
        window = executor.tick(now)
        state = executor.state
        _check_window(window, state, limits, config)
        states.append(state)

    # the commanded motion: on the grid, one step per tick, continuous, within every limit
    times = np.array([s.time for s in states])
    q = np.array([s.positions for s in states])
    v = np.array([s.velocities for s in states])
    np.testing.assert_allclose(np.diff(times), period, rtol=1e-9, atol=1e-12)
    assert np.isfinite(q).all() and np.isfinite(v).all()
    assert np.all(np.abs(np.diff(v, axis=0)) <= limits.max_acceleration * period * (1 + REL) + 1e-12)
    np.testing.assert_allclose(np.diff(q, axis=0), period * (v[1:] + v[:-1]) / 2, rtol=0, atol=1e-9)
    assert np.all(np.abs(v) <= limits.max_velocity * (1 + REL))
    assert np.all(q >= limits.position_min - 1e-12) and np.all(q <= limits.position_max + 1e-12)
    # after the last chunk and any stop: at rest, holding
    assert executor.mode == "holding" and np.array_equal(v[-1], np.zeros(len(names)))
    stats = executor.stats
    assert stats.chunks_received == len(chunks)
    assert stats.chunks_accepted + sum(stats.rejected.values()) == len(chunks)


@settings(max_examples=30)
@given(scenarios(), st.integers(0, 2**31 - 1))
def test_windows_built_only_when_sent_equal_those_of_every_tick(scenario, mask_seed):
    """A node builds a window only on ticks that send one (advance() on the others): every window it builds,
    and the commanded state of every tick, is what an executor building a window every tick has."""
    config, chunks, stop_at, resume_after, tick_jitter, seed = scenario
    rng, mask = np.random.default_rng(seed), np.random.default_rng(mask_seed)
    names, period = config.joint_names, config.control_period
    half_range = config.limits.resolve(len(names)).position_max[0]
    start = rng.uniform(-half_range, half_range, len(names))
    eager, lazy = ChunkExecutor(config), ChunkExecutor(config)
    eager.reset(0.0, start)
    lazy.reset(0.0, start)
    events, end = _events(config, chunks, stop_at, resume_after, half_range)
    index = 0
    for k in range(1, int(end / period) + 1):
        now = (k + tick_jitter) * period
        while index < len(events) and events[index][0] <= now:
            _deliver(eager, events[index])
            _deliver(lazy, events[index])
            index += 1
        expected = eager.tick(now)
        lazy.advance(now)
        if mask.random() < 0.3:
            built = lazy.window(now)
            for field in ("positions", "velocities", "time_from_start"):
                np.testing.assert_array_equal(getattr(built, field), getattr(expected, field))
            assert (built.mode, built.stamp, built.planned_points) == (expected.mode, expected.stamp,
                                                                        expected.planned_points)
        assert lazy.mode == eager.mode
        np.testing.assert_array_equal(lazy.state.positions, eager.state.positions)
        np.testing.assert_array_equal(lazy.state.velocities, eager.state.velocities)
    assert lazy.stats.as_dict() == eager.stats.as_dict()
