"""Fault bookkeeping shared by the nodes (ROS-free): which input is bad, why, logged once per cause.

Each input or stage is a *slot* (``camera main``, ``joint_states``, ``goal``, ``engine``, ...). A slot is
either healthy or holds one active cause. :meth:`FaultTracker.report` returns True only when the cause is
new for its slot (the caller logs it then, and only then); repeating the same bad input does not log again.
:meth:`FaultTracker.clear` returns True when a slot recovers (the caller logs the recovery once). The
diagnostics publisher reads :meth:`FaultTracker.snapshot`.

A cause is identified by its *key* (a short stable text such as ``unsupported encoding``); the message can
carry details that change from one occurrence to the next (an age, a byte count) without counting as new.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

Level = Literal["warn", "error"]


@dataclass(frozen=True)
class Fault:
    slot: str
    key: str
    message: str
    level: Level
    since: float
    count: int


class FaultTracker:
    """Active cause per slot, first-occurrence detection, counters and the last error (thread-safe)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, Fault] = {}
        self._seen: set[str] = set()
        self.total: dict[str, int] = {}
        self.last_error = ""
        self.changed = False

    def report(self, slot: str, key: str, message: str, level: Level = "error") -> bool:
        """Mark ``slot`` bad because of ``key``; True when this is a new cause for the slot (log it)."""
        with self._lock:
            self._seen.add(slot)
            self.total[key] = self.total.get(key, 0) + 1
            current = self._active.get(slot)
            if current is not None and current.key == key:
                self._active[slot] = Fault(slot, key, message, level, current.since, current.count + 1)
                return False
            self._active[slot] = Fault(slot, key, message, level, self._clock(), 1)
            self.last_error = f"{slot}: {message}"
            self.changed = True
            return True

    def clear(self, slot: str) -> Fault | None:
        """Mark ``slot`` healthy; returns the fault it had (log the recovery) or None if it was healthy."""
        with self._lock:
            fault = self._active.pop(slot, None)
            if fault is not None:
                self.changed = True
            return fault

    def clear_prefix(self, prefix: str) -> list[Fault]:
        with self._lock:
            gone = [s for s in self._active if s.startswith(prefix)]
            self.changed |= bool(gone)
            return [self._active.pop(s) for s in gone]

    def active(self, slot: str | None = None) -> Fault | None:
        with self._lock:
            if slot is not None:
                return self._active.get(slot)
            return next(iter(self._active.values()), None)

    def is_healthy(self, *slots: str) -> bool:
        with self._lock:
            return not any(s in self._active for s in slots) if slots else not self._active

    def snapshot(self) -> tuple[dict[str, Fault], set[str]]:
        """(active faults by slot, every slot ever reported), and reset the ``changed`` flag."""
        with self._lock:
            self.changed = False
            return dict(self._active), set(self._seen)


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def cause_key(message: str) -> str:
    """A stable key for a cause message: its numbers replaced by '#' (ages and sizes change, the cause not)."""
    return _NUMBER.sub("#", message)


class RateMeter:
    """Messages per second over windows of about ``window`` seconds (cheap enough for 500 Hz streams)."""

    def __init__(self, window: float = 1.0) -> None:
        self._window = window
        self._start: float | None = None
        self._count = 0
        self.rate = 0.0
        self.last = float("nan")

    def tick(self, now: float) -> None:
        self.last = now
        if self._start is None:
            self._start = now
            return
        self._count += 1
        elapsed = now - self._start
        if elapsed >= self._window:
            self.rate = self._count / elapsed
            self._start, self._count = now, 0

    def value(self, now: float) -> float:
        """The rate, decayed to 0 when nothing arrived for two windows."""
        if self._start is None or now - self.last > 2 * self._window:
            return 0.0
        return self.rate


class RecoveryGate:
    """Hysteresis for staleness holds: a slot that went bad counts as healthy again only after it has been
    healthy for ``recovery`` seconds without a break, so an input that keeps crossing its limit (joint states
    at 5 Hz against a 0.1 s age limit) holds the robot still instead of moving it in bursts.

    A slot never seen bad is healthy at once. Times are the caller's clock (float seconds).
    """

    def __init__(self, recovery: float) -> None:
        self.recovery = recovery
        self._recovering: dict[str, float | None] = {}  # slot -> when it became healthy (None: still bad)

    def update(self, slot: str, healthy: bool, now: float) -> bool:
        """Feed the slot's state now; True when it may be used (healthy, and for long enough after a fault)."""
        if not healthy:
            self._recovering[slot] = None
            return False
        if slot not in self._recovering:
            return True
        since = self._recovering[slot]
        if since is None:
            self._recovering[slot] = since = now
        if now - since >= self.recovery:
            del self._recovering[slot]
            return True
        return False

    def remaining(self, slot: str, now: float) -> float:
        """Seconds of good input the slot still needs (0 when it is usable, ``recovery`` while bad)."""
        if slot not in self._recovering:
            return 0.0
        since = self._recovering[slot]
        return self.recovery if since is None else max(0.0, self.recovery - (now - since))


class LogBudget:
    """Throttles log lines per *line kind* (a slot and a cause, e.g. ``("goal", "empty goal")``): at most
    ``burst`` lines of one kind within any ``period`` seconds. A different cause has its own budget, so only an
    input flapping between the same states faster than that (a goal flood) is thinned out. A line refused is
    counted; the next line of that kind allowed says how many were left out."""

    def __init__(self, burst: int = 3, period: float = 1.0, clock=time.monotonic) -> None:
        self._burst, self._period, self._clock = burst, period, clock
        self._logged: dict[tuple[str, str], deque[float]] = {}  # kind -> times of its latest lines
        self._skipped: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, slot: str, key: str) -> str | None:
        """None when the line must be left out; else a suffix for it ('' or a count of lines left out)."""
        kind = (slot, key)
        with self._lock:
            now = self._clock()
            times = self._logged.get(kind)
            if times is None:
                if len(self._logged) > 1000:  # bounded memory whatever the causes' texts: start afresh
                    self._logged.clear()
                times = self._logged[kind] = deque(maxlen=self._burst)
            if len(times) == self._burst and now - times[0] < self._period:
                self._skipped[kind] = self._skipped.get(kind, 0) + 1
                return None
            times.append(now)
            skipped = self._skipped.pop(kind, 0)
            return f" ({skipped} more like this not logged)" if skipped else ""
