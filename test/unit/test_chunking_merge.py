"""Merge rules on hand-made chunks, joint-order remapping, rejection reasons, and the timeline's spline."""

from __future__ import annotations

import numpy as np
import pytest

from dream_vla_ros.chunking import ActionChunk, ChunkExecutor, ExecutorConfig, JointLimits, MergeConfig
from dream_vla_ros.chunking.timeline import Timeline

NAMES = ("a", "b")
LOOSE = JointLimits(position_min=(-10.0,), position_max=(10.0,), max_velocity=(100.0,), max_acceleration=(1e4,))


def _executor(**merge) -> ChunkExecutor:
    executor = ChunkExecutor(ExecutorConfig(joint_names=NAMES, limits=LOOSE, merge=MergeConfig(**merge)))
    executor.reset(0.0, [0.0, 0.0])
    return executor


def _constant(t0: float, value: float, horizon: int = 10, dt: float = 0.1) -> ActionChunk:
    return ActionChunk(NAMES, t0, dt, np.full((horizon, 2), value))


def _after_two(**merge) -> tuple[ChunkExecutor, np.ndarray]:
    """Chunk of zeros for 0.1..1.0 s, then a chunk of ones for 0.3..1.2 s arriving at 0.25 s."""
    executor = _executor(**merge)
    assert executor.add_chunk(_constant(0.0, 0.0), 0.0).accepted
    result = executor.add_chunk(_constant(0.2, 1.0), 0.25)
    assert result.accepted and result.dropped_points == 0 and result.overlap_points == 8
    timeline = executor.timeline
    np.testing.assert_allclose(timeline.times, np.arange(2, 13) / 10)  # 0.2 (queued, before 0.3) .. 1.2
    return executor, timeline.positions[:, 0]


def test_replace_takes_the_new_chunk_from_its_first_kept_point():
    _, values = _after_two(rule="replace")
    np.testing.assert_allclose(values, [0.0] + [1.0] * 10)


def test_linear_crossfade_over_the_whole_overlap():
    executor, values = _after_two(rule="crossfade", crossfade_shape="linear", crossfade_duration=0.0)
    alpha = np.clip((np.arange(3, 13) / 10 - 0.3) / 0.7, 0, 1)
    np.testing.assert_allclose(values, [0.0, *alpha], atol=1e-12)
    rates = executor.timeline.velocities[:, 0]
    np.testing.assert_allclose(rates[1], 0.5 / 0.7)  # half-way between the old (0) and the blend's rate
    np.testing.assert_allclose(rates[2:8], 1 / 0.7)
    np.testing.assert_allclose(rates[9:], 0.0, atol=1e-12)
    assert executor.stats.blends == 1 and executor.stats.blended_points == 8


def test_cosine_crossfade_of_a_given_duration():
    _, values = _after_two(rule="crossfade", crossfade_shape="cosine", crossfade_duration=0.35)
    s = np.clip((np.arange(3, 13) / 10 - 0.3) / 0.35, 0, 1)
    np.testing.assert_allclose(values, [0.0, *(0.5 - 0.5 * np.cos(np.pi * s))], atol=1e-12)
    assert values[5] == 1.0  # 0.7 s: done after 0.35 s


def test_ensemble_newest_favoured():
    executor, values = _after_two(rule="ensemble", ensemble_favour="newest", ensemble_decay=0.5)
    np.testing.assert_allclose(values, [0.0] + [2 / 3] * 8 + [1.0] * 2)
    executor.add_chunk(_constant(0.4, 2.0), 0.45)  # points 0.5 .. 1.4
    values = executor.timeline.positions[:, 0]
    np.testing.assert_allclose(executor.timeline.times[-10:], np.arange(5, 15) / 10)
    # 0.5..1.0: weights (1 * 0.5 + 1) * 0.5 = 0.75 against 1; 1.1..1.2: 0.5 against 1; then the new chunk alone
    np.testing.assert_allclose(values[-10:], [10 / 7] * 6 + [5 / 3] * 2 + [2.0] * 2)


def test_ensemble_oldest_favoured():
    executor, values = _after_two(rule="ensemble", ensemble_favour="oldest", ensemble_decay=0.5)
    np.testing.assert_allclose(values, [0.0] + [1 / 3] * 8 + [1.0] * 2)
    executor.add_chunk(_constant(0.4, 2.0), 0.45)
    # 0.5..1.0: third prediction weighs 0.25 against 1.5; 1.1..1.2: second prediction weighs 0.5 against 1
    np.testing.assert_allclose(executor.timeline.positions[-10:, 0], [4 / 7] * 6 + [4 / 3] * 2 + [2.0] * 2)


def test_points_in_the_past_are_dropped_and_the_delay_measured():
    executor = _executor(rule="replace")
    result = executor.add_chunk(ActionChunk(NAMES, 0.0, 0.05, np.zeros((10, 2))), 0.12)
    assert result.accepted and result.dropped_points == 2
    assert result.delay == pytest.approx(0.12)
    np.testing.assert_allclose(executor.timeline.times, 0.05 * np.arange(3, 11))
    assert executor.stats.dropped_points == 2


