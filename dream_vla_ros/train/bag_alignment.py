"""Aligning an episode's streams in time: the policy-rate grid, stream gaps, joint series and action targets.

Times are seconds since an episode's base (its first stamp minus 1 s); stamps come from :mod:`.bag_reading` in
nanoseconds. Numpy only, except the controller replay of :func:`trajectory_targets`
(:class:`~dream_vla_ros.sim.trajectory_follower.TrajectoryFollower`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dream_vla_ros.train.bag_reading import NS, CommandSample, JointSample


def at_or_before(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the last of the sorted ``stamps`` at or before each of ``times`` (-1 where none is)."""
    return np.searchsorted(np.asarray(stamps), np.asarray(times), side="right") - 1


def time_grid(start: float, end: float, dt: float) -> np.ndarray:
    """start, start + dt, ... up to end (inclusive within 1e-9 s); empty when end < start."""
    if end < start:
        return np.empty(0)
    count = math.floor((end - start) / dt + 1e-9) + 1
    return start + dt * np.arange(count)


def gaps(stamps: np.ndarray, start: float, end: float, max_gap: float) -> list[tuple[float, float]]:
    """(time, length) of every interval between consecutive ``stamps`` longer than ``max_gap`` that overlaps
    [start, end], including a stream starting after ``start`` or ending before ``end``."""
    stamps = np.asarray(stamps, dtype=np.float64)
    inside = stamps[(stamps >= start) & (stamps <= end)]
    before = stamps[stamps < start]
    after = stamps[stamps > end]
    points = np.concatenate([before[-1:], inside, after[:1]])
    out = []
    if points.size == 0:
        return [(start, end - start)] if end - start > max_gap else []
    if points[0] > start and points[0] - start > max_gap:
        out.append((start, float(points[0] - start)))
    diffs = np.diff(points)
    for i in np.flatnonzero(diffs > max_gap):
        out.append((float(points[i]), float(diffs[i])))
    if points[-1] < end and end - points[-1] > max_gap:
        out.append((float(points[-1]), float(end - points[-1])))
    return out


def missing_messages(stamps: np.ndarray) -> int:
    """Messages missing from a periodic stream (:func:`dream_vla_ros.record.streams.missing_in`)."""
    from dream_vla_ros.record.streams import missing_in

    return missing_in(np.sort(np.asarray(stamps, dtype=np.float64)).tolist())


def rate_hz(stamps: np.ndarray) -> float:
    stamps = np.asarray(stamps, dtype=np.float64)
    span = float(stamps[-1] - stamps[0]) if stamps.size > 1 else 0.0
    return (stamps.size - 1) / span if span > 0 else 0.0


def idle_prefix(actions: np.ndarray, tolerance: float) -> int | None:
    """Frames to drop at the start: the index before the first frame whose target differs from frame 0's by
    more than ``tolerance`` (0 when it moves at once); None when the targets never move."""
    moved = np.flatnonzero(np.max(np.abs(actions - actions[0]), axis=1) > tolerance)
    if moved.size == 0:
        return None
    return max(0, int(moved[0]) - 1)


