"""The time-indexed buffer: the reference motion the executor follows, as points on the caller's clock.

Points are (time, positions, velocities) with strictly increasing times; between points the reference is the
cubic Hermite spline through them (continuous position and velocity, the same interpolation a
JointTrajectoryController uses). Before the first point it continues the first point's motion backwards at
constant velocity: when a chunk arrives with nothing queued (after reset, after starvation), the executor
starts catching up with the motion the chunk describes instead of a made-up bridge to its first point. After
the last point there is no reference. Each point also carries its accumulated ensemble weight and the number
of predictions merged into it (used by the ``ensemble`` rule only).
"""

from __future__ import annotations

import bisect

import numpy as np

from dream_vla_ros.chunking.merge import MergeConfig, blend

SAME_TIME = 1e-9  # seconds; a new point this close after the last queued one still overlaps it


class Timeline:
    """Reference points on one clock; read them through the properties, change them through the methods."""

    def __init__(self, n_joints: int) -> None:
        self._n = n_joints
        self.clear()

    def clear(self) -> None:
        """Forget every point."""
        self._set(np.empty(0), np.empty((0, self._n)), np.empty((0, self._n)), np.empty(0), np.empty(0))

    def _set(self, times, positions, velocities, weights, counts) -> None:
        self._times, self._positions, self._velocities = times, positions, velocities
        self._weights, self._counts = weights, counts
        self._time_list = times.tolist()
        self._cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # the last two samples (one per step end)

    def __len__(self) -> int:
        return len(self._time_list)

    @property
    def times(self) -> np.ndarray:
        """[M] seconds, strictly increasing."""
        return self._times

    @property
    def positions(self) -> np.ndarray:
        """[M, J] reference positions."""
        return self._positions

    @property
    def velocities(self) -> np.ndarray:
        """[M, J] reference velocities."""
        return self._velocities

    @property
    def weights(self) -> np.ndarray:
        """[M] accumulated ensemble weight of each point."""
        return self._weights

    @property
    def counts(self) -> np.ndarray:
        """[M] number of predictions merged into each point."""
        return self._counts

    @property
    def end(self) -> float:
        """Time of the last point; -inf when empty."""
        return self._time_list[-1] if self._time_list else -np.inf

    def covers(self, t: float) -> bool:
        """Is the reference defined at ``t`` (not after the last point)?"""
        return bool(self._time_list) and t <= self._time_list[-1]

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Reference (positions [J], velocities [J]) at a time ``t`` that :meth:`covers` holds for."""
        cached = self._cache.get(t)
        if cached is not None:
            return cached
        times = self._time_list
        if t <= times[0] or len(times) == 1:
            result = (self._positions[0] + (t - times[0]) * self._velocities[0], self._velocities[0])
        else:
            i = min(max(bisect.bisect_right(times, t) - 1, 0), len(times) - 2)
            span = times[i + 1] - times[i]
            s = (t - times[i]) / span
            s2, s3 = s * s, s * s * s
            p0, p1 = self._positions[i], self._positions[i + 1]
            v0, v1 = self._velocities[i], self._velocities[i + 1]
            position = (
                (2 * s3 - 3 * s2 + 1) * p0
                + ((s3 - 2 * s2 + s) * span) * v0
                + (3 * s2 - 2 * s3) * p1
                + ((s3 - s2) * span) * v1
            )
            velocity = ((6 * s2 - 6 * s) / span) * (p0 - p1) + (3 * s2 - 4 * s + 1) * v0 + (3 * s2 - 2 * s) * v1
            result = (position, velocity)
        if len(self._cache) > 1:
            del self._cache[next(iter(self._cache))]
        self._cache[t] = result
        return result

    def sample_many(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference positions and velocities [n, J] at each of ``times`` (all covered)."""
        pairs = [self.sample(float(t)) for t in times]
        positions = np.array([p for p, _ in pairs]).reshape(-1, self._n)
        return positions, np.array([v for _, v in pairs]).reshape(-1, self._n)

    def prune(self, t: float) -> None:
        """Drop the points no longer needed to sample at ``t`` or later (keeps the last point at or before it)."""
        first = bisect.bisect_right(self._time_list, t) - 1
        if first > 0:
            cache = self._cache  # the reference itself does not change
            self._set(
                self._times[first:],
                self._positions[first:],
                self._velocities[first:],
                self._weights[first:],
                self._counts[first:],
            )
            self._cache = cache

    def merge(
        self,
        times: np.ndarray,
        positions: np.ndarray,
        velocities: np.ndarray,
        config: MergeConfig,
        current_time: float,
    ) -> int:
        """Merge new points (all later than ``current_time``) by ``config``'s rule; returns the overlap size.

        Queued points before the first new point are kept, unless the queue ended before ``current_time``
        (it ran dry: the new points then start a fresh reference).
        """
        self.prune(current_time)
        if not self.covers(current_time):
            self.clear()
        positions = positions.copy()
        velocities = velocities.copy()
        weights = np.ones(len(times))
        counts = np.ones(len(times))
        overlap = int(np.searchsorted(times, self.end + SAME_TIME, side="right"))
        if overlap:
            t = times[:overlap]
            old_q, old_v = self.sample_many(t)
            factors = blend(
                config,
                t,
                np.interp(t, self._times, self._weights),
                np.interp(t, self._times, self._counts),
            )
            alpha = factors.alpha[:, None]
            new_q = positions[:overlap]
            velocities[:overlap] = (
                (1 - alpha) * old_v + alpha * velocities[:overlap] + factors.alpha_rate[:, None] * (new_q - old_q)
            )
            positions[:overlap] = (1 - alpha) * old_q + alpha * new_q
            weights[:overlap] = factors.weight
            counts[:overlap] = factors.count
        keep = int(np.searchsorted(self._times, times[0], side="left"))
        self._set(
            np.concatenate([self._times[:keep], times]),
            np.concatenate([self._positions[:keep], positions]),
            np.concatenate([self._velocities[:keep], velocities]),
            np.concatenate([self._weights[:keep], weights]),
            np.concatenate([self._counts[:keep], counts]),
        )
        return overlap
