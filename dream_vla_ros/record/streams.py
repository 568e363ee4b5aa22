"""Messages missing from a periodic stream, estimated from its header stamps (pure Python, no numpy on the hot path).

An interval longer than 1.5 typical periods counts ``round(interval / period) - 1`` missing messages. A
publisher that falls behind and then catches up (intervals shorter than 0.9 periods within the next 10
periods) delivered those messages late, not lost: each such interval takes one back. Exact for streams
stamped on a regular schedule (camera drivers, controller loops); for a publisher with large jitter it stays
an estimate (``dream-vla-ros bench recording`` compares it with sequence numbers).

The typical period is the median of the recent intervals longer than half their mean, so neither bursts
(many near-zero intervals) nor gaps (a few long ones) move it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable


def typical_period(intervals: Iterable[float]) -> float:
    """The median of the intervals longer than half their mean (0 for no intervals)."""
    values = sorted(v for v in intervals if v > 0)
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    kept = [v for v in values if v > 0.5 * mean] or values
    return kept[len(kept) // 2]


class GapCounter:
    """Incremental count of missing messages of one stream (see the module docstring).

    period: a fixed typical period, or 0 to estimate it from the last ``window`` intervals (re-estimated every
    16 intervals).
    """

    CATCH_UP = 0.9  # intervals shorter than this many periods catch up a late publisher
    HORIZON = 10.0  # periods after a long interval during which catching up takes missing messages back

    def __init__(self, period: float = 0.0, window: int = 64) -> None:
        self.missing = 0
        self.period = float(period)
        self._fixed = period > 0
        self._intervals: deque[float] = deque(maxlen=window)
        self._since_estimate = 0
        self._credits: deque[list[float]] = deque()  # [expiry stamp, messages that may still arrive late]
        self._last: float | None = None

    def observe(self, stamp: float) -> None:
        """The next message's stamp (any unit, as long as it is the same throughout)."""
        last, self._last = self._last, stamp
        if last is None or stamp <= last or stamp <= 0:
            return
        interval = stamp - last
        period = self.period
        if period > 0:
            credits = self._credits
            while credits and credits[0][0] < stamp:
                credits.popleft()
            if interval > 1.5 * period:
                gap = max(0, round(interval / period) - 1)
                self.missing += gap
                if gap:
                    credits.append([stamp + self.HORIZON * period, gap])
            elif interval < self.CATCH_UP * period and credits:
                self.missing -= 1
                credits[0][1] -= 1
                if credits[0][1] <= 0:
                    credits.popleft()
        if self._fixed:
            return
        self._intervals.append(interval)
        self._since_estimate += 1
        if self._since_estimate >= 16 or (period == 0 and len(self._intervals) >= 8):
            self._since_estimate = 0
            self.period = typical_period(self._intervals)


def missing_in(stamps: Iterable[float]) -> int:
    """Missing messages of a whole stream of (sorted) stamps, with the typical period of all its intervals."""
    values = list(stamps)
    period = typical_period(b - a for a, b in itertools.pairwise(values))
    if period <= 0:
        return 0
    counter = GapCounter(period)
    for stamp in values:
        counter.observe(stamp)
    return counter.missing