@dataclass(frozen=True)
class JointSeries:
    """Joint states of one topic in a fixed joint order: stamps [N] s, positions / velocities [N, J]."""

    stamps: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities of the newest sample at or before ``t`` (the first one before it starts)."""
        i = max(0, int(at_or_before(self.stamps, np.array([t]))[0]))
        return self.positions[i], self.velocities[i]

    def select(self, columns: Sequence[int]) -> JointSeries:
        """The series of the joints at ``columns``, in that order."""
        return JointSeries(self.stamps, self.positions[:, columns], self.velocities[:, columns])


@dataclass(frozen=True)
class Command:
    """One JointTrajectory as the controller receives it (times in s; stamp 0 = start on receipt)."""

    received: float
    stamp: float
    joint_names: tuple[str, ...]
    times: tuple[float, ...]
    positions: tuple[np.ndarray, ...]
    velocities: tuple[np.ndarray | None, ...]


def trajectory_targets(commands: Sequence[Command], joint_names: Sequence[str], sample_times: np.ndarray,
                       measured: JointSeries, from_desired: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """The controller's reference of ``joint_names`` (one controller) at ``sample_times``: commands replayed in
    receipt order through :class:`TrajectoryFollower`; before the first accepted command it holds the measured
    position at the first sample time. Returns (targets [T, J], rejected reason -> count)."""
    from dream_vla_ros.sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint

    names = tuple(joint_names)
    follower = TrajectoryFollower(names, interpolate_from_desired_state=from_desired)
    follower.hold(measured.at(float(sample_times[0]) if len(sample_times) else 0.0)[0])
    ordered = sorted(commands, key=lambda c: c.received)
    out = np.empty((len(sample_times), len(names)))
    next_command = 0
    for k, t in enumerate(sample_times):
        while next_command < len(ordered) and ordered[next_command].received <= t:
            command = ordered[next_command]
            position, velocity = measured.at(command.received)
            points = [TrajectoryPoint(ts, p, v) for ts, p, v in zip(command.times, command.positions,
                                                                      command.velocities, strict=True)]
            follower.receive(command.joint_names, command.stamp, points, command.received, position, velocity)
            next_command += 1
        out[k] = follower.sample(float(t))[0]
    return out, dict(follower.rejected)


def leader_targets(leader: JointSeries, sample_times: np.ndarray) -> np.ndarray:
    """The leader's joint positions linearly interpolated at ``sample_times`` (held beyond its ends)."""
    return np.stack([np.interp(sample_times, leader.stamps, leader.positions[:, j])
                     for j in range(leader.positions.shape[1])], axis=1)


def joint_series(samples: Sequence[JointSample], joint_names: Sequence[str], topic: str, base: int
                 ) -> tuple[JointSeries | None, list[str]]:
    """Joint states of ``topic`` in ``joint_names`` order, sorted by stamp, in seconds since ``base`` ns; None and
    the reason when some message lacks a dataset joint."""
    wanted = tuple(joint_names)
    order_cache: dict[tuple[str, ...], np.ndarray | None] = {}
    stamps, positions, velocities = [], [], []
    bad: set[str] = set()
    for stamp, names, position, velocity in samples:
        index = order_cache.get(names)
        if names not in order_cache:
            lookup = {n: i for i, n in enumerate(names)}
            lacking = [j for j in wanted if j not in lookup]
            if lacking or len(position) != len(names):
                bad.update(lacking or ["(positions shorter than names)"])
                index = None
            else:
                index = np.array([lookup[j] for j in wanted], dtype=np.intp)
            order_cache[names] = index
        if index is None:
            continue
        stamps.append((stamp - base) / NS)
        positions.append(position[index])
        velocities.append(velocity[index] if len(velocity) == len(names) else np.zeros(len(wanted)))
    if bad:
        return None, [f"joint-name mismatch: {topic} lacks {sorted(bad)} of the dataset joints {list(wanted)}"]
    order = np.argsort(np.asarray(stamps), kind="stable")
    return JointSeries(np.asarray(stamps)[order], np.asarray(positions)[order], np.asarray(velocities)[order]), []


def recorded_commands(samples: Sequence[CommandSample], base: int) -> list[Command]:
    """Recorded JointTrajectory messages as :class:`Command` in seconds since ``base`` ns."""
    return [
        Command(
            received=(received - base) / NS,
            stamp=0.0 if stamp == 0 else (stamp - base) / NS,
            joint_names=tuple(msg.joint_names),
            times=tuple(int(p.time_from_start.sec) + int(p.time_from_start.nanosec) * 1e-9 for p in msg.points),
            positions=tuple(np.asarray(p.positions, dtype=np.float64) for p in msg.points),
            velocities=tuple(np.asarray(p.velocities, dtype=np.float64) if len(p.velocities) else None
                             for p in msg.points),
        )
        for received, stamp, msg in samples
    ]
