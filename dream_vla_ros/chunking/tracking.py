"""The velocity the commanded state wants next: follow the reference, or brake to rest.

The executor's commanded state is a double integrator stepped once per control period (see
:mod:`dream_vla_ros.chunking.limits`). While a reference exists it follows it with feedforward (the
reference's own velocity change) plus a correction of the tracking error:

- close to the reference, a two-step deadbeat law (error and error rate both zero after two periods, exact
  for constant-acceleration steps);
- farther away, a discrete time-optimal approach: the next relative velocity lies on the braking parabola
  ``|e| = ev**2 / (2 * catch_up)``, so the error closes as fast as the catch-up acceleration allows and without
  overshoot.

On a reference that respects the limits the correction is zero and the output reproduces it; after a jump in
the reference (a ``replace`` merge, a chunk that disagrees with the last one) the output converges in the
near-minimal time the catch-up acceleration allows, never faster than the limits.
"""

from __future__ import annotations

import numpy as np


def tracking_velocity(
    q: np.ndarray,
    v: np.ndarray,
    ref_q: np.ndarray,
    ref_v: np.ndarray,
    ref_v_next: np.ndarray,
    catch_up: np.ndarray,
    h: float,
) -> np.ndarray:
    """Next velocity that follows the reference (``ref_q``, ``ref_v`` now; ``ref_v_next`` one period later).

    ``catch_up`` [J] is the acceleration spent on closing the tracking error, on top of the feedforward.
    """
    e = q - ref_q
    ev = v - ref_v
    deadbeat = -(e / (h * h) + 1.5 * ev / h)
    deadbeat_second = e / (h * h) + 0.5 * ev / h  # the deadbeat law's command one period later
    use_deadbeat = (np.abs(deadbeat) <= catch_up) & (np.abs(deadbeat_second) <= catch_up)
    if use_deadbeat.all():
        return ref_v_next + ev + deadbeat * h
    c = e + 0.5 * h * ev  # the error after the next step if the relative velocity stayed
    speed = 0.5 * (-catch_up * h + np.sqrt(catch_up * catch_up * h * h + 8.0 * catch_up * np.abs(c)))
    on_parabola = np.clip((-np.sign(c) * speed - ev) / h, -catch_up, catch_up)
    return ref_v_next + ev + np.where(use_deadbeat, deadbeat, on_parabola) * h


def braking_velocity(v: np.ndarray, deceleration: np.ndarray, h: float) -> np.ndarray:
    """Next velocity when braking to rest at ``deceleration`` [J]; exactly zero on the last step."""
    dv = deceleration * h
    return v - np.clip(v, -dv, dv)
