"""The streaming window: the short trajectory sent to a ros2_control JointTrajectoryController every tick.

Each tick the executor sends the next ``points`` samples of its planned motion, ``spacing_ticks`` control
periods apart, as positions **and velocities** (a JTC interpolates positions-only points linearly, with a
velocity step at every point; with velocities it uses cubic splines, which reproduce the executor's
constant-acceleration steps exactly at a spacing of one period). After them comes a **braking tail**: each
joint decelerates at its acceleration limit to rest (one point per joint's stop time, exact as cubic
segments), so every window ends at zero velocity and inside the position limits. Hence:

- a controller that stops receiving windows (node stalled, link lost) finishes the planned motion and comes
  to rest within the limits, instead of holding a last point reached at speed;
- the window is valid under every distro's ``allow_nonzero_velocity_at_trajectory_end`` (Jazzy+ default
  ``false`` rejects a moving end; Humble default ``true``).

Every window continues the one sent before: its points come from the same plan, which only changes when a
chunk arrives, and then from the commanded state at that moment with bounded acceleration. A JTC in Humble,
Jazzy and Kilted **hard-replaces** the running trajectory on each message and splines from its start state to
the first point, so the start state decides whether the replacement is seamless:

- Jazzy+: ``interpolate_from_desired_state: true``; Humble: ``open_loop_control: true`` (which also bypasses
  the PID). The spline then starts from the last commanded state, i.e. the executor's own plan: no jump.
  Recommended.
- Otherwise the spline starts from the measured state; that works while tracking is good, but needs a
  velocity state interface (missing state velocities are zero-filled, so every message would restart from
  rest; ros2_controllers #1800/#1455).
- Rolling's ``allow_trajectory_replacement`` splices old and new trajectories; the windows work with it as
  well since they agree on the overlap. Leave ``positions_upsampling`` off (the windows carry velocities).
- ``cmd_timeout``: not needed (the window ends at rest by itself); if set, above the window's duration.
- ``allow_partial_joints_goal``: ``true`` only if the controller has joints the executor does not drive.
- Send on ``/<controller>/joint_trajectory`` with a RELIABLE publisher (the JTC subscribes reliably).

Stamp policy (``header.stamp``): ``zero`` (default): the controller starts the window at the first update
that samples it, so ``time_from_start`` counts from (about) now; nothing depends on the clocks of the two
processes agreeing. ``now_plus_lead``: ``stamp = now + lead`` on the executor's clock and ``time_from_start``
counts from it; use it when the controller shares the clock and a known transport delay should not shift
the motion (as MoveIt Servo's ``now + max_expected_latency``). A stamp in the past makes the controller jump
into the middle of the window; never stamp the observation time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from dream_vla_ros.configuration import require

STOP_TIME_RESOLUTION = 1e-6  # seconds; joints stopping closer together than this share a tail point


@dataclass(frozen=True)
class WindowConfig:
    """Shape and stamping of the trajectory sent to the controller each tick.

    points: planned samples per window, before the braking tail.
    spacing_ticks: control periods between samples.
    stamp: header.stamp policy, "zero" (start on receipt) or "now_plus_lead".
    lead: seconds ahead of now for the now_plus_lead stamp.

    Defaults: 20 samples one period apart, 0.2 s of plan at 100 Hz: every segment the controller splines is
    exactly one of the executor's constant-acceleration steps (a wider spacing makes the controller's cubic
    only approximate the two or more steps it spans), and 0.2 s rides out a few stalled ticks while the
    message stays small (20 points).
    """

    points: int = 20
    spacing_ticks: int = 1
    stamp: Literal["zero", "now_plus_lead"] = "zero"
    lead: float = 0.0  # seconds; only with stamp now_plus_lead

    def __post_init__(self) -> None:
        require(1 <= self.points <= 1000, "points", f"must be in [1, 1000], got {self.points}")
        require(1 <= self.spacing_ticks <= 1000, "spacing_ticks", f"must be in [1, 1000], got {self.spacing_ticks}")
        require(0 <= self.lead <= 10, "lead", f"must be in [0, 10] s, got {self.lead}")


@dataclass(frozen=True, eq=False)
class Window:
    """One trajectory message's worth of points, in ``joint_names`` order.

    positions, velocities: [N, J]. time_from_start: [N] seconds, > 0 and strictly increasing, counted from
    ``start_time``. stamp: what ``header.stamp`` carries (0.0 = the zero stamp). start_time: the caller's
    clock time ``time_from_start`` counts from (``now``, or ``now + lead``). planned_points: the first
    ``planned_points`` rows follow the plan; the rest is the braking tail (the last row is at rest).
    mode: the executor's mode when the window was made.
    """

    joint_names: tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray
    time_from_start: np.ndarray
    stamp: float
    start_time: float
    planned_points: int
    mode: str


def braking_tail(q: np.ndarray, v: np.ndarray, deceleration: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (time offsets [K], positions [K, J], velocities [K, J]) of a stop at ``deceleration``.

    Each joint decelerates at its own rate until it rests; there is one point per distinct stop time, so
    every segment is a constant deceleration (or rest) per joint. Empty when every joint stops within
    ``STOP_TIME_RESOLUTION`` (at rest, up to rounding).
    """
    stop = np.abs(v) / deceleration
    knots = np.sort(stop)
    knots = knots[knots > STOP_TIME_RESOLUTION]
    if knots.size == 0:
        return np.empty(0), np.empty((0, q.size)), np.empty((0, q.size))
    if knots.size > 1:
        keep = np.ones(knots.size, dtype=bool)
        keep[:-1] = knots[1:] - knots[:-1] > STOP_TIME_RESOLUTION  # of a close pair, the later stop stays
        knots = knots[keep]
    tau = np.minimum(knots[:, None], stop[None, :])
    braking = np.sign(v) * deceleration
    positions = q + v * tau - 0.5 * braking * tau * tau
    velocities = v - braking * tau
    velocities[-1] = 0.0
    return knots, positions, velocities
