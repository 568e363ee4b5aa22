"""Velocity commands for a velocity-integrating controller (MoveIt Servo's joint jog), from the executor's plan.

A window is a position trajectory; Servo takes one velocity per joint per message and integrates it at its own
rate. The command for the next control period is

    v = (q_next - q_now) / (t_next - t_now)  +  gain * (q_plan(t_measured) - q_measured)

- the first term is the plan's mean velocity from the commanded state to the next window point (a mean of
  velocities inside the limits is inside the limits);
- the second term pulls the arm back onto the plan when the integrator drifts (other rate, dropped or repeated
  messages, Servo slowing down near a collision or singularity); the plan is evaluated at the stamp of the
  measurement, so transport delay does not bias it;
- the result is clipped to the velocity limit, and its change from the previous command to the acceleration
  limit times the period, so the commands never ask for more than the limits allow.
"""

from __future__ import annotations

import numpy as np


def jog_velocities(
    q_now: np.ndarray,
    v_now: np.ndarray,
    t_now: float,
    q_next: np.ndarray,
    t_next: float,
    max_velocity: np.ndarray,
    max_acceleration: np.ndarray,
    period: float,
    *,
    measured: np.ndarray | None = None,
    measured_time: float | None = None,
    gain: float = 0.0,
    previous: np.ndarray | None = None,
) -> np.ndarray:
    """The velocity command [J] for the period after ``t_now`` (see the module docstring).

    q_now, v_now: commanded state at ``t_now``; q_next: the plan at ``t_next`` (> t_now). measured and
    measured_time: the latest joint state and its stamp (None: feed-forward only). previous: the last command
    sent (None: no acceleration bound against it, e.g. the first command after activation, which then starts
    from the commanded velocity ``v_now``).
    """
    span = float(t_next) - float(t_now)
    if not span > 0.0:
        raise ValueError(f"jog_velocities: t_next ({t_next}) must be after t_now ({t_now})")
    q_now = np.asarray(q_now, dtype=float)
    velocity = (np.asarray(q_next, dtype=float) - q_now) / span
    if measured is not None and gain > 0.0:
        at = float(t_now if measured_time is None else measured_time)
        planned = q_now + np.asarray(v_now, dtype=float) * (at - float(t_now))
        velocity = velocity + gain * (planned - np.asarray(measured, dtype=float))
    vmax = np.asarray(max_velocity, dtype=float)
    velocity = np.clip(velocity, -vmax, vmax)
    reference = np.asarray(v_now if previous is None else previous, dtype=float)
    step = np.asarray(max_acceleration, dtype=float) * period
    return np.clip(velocity, reference - step, reference + step)
