"""Is the newest input fresh enough to act on? (ROS-free; times are float seconds on the node's ROS clock.)

The policy node keeps only the newest frame per camera and the newest joint state. Before it runs
inference, :func:`check_freshness` compares their header stamps with *now*:

- a missing input (nothing received yet) blocks,
- an input older than its age limit blocks (``stale``), as does a zero stamp,
- a stamp more than ``max_future`` ahead of now blocks (``future stamp``: another clock, or a bug),
- camera frames and the joint state further apart than ``max_sync_skew`` block (``out of sync``).

Each problem names the slot it belongs to (``camera <name> timing``, ``joint_states timing``, ``sync``) so the
node reports it once per cause and clears it when the input is fresh again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FreshnessLimits:
    """Seconds: max age of a camera frame / joint state at inference start, tolerated clock lead of a stamp,
    max spread between the stamps of the frames and the joint state used together."""

    max_image_age: float
    max_joint_state_age: float
    max_future: float
    max_sync_skew: float


@dataclass(frozen=True)
class Problem:
    slot: str
    key: str
    message: str


def _timing(slot: str, what: str, stamp: float | None, now: float, max_age: float, max_future: float):
    if stamp is None:
        return Problem(slot, "nothing received", f"no {what} received yet")
    if stamp <= 0.0:
        return Problem(slot, "zero stamp", f"{what} has no header stamp (0)")
    age = now - stamp
    if age < -max_future:
        return Problem(slot, "future stamp", f"{what} stamp is {-age:.3f} s in the future (limit {max_future:.3f} s)")
    if age > max_age:
        return Problem(slot, "stale", f"{what} is {age:.3f} s old (limit {max_age:.3f} s)")
    return None


def check_freshness(
    now: float,
    image_stamps: Mapping[str, float | None],
    joint_stamp: float | None,
    limits: FreshnessLimits,
) -> list[Problem]:
    """Problems that forbid building an observation now (empty list: fresh and in sync)."""
    problems = []
    for camera, stamp in image_stamps.items():
        problem = _timing(f"camera {camera} timing", f"camera {camera!r} frame", stamp, now,
                          limits.max_image_age, limits.max_future)
        if problem:
            problems.append(problem)
    problem = _timing("joint_states timing", "joint state", joint_stamp, now, limits.max_joint_state_age,
                      limits.max_future)
    if problem:
        problems.append(problem)
    if problems:
        return problems
    stamps = [*image_stamps.values(), joint_stamp]
    spread = max(stamps) - min(stamps)  # type: ignore[type-var, operator]
    if spread > limits.max_sync_skew:
        message = f"out of sync: frames and joint state are {spread:.3f} s apart (limit {limits.max_sync_skew:.3f} s)"
        problems.append(Problem("sync", "out of sync", message))
    return problems


def timing_slots(cameras: tuple[str, ...]) -> tuple[str, ...]:
    """Every slot :func:`check_freshness` may report for these cameras."""
    return (*(f"camera {c} timing" for c in cameras), "joint_states timing", "sync")
