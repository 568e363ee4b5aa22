"""Counters and measured delays of a ChunkExecutor (for diagnostics and benchmarks)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dream_vla_ros.chunking.limits import LIMIT_KINDS

TARGET_POSITION = "target_position"  # a chunk point outside the position limits, clipped into them


class RecentDelays:
    """The last ``size`` measured chunk delays (arrival time - observation stamp), in seconds."""

    def __init__(self, size: int) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._quantiles: dict[float, float] = {}

    def add(self, delay: float) -> None:
        self._values.append(delay)
        self._quantiles.clear()

    def __len__(self) -> int:
        return len(self._values)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the recent delays; NaN before the first."""
        if not self._values:
            return math.nan
        if q not in self._quantiles:
            self._quantiles[q] = float(np.quantile(np.fromiter(self._values, float), q))
        return self._quantiles[q]

    def summary(self) -> dict[str, float]:
        """count, last, mean, p50, p95 and max of the recent delays (NaN where there are none)."""
        if not self._values:
            return {"count": 0, "last": math.nan, "mean": math.nan, "p50": math.nan, "p95": math.nan, "max": math.nan}
        values = np.fromiter(self._values, float)
        return {
            "count": len(values),
            "last": float(values[-1]),
            "mean": float(values.mean()),
            "p50": float(np.quantile(values, 0.5)),
            "p95": float(np.quantile(values, 0.95)),
            "max": float(values.max()),
        }


@dataclass
class ExecutorStats:
    """What the executor did since it was created (counters are never reset by ``reset()``).

    ticks: tick() calls. chunks_received / chunks_accepted: add_chunk() calls and merges.
    rejected: reason -> chunks rejected for it (reasons in :mod:`dream_vla_ros.chunking.chunk`).
    dropped_points: points of accepted chunks already in the past on arrival (latency compensation).
    blends / blended_points: chunks (and their points) blended with queued points by crossfade or ensemble.
    starvation_events: times the queue ran dry while running. stops: stop() calls.
    limit_clamps: control periods in which a limit (position, velocity, acceleration) bent the motion on any
        joint, plus ``target_position``: accepted chunks with a point outside the position limits (clipped).
    delays: the recent measured delays (arrival - observation stamp) of chunks that passed validation.
    """

    delay_window: int = 20
    ticks: int = 0
    chunks_received: int = 0
    chunks_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dropped_points: int = 0
    blends: int = 0
    blended_points: int = 0
    starvation_events: int = 0
    stops: int = 0
    limit_clamps: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*LIMIT_KINDS, TARGET_POSITION), 0))
    delays: RecentDelays = field(init=False)

    def __post_init__(self) -> None:
        self.delays = RecentDelays(self.delay_window)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def as_dict(self) -> dict:
        """Plain mapping (JSON-ready) of every counter and the delay summary."""
        return {
            "ticks": self.ticks,
            "chunks_received": self.chunks_received,
            "chunks_accepted": self.chunks_accepted,
            "rejected": dict(self.rejected),
            "dropped_points": self.dropped_points,
            "blends": self.blends,
            "blended_points": self.blended_points,
            "starvation_events": self.starvation_events,
            "stops": self.stops,
            "limit_clamps": dict(self.limit_clamps),
            "delay": self.delays.summary(),
        }
