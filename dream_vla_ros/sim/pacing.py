"""The pace of the simulated arm's physics steps: wall clock or simulated time, real-time factor, lag (no ROS).

Tick ``k`` of the loop has the time ``time_anchor + (k - k_anchor) * dt`` and is due on the wall clock at
``wall_anchor + (k - k_anchor) * dt / real_time_factor``; the anchors are reset by :meth:`Pacer.reanchor`.

- **Wall-clock time** (default): the time of a tick is the wall time of the physics state it describes, so
  a stamp is never ahead of the wall clock. If the loop falls more than ``max_lag`` behind its schedule
  (an overloaded machine) it skips the missed time and counts a lag event, like a controller missing
  updates.
- **Simulated time** (``use_sim_time``): the time starts at one step and advances by ``dt`` per tick;
  ``real_time_factor`` sets the pace (above 1 runs faster than the wall clock, only when asked). A lag
  event re-anchors the schedule without skipping simulated time.
- ``real_time_factor`` may change while the loop runs (any thread sets :attr:`Pacer.real_time_factor`): the
  new pace starts at the next tick. :attr:`Pacer.pace` is the factor in force.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Times and deadlines of fixed ``dt`` ticks (see the module docstring); ``clock`` is the wall clock (s)."""

    def __init__(self, dt: float, max_lag: float, real_time_factor: float = 1.0, use_sim_time: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        self.dt = dt
        self.max_lag = max_lag
        self.use_sim_time = use_sim_time
        self.real_time_factor = real_time_factor  # live: any thread may set it, read at every tick
        self.pace = real_time_factor  # the factor in force
        self.lag_events = 0
        self._clock = clock
        self._k = 0
        self._k_anchor = 0
        self._wall_anchor = clock()
        self._time_anchor = dt if use_sim_time else self._wall_anchor

    def now(self) -> float:
        """The time of the current tick (wall-clock or simulated seconds)."""
        return self._time_anchor + (self._k - self._k_anchor) * self.dt

    def reanchor(self) -> None:
        """Restart the schedule at the current tick, due now (after a long pause such as a scene build)."""
        wall = self._clock()
        self._time_anchor = self.now() if self.use_sim_time else wall
        self._wall_anchor = wall
        self._k_anchor = self._k

    def next(self) -> float:
        """Advance to the next tick; the seconds until it is due (0: due already, or skipped to after a lag)."""
        self._k += 1
        if self.real_time_factor != self.pace:  # changed live: the new pace starts here
            self.pace = self.real_time_factor
            self.reanchor()
        due = self._wall_anchor + (self._k - self._k_anchor) * self.dt / self.pace
        wait = due - self._clock()
        if wait > 0.0:
            return wait
        if -wait > self.max_lag:
            self.lag_events += 1
            self.reanchor()
        return 0.0

    def run(self, tick: Callable[[], None], stop: threading.Event) -> None:
        """Call ``tick`` once per tick, each when it is due, until ``stop`` is set."""
        while not stop.is_set():
            tick()
            wait = self.next()
            if wait > 0.0:
                stop.wait(wait)
