"""Executor windows through the JTC's semantics with transport delay: what the stamp policy does to the motion.

The chunk executor ticks on its own timer; each window reaches the controller after a random transport delay
and is taken at the controller's next update (a different clock phase). With ``stamp: zero`` the controller
starts every window at that update, so each replacement shifts the plan by the varying delay; with
``now_plus_lead`` (a shared clock and a lead above the delay) the commanded motion is the executor's plan.
"""

from __future__ import annotations

import numpy as np
import pytest

from dream_vla_ros.chunking import ActionChunk, ChunkExecutor, ExecutorConfig, JointLimits, WindowConfig
from dream_vla_ros.sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint

NAMES = ("shoulder", "elbow")
PERIOD = 0.0125
LIMITS = JointLimits(position_min=(-3.0,), position_max=(3.0,), max_velocity=(4.0,), max_acceleration=(40.0,))


def _commanded(window: WindowConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(controller times, commanded positions, the executor's plan at those times) over 1.5 s of a sine."""
    rng = np.random.default_rng(seed)
    executor = ChunkExecutor(ExecutorConfig(joint_names=NAMES, limits=LIMITS, control_period=PERIOD, window=window))
    executor.reset(0.0, [0.0, 0.0])
    dt = 0.025
    times = dt * np.arange(1, 101)
    motion = np.stack([0.4 * np.sin(2 * np.pi * times / 1.2), 0.2 * np.sin(2 * np.pi * times / 0.9)], axis=1)
    assert executor.add_chunk(ActionChunk(NAMES, 0.0, dt, motion), 0.0).accepted
    follower = TrajectoryFollower(NAMES, interpolate_from_desired_state=True)
    follower.hold(np.zeros(2))
    in_flight: list[tuple[float, object]] = []
    plan_t, plan_q = [0.0], [np.zeros(2)]
    out_t, out_q = [], []
    phase = 0.0047  # the controller's updates are not in step with the executor's timer
    for k in range(1, 160):
        now = k * PERIOD + rng.uniform(0.0, 0.002)  # timer jitter
        sent = executor.tick(now)
        plan_t.append(executor.state.time)
        plan_q.append(executor.state.positions.copy())
        in_flight.append((now + rng.uniform(0.0005, 0.004), sent))
        update = k * PERIOD + phase
        for _, w in [m for m in in_flight if m[0] <= update]:
            points = [TrajectoryPoint(float(t), p, v) for t, p, v in zip(w.time_from_start, w.positions, w.velocities,
                                                                          strict=True)]
            assert follower.receive(w.joint_names, w.stamp, points, update, np.zeros(2), np.zeros(2)) == ""
        in_flight = [m for m in in_flight if m[0] > update]
        out_t.append(update + PERIOD)
        out_q.append(follower.sample(update + PERIOD)[0])
    out_t_arr = np.array(out_t)
    plan_t_arr, plan_q_arr = np.array(plan_t), np.array(plan_q)
    plan_at = np.stack([np.interp(out_t_arr, plan_t_arr, plan_q_arr[:, j]) for j in range(2)], axis=1)
    keep = (out_t_arr > 0.3) & (out_t_arr < plan_t_arr[-1] - 0.05)
    return out_t_arr[keep], np.array(out_q)[keep], plan_at[keep]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lead_stamped_windows_follow_the_plan_and_zero_stamps_shift_it_by_the_delay(seed):
    _, zero_q, zero_plan = _commanded(WindowConfig(points=10, spacing_ticks=1, stamp="zero"), seed)
    _, lead_q, lead_plan = _commanded(WindowConfig(points=10, spacing_ticks=1, stamp="now_plus_lead", lead=0.02), seed)
    zero_error = np.max(np.abs(zero_q - zero_plan))
    lead_error = np.max(np.abs(lead_q - lead_plan))
    # the plan moves up to ~2 rad/s, so a shift of a few ms is several mrad; the lead removes it
    assert zero_error > 4e-3
    assert lead_error < 0.1 * zero_error
