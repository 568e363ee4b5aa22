"""The simulated arm's episodes: the reset sequence, success and truncation, the episode events (no ROS).

Reset sequence: the arm goes offline for ``reset_pause`` s (no joint states, no images, trajectories
ignored), the scene is reset, then the arm runs holding still for ``reset_pause`` s with the controller still
ignoring trajectories, then the controller becomes active holding the reset pose. A client that holds a
commanded state (the chunk executor) sees the joint states go stale, holds, and restarts from the new
measured state before the controller listens again, as after a real controller switch.

Events (one dict each, published as JSON by the node):

- ``{"event": "reset", "episode", "task", "seed", "instruction", "phrasing_split", "phrasing_index", "stamp",
  "max_steps"}`` when the controller becomes active;
- ``{"event": "success", "episode", "task", "seed", "steps", "stamp", "lag_events", "real_time_factor",
  "goal_distance", "closest_goal_distance"}`` at the first step the task is solved (Meta-World's success,
  latched for the episode), and the same with ``"event": "truncated"`` when ``max_steps`` steps passed
  without success (``max_steps`` 0: never). ``steps`` count physics steps since the controller became active,
  ``lag_events`` the times the simulation fell behind the wall clock during the episode, ``goal_distance`` /
  ``closest_goal_distance`` the task's distance to its goal at the end / at its closest (m). After either
  event the episode reports nothing more.

:class:`ResetRequests` hands the episode to start from a service thread to the simulation thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dream_vla_ros.protocol import EVENT_RESET as RESET
from dream_vla_ros.protocol import EVENT_SUCCESS as SUCCESS
from dream_vla_ros.protocol import EVENT_TRUNCATED as TRUNCATED

OFFLINE, SETTLING, ACTIVE = "offline", "settling", "active"


@dataclass
class Episode:
    """One episode: what it runs, and its progress since the controller became active."""

    number: int
    task: str
    seed: int
    instruction: str
    phrasing_split: str
    phrasing_index: int
    steps: int = 0
    finished: bool = False  # its success or truncated event is out
    closest: float = math.inf  # the smallest goal distance so far (m)
    lag_events_at_start: int = 0


class EpisodeCycle:
    """The phase of the reset sequence and the running episode (driven by the simulation thread)."""

    def __init__(self, reset_pause: float, max_steps: int) -> None:
        self.reset_pause = reset_pause
        self.max_steps = max_steps
        self.phase = OFFLINE
        self.episode: Episode | None = None
        self.count = 0  # episodes begun
        self._phase_until = 0.0

    def begin(self, task: str, seed: int, instruction: str, phrasing_split: str, phrasing_index: int,
              now: float) -> Episode:
        """A new episode, its scene just reset at time ``now``: the arm is offline until ``now + reset_pause``."""
        self.count += 1
        self.episode = Episode(self.count, task, seed, instruction, phrasing_split, phrasing_index)
        self.phase = OFFLINE
        self._phase_until = now + self.reset_pause
        return self.episode

    def settle(self, t: float) -> bool:
        """Offline at time ``t``: True when the offline pause is over (the arm runs, holding still, from ``t``)."""
        if t < self._phase_until:
            return False
        self.phase, self._phase_until = SETTLING, t + self.reset_pause
        return True

    def activate(self, t: float, lag_events: int) -> dict[str, Any] | None:
        """Settling at time ``t``: the reset event when the pause is over (the controller is active from ``t``).
        ``lag_events``: the lag events counted so far."""
        if t < self._phase_until:
            return None
        episode = self.episode
        self.phase = ACTIVE
        episode.lag_events_at_start = lag_events
        return {
            "event": RESET, "episode": episode.number, "task": episode.task, "seed": episode.seed,
            "instruction": episode.instruction, "phrasing_split": episode.phrasing_split,
            "phrasing_index": episode.phrasing_index, "stamp": t, "max_steps": self.max_steps,
        }

    def step(self, t: float, success: bool, goal_distance: float, lag_events: int,
             real_time_factor: float) -> dict[str, Any] | None:
        """One physics step of the active episode, ending at time ``t``: its success or truncated event, if it
        ends now. ``success``: the task has been solved since the reset; ``lag_events``: counted so far."""
        episode = self.episode
        if episode is None or episode.finished:
            return None
        episode.steps += 1
        episode.closest = min(episode.closest, goal_distance)
        if success:
            kind = SUCCESS
        elif self.max_steps and episode.steps >= self.max_steps:
            kind = TRUNCATED
        else:
            return None
        episode.finished = True
        return {
            "event": kind, "episode": episode.number, "task": episode.task, "seed": episode.seed,
            "steps": episode.steps, "stamp": t, "lag_events": lag_events - episode.lag_events_at_start,
            "real_time_factor": real_time_factor, "goal_distance": round(goal_distance, 4),
            "closest_goal_distance": round(episode.closest, 4),
        }


@dataclass
class ResetRequest:
    """An episode to start: ``done`` is set once it runs (``result``: its reset event) or failed (``error``)."""

    task: str
    seed: int
    phrasing_split: str
    phrasing_index: int
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str = ""


class ResetRequests:
    """One reset at a time, from the threads that ask for it to the simulation thread that runs it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: ResetRequest | None = None
        self.failure = ""  # why the simulation stopped ('' while it runs)

    @property
    def current(self) -> ResetRequest | None:
        """The reset asked for and not yet done (read by the simulation thread at every step)."""
        return self._current

    def post(self, choice: Mapping[str, Any]) -> None:
        """Ask for the first episode (at start-up: no reset runs yet); ``choice``: the ResetRequest fields."""
        with self._lock:
            self._current = ResetRequest(**choice)

    def request(self, choice: Callable[[], Mapping[str, Any]], timeout: float) -> tuple[dict[str, Any] | None, str]:
        """Start an episode of ``choice()`` (read once any earlier reset is done) and wait until it runs, at most
        ``timeout`` s for each: (its reset event, '') or (None, why not)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.failure:
                    return None, f"simulation failed: {self.failure}"
                running = self._current
                if running is None:
                    request = self._current = ResetRequest(**choice())
                    break
            if not running.done.wait(timeout=max(0.0, deadline - time.monotonic())):
                return None, "an earlier reset did not finish in time"
        if not request.done.wait(timeout=timeout):
            return None, "reset timed out (is the simulation running?)"
        if request.error:
            return None, request.error
        return request.result, ""

    def complete(self, request: ResetRequest, event: dict[str, Any]) -> None:
        """The simulation thread runs ``request``'s episode; ``event``: its reset event."""
        with self._lock:
            self._current = None
        request.result = event
        request.done.set()

    def fail(self, message: str) -> None:
        """The simulation stopped: refuse every reset from now on, and end the one waiting."""
        with self._lock:
            self.failure = message
            request, self._current = self._current, None
        if request is not None:
            request.error = f"simulation failed: {message}"
            request.done.set()