def test_joint_order_is_mapped_by_name():
    positions = np.stack([np.linspace(0.1, 1.0, 10), np.linspace(-0.1, -1.0, 10)], axis=1)
    velocities = np.stack([np.full(10, 1.0), np.full(10, -1.0)], axis=1)
    canonical, swapped = _executor(rule="replace"), _executor(rule="replace")
    canonical.add_chunk(ActionChunk(NAMES, 0.0, 0.1, positions, velocities), 0.0)
    swapped.add_chunk(ActionChunk(("b", "a"), 0.0, 0.1, positions[:, ::-1], velocities[:, ::-1]), 0.0)
    np.testing.assert_array_equal(canonical.timeline.positions, swapped.timeline.positions)
    np.testing.assert_array_equal(canonical.timeline.velocities, swapped.timeline.velocities)
    np.testing.assert_array_equal(canonical.tick(0.05).positions, swapped.tick(0.05).positions)


def _reject_cases():
    good = np.zeros((5, 2))
    return [
        ("bad_shape", ActionChunk(NAMES, 0.5, 0.1, np.zeros((5, 3))), None),
        ("bad_shape", ActionChunk(NAMES, 0.5, 0.1, np.zeros(5)), None),
        ("bad_shape", ActionChunk(NAMES, 0.5, 0.1, np.zeros((0, 2))), None),
        ("bad_shape", ActionChunk(NAMES, 0.5, 0.1, [[0.0, 1.0], [0.0]]), None),
        ("bad_shape", ActionChunk(NAMES, 0.5, 0.1, good, np.zeros((4, 2))), None),
        ("not_finite", ActionChunk(NAMES, 0.5, 0.1, np.where(np.eye(5, 2) > 0, np.nan, 0.0)), None),
        ("not_finite", ActionChunk(NAMES, 0.5, 0.1, good, np.full((5, 2), np.inf)), None),
        ("bad_dt", ActionChunk(NAMES, 0.5, 0.0, good), None),
        ("bad_dt", ActionChunk(NAMES, 0.5, float("nan"), good), None),
        ("bad_stamp", ActionChunk(NAMES, float("nan"), 0.1, good), None),
        ("unknown_joints", ActionChunk(("a", "b", "c"), 0.5, 0.1, np.zeros((5, 3))), None),
        ("missing_joints", ActionChunk(("a",), 0.5, 0.1, np.zeros((5, 1))), None),
        ("duplicate_joints", ActionChunk(("a", "a"), 0.5, 0.1, good), None),
        ("from_future", ActionChunk(NAMES, 2.0, 0.1, good), None),
        ("predates_reset", ActionChunk(NAMES, -0.1, 0.1, good), None),
        ("out_of_order", ActionChunk(NAMES, 0.4, 0.1, good), "queued"),
        ("out_of_order", ActionChunk(NAMES, 0.45, 0.1, good), "queued"),
        ("stale", ActionChunk(NAMES, 0.1, 0.1, good), None),
        ("stopped", ActionChunk(NAMES, 0.5, 0.1, good), "stop"),
        ("predates_resume", ActionChunk(NAMES, 0.5, 0.1, good), "resume"),
    ]


@pytest.mark.parametrize(("reason", "chunk", "before"), _reject_cases())
def test_bad_chunks_are_rejected_whole_with_a_counted_reason(reason, chunk, before):
    executor = _executor()
    if before == "queued":
        assert executor.add_chunk(_constant(0.45, 0.0), 0.5).accepted
    elif before in ("stop", "resume"):
        executor.stop(0.55)
        if before == "resume":
            executor.resume(0.56)
    times = executor.timeline.times.copy()
    result = executor.add_chunk(chunk, 0.6)
    assert not result.accepted
    assert result.reason == reason
    assert result.detail
    assert executor.stats.rejected == {reason: 1}
    np.testing.assert_array_equal(executor.timeline.times, times)


def test_a_chunk_before_reset_is_rejected():
    executor = ChunkExecutor(ExecutorConfig(joint_names=NAMES))
    assert executor.add_chunk(_constant(0.0, 0.0), 0.1).reason == "not_initialised"
    assert executor.tick(0.1) is None


def test_timeline_spline_reproduces_a_cubic():
    timeline = Timeline(1)
    times = np.array([0.3, 0.5, 0.8])
    timeline.merge(times, times[:, None] ** 3, 3 * times[:, None] ** 2, MergeConfig(), current_time=0.0)
    for t in np.linspace(0.3, 0.8, 11):
        position, velocity = timeline.sample(float(t))
        assert position[0] == pytest.approx(t**3, abs=1e-12)
        assert velocity[0] == pytest.approx(3 * t**2, abs=1e-12)
    position, velocity = timeline.sample(0.1)  # before the first point: its motion continued backwards
    assert position[0] == pytest.approx(0.027 - 0.2 * 0.27) and velocity[0] == pytest.approx(0.27)
    assert timeline.covers(0.0) and timeline.covers(0.8) and not timeline.covers(0.81)
