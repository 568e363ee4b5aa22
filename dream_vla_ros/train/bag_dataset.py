"""Recorded episodes (rosbag2 directories of ``dream-vla-ros record``) -> the episode dataset of the simulation demos.

What one episode becomes (``docs/dataset_format.md``, "From ROS 2 bags"; ``docs/recording.md``):

- **Time grid** at the policy rate: t_k = t_start + k * dt, from the latest first message to the earliest
  last message of the camera and joint-state streams (and the leader's, minus dt). Times are header stamps
  (the bag's receive time where a stamp is 0).
- **Observation of frame k**: per camera the newest image stamped at or before t_k, and the newest joint
  state stamped at or before t_k (what the policy node sees when it runs at t_k). A frame whose image is
  older than ``max_image_age`` is *misaligned* (counted; too many refuse the episode).
- **Action of frame k**: the joint-position target for t_k + dt. ``trajectory`` source: the commanded
  trajectories replayed through the JointTrajectoryController semantics of the simulated arm
  (:class:`~dream_vla_ros.sim.trajectory_follower.TrajectoryFollower`: hard replacement at receipt,
  ``header.stamp`` 0 = start on receipt, linear / cubic interpolation, hold after the end, holding the
  measured start position before the first command), sampled at t_k + dt; one follower per action topic over
  the joints its messages name. ``leader`` source: the leader arm's joint positions interpolated at t_k + dt.
- **Idle start** (``trim_idle``): leading frames before the targets first move by more than
  ``idle_tolerance`` are dropped (one is kept).

Refused, with every reason found: bags that are not readable (an ``incomplete/`` episode: run ``record
repair``), episodes not stopped with ``~/stop`` (unless ``allow_incomplete``), missing or empty camera /
joint-state / action topics, gaps in those streams longer than ``max_gap``, joint-name mismatches (joint
states lacking dataset joints, action messages naming other joints, joints without an action, another
episode's joint set or camera size), too few frames, too many misaligned frames, no motion, no instruction.

The report (``report.json`` and ``report.md`` in the dataset directory, and the return value) lists per
episode the durations, message rates, missing messages (header-stamp gaps and the recorder's own counters),
misaligned frames and rejected commands; the refused bags with their reasons; per-joint ranges; the
train/validation split (by episode, stratified by task: ``split_by_episode`` with ``val_fraction`` and
``seed``, the split ``dream-vla-ros train`` makes with the same values); and the build throughput.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.configuration import require
from dream_vla_ros.errors import InputError
from dream_vla_ros.train.dataset import META_FILE, DatasetMeta, DatasetWriter, Episode, split_by_episode

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_NS = 1_000_000_000


@dataclass(frozen=True)
class BuildConfig:
    """How bags become a dataset.

    out: dataset directory to write; overwrite: replace a dataset already there.
    rate: policy rate in Hz (dt = 1 / rate; a model's dt must be a whole multiple of it: 40 Hz suits the
        shipped presets' 0.025 s).
    cameras: NAME=TOPIC per dataset camera (empty: from each episode's record).
    joint_states_topic / action_source / action_topics: override the episode record ("" / empty = as
        recorded; action_source trajectory or leader).
    joint_names: dataset joints in column order (empty: the first joint state's names).
    leader_joint_names: the leader arm's joint names in dataset joint order (empty: the same names).
    image_size: shorter image side in pixels after resizing, aspect kept (0 = as recorded).
    max_gap: s; a longer gap in a camera, joint-state or leader stream refuses the episode.
    max_image_age: s; frames whose newest image is older are misaligned.
    max_misaligned: fraction of misaligned frames above which the episode is refused.
    min_frames: fewer frames refuse the episode.
    trim_idle / idle_tolerance: drop leading frames before the targets move by more than idle_tolerance (rad).
    interpolate_from_desired_state: the controller's setting (start new trajectories from the commanded state).
    val_fraction / seed: the train/validation split by episode (reported and stored in meta.json's source).
    task / instruction: override every episode's label ("" = as recorded).
    allow_incomplete: accept episodes closed on shutdown or salvaged after a crash.
    """

    out: str
    rate: float = 40.0
    cameras: tuple[str, ...] = ()
    joint_states_topic: str = ""
    action_source: str = ""
    action_topics: tuple[str, ...] = ()
    joint_names: tuple[str, ...] = ()
    leader_joint_names: tuple[str, ...] = ()
    image_size: int = 0
    max_gap: float = 0.25
    max_image_age: float = 0.1
    max_misaligned: float = 0.1
    min_frames: int = 10
    trim_idle: bool = True
    idle_tolerance: float = 1e-3
    interpolate_from_desired_state: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    task: str = ""
    instruction: str = ""
    allow_incomplete: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        require(math.isfinite(self.rate) and 0 < self.rate <= 1000, "rate", f"must be in (0, 1000] Hz, got {self.rate}")
        require(self.action_source in ("", "trajectory", "leader"), "action_source", "must be trajectory or leader")
        require(all("=" in c for c in self.cameras), "cameras", "expected NAME=TOPIC items")
        require(self.image_size == 0 or 8 <= self.image_size <= 4096, "image_size", "must be 0 or in [8, 4096] px")
        require(self.max_gap > 0 and self.max_image_age > 0, "max_gap", "gap and age limits must be > 0 s")
        require(0 <= self.max_misaligned <= 1, "max_misaligned", "must be in [0, 1]")
        require(self.min_frames >= 1, "min_frames", "must be >= 1")
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")

    @property
    def dt(self) -> float:
        return 1.0 / self.rate


class BagRefusedError(InputError):
    """An episode bag cannot become a dataset episode; ``reasons`` says why (all reasons found)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


# -- pure helpers (numpy) -------------------------------------------------------------------------------------
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
        i = max(0, int(at_or_before(self.stamps, np.array([t]))[0]))
        return self.positions[i], self.velocities[i]


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


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` px, keeping the aspect ratio (0 = unchanged)."""
    h, w = image.shape[:2]
    if size == 0 or min(h, w) == size:
        return image
    from dream_vla_ros.policy.resize import resize

    scale = size / min(h, w)
    return resize(image, max(1, round(w * scale)), max(1, round(h * scale)))


def decode_image(msg: Any, msgtype: str) -> np.ndarray:
    """A deserialised Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage -> RGB uint8 [H, W, 3]."""
    import cv2

    if msgtype.endswith("CompressedImage"):
        decoded = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise InputError(f"cannot decode a compressed image (format {msg.format!r})")
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise InputError(f"unsupported image encoding {msg.encoding!r} (rgb8, bgr8, rgba8, bgra8, mono8)")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < width * channels or data.size < step * height:
        raise InputError(f"image data of {data.size} bytes does not fit {width}x{height} {msg.encoding}")
    pixels = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if msg.encoding in ("bgr8", "bgra8"):
        pixels = pixels[..., 2::-1]
    elif msg.encoding == "rgba8":
        pixels = pixels[..., :3]
    elif msg.encoding == "mono8":
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels)


# -- reading one episode --------------------------------------------------------------------------------------
@dataclass
class _Streams:
    """What one bag holds, by topic (stamps in ns)."""

    types: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    images: dict[str, tuple[list[int], list[bytes]]] = field(default_factory=dict)
    joints: dict[str, list[tuple[int, tuple[str, ...], np.ndarray, np.ndarray]]] = field(default_factory=dict)
    commands: dict[str, list[tuple[int, int, Any]]] = field(default_factory=dict)
    goals: list[str] = field(default_factory=list)
    bytes: int = 0


def _stamp_or(stamp: Any, fallback: int) -> int:
    value = int(stamp.sec) * _NS + int(stamp.nanosec)
    return value if value > 0 else fallback


def _read_streams(path: Path, typestore, config: BuildConfig, info: dict[str, Any]) -> tuple[_Streams, dict]:
    """The bag's messages on the topics the build reads, and those topics (:func:`_episode_topics`)."""
    from rosbags.rosbag2 import Reader

    from dream_vla_ros.record.bag import header_stamp_ns

    streams = _Streams()
    streams.bytes = sum(p.stat().st_size for p in path.glob("*.mcap"))
    with Reader(path) as reader:
        for connection in reader.connections:
            streams.types[connection.topic] = connection.msgtype
            streams.counts[connection.topic] = streams.counts.get(connection.topic, 0) + connection.msgcount
        topics = _episode_topics(config, info, streams.types)
        roles = dict.fromkeys(topics["cameras"].values(), "camera")
        roles[topics["joint_states"]] = "joint_states"
        roles.update(dict.fromkeys(topics["actions"], "action"))
        roles.update({t: "goal" for t, ty in streams.types.items()
                      if ty == "std_msgs/msg/String" and t == info.get("goal", t)})
        wanted = [c for c in reader.connections if c.topic in roles]
        if not wanted:
            return streams, topics
        for connection, timestamp, raw in reader.messages(connections=wanted):
            topic, msgtype = connection.topic, connection.msgtype
            role = roles[topic]
            if role == "camera":
                stamp = header_stamp_ns(raw) or timestamp
                times, frames = streams.images.setdefault(topic, ([], []))
                times.append(stamp)
                frames.append(raw)
                continue
            if msgtype == "std_msgs/msg/String":
                streams.goals.append(str(typestore.deserialize_cdr(raw, msgtype).data))
                continue
            msg = typestore.deserialize_cdr(raw, msgtype)
            if msgtype == "sensor_msgs/msg/JointState":
                velocity = np.asarray(msg.velocity, dtype=np.float64)
                streams.joints.setdefault(topic, []).append(
                    (_stamp_or(msg.header.stamp, timestamp), tuple(msg.name),
                     np.asarray(msg.position, dtype=np.float64), velocity))
            elif msgtype == "trajectory_msgs/msg/JointTrajectory":
                streams.commands.setdefault(topic, []).append(
                    (timestamp, int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec), msg))
    return streams, topics


def _joint_series(samples: list[tuple[int, tuple[str, ...], np.ndarray, np.ndarray]], joint_names: Sequence[str],
                  topic: str, base: int, reasons: list[str]) -> JointSeries | None:
    """Joint states in ``joint_names`` order (sorted by stamp); a mismatch adds a reason and returns None."""
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
        stamps.append((stamp - base) / _NS)
        positions.append(position[index])
        velocities.append(velocity[index] if len(velocity) == len(names) else np.zeros(len(wanted)))
    if bad:
        reasons.append(f"joint-name mismatch: {topic} lacks {sorted(bad)} of the dataset joints {list(wanted)}")
        return None
    order = np.argsort(np.asarray(stamps), kind="stable")
    return JointSeries(np.asarray(stamps)[order], np.asarray(positions)[order], np.asarray(velocities)[order])


def _commands(samples: list[tuple[int, int, Any]], base: int) -> list[Command]:
    out = []
    for received, stamp, msg in samples:
        out.append(Command(
            received=(received - base) / _NS,
            stamp=0.0 if stamp == 0 else (stamp - base) / _NS,
            joint_names=tuple(msg.joint_names),
            times=tuple(int(p.time_from_start.sec) + int(p.time_from_start.nanosec) * 1e-9 for p in msg.points),
            positions=tuple(np.asarray(p.positions, dtype=np.float64) for p in msg.points),
            velocities=tuple(np.asarray(p.velocities, dtype=np.float64) if len(p.velocities) else None
                             for p in msg.points),
        ))
    return out


@dataclass
class _DatasetSpec:
    """What the first accepted episode fixed: joints, cameras and their sizes."""

    joint_names: tuple[str, ...] | None = None
    cameras: dict[str, tuple[int, int]] | None = None


def _episode_topics(config: BuildConfig, info: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    if config.cameras:
        cameras = dict(item.split("=", 1) for item in config.cameras)
    elif info.get("cameras"):
        cameras = dict(info["cameras"])
    else:
        from dream_vla_ros.record.config import camera_name

        cameras = {camera_name(t): t for t in sorted(types) if types[t] in IMAGE_TYPES}
    action = info.get("action") or {}
    source = config.action_source or action.get("source") or "trajectory"
    default_actions = ["/arm_controller/joint_trajectory"] if source == "trajectory" else []
    return {
        "cameras": cameras,
        "joint_states": config.joint_states_topic or info.get("joint_states") or "/joint_states",
        "source": source,
        "actions": list(config.action_topics) or list(action.get("topics") or default_actions),
    }


def build_episode(path: Path, config: BuildConfig, spec: _DatasetSpec, typestore) -> tuple[Episode, dict[str, Any]]:
    """One bag -> (dataset episode, its report entry); BagRefusedError with every reason found."""
    from dream_vla_ros.record.episode import INCOMPLETE_DIR, STATUS_COMPLETE, RecorderError, read_info

    reasons: list[str] = []
    if not (path / "metadata.yaml").is_file():
        inside = path.parent.name == INCOMPLETE_DIR
        where, root = ("in incomplete/", path.parent.parent) if inside else ("without metadata.yaml", path.parent)
        raise BagRefusedError([f"not a readable bag ({where}: the recording did not finish; "
                               f"`dream-vla-ros record repair {root}` salvages it)"])
    try:
        info = read_info(path) or {}
    except RecorderError as exc:
        raise BagRefusedError([str(exc)]) from None
    status = info.get("status", STATUS_COMPLETE if not info else "unknown")
    if status != STATUS_COMPLETE and not config.allow_incomplete:
        reasons.append(f"episode status {status!r}, not stopped with ~/stop (allow_incomplete accepts it)")
    try:
        streams, topics = _read_streams(path, typestore, config, info)
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged files
        raise BagRefusedError([*reasons, f"cannot read the bag: {type(exc).__name__}: {exc}"]) from None
    if not topics["cameras"]:
        reasons.append("no camera topic (record one, or give cameras NAME=TOPIC)")
    required = [*topics["cameras"].values(), topics["joint_states"], *topics["actions"]]
    if not topics["actions"]:
        reasons.append(f"no action topic for the {topics['source']} source (give action_topics)")
    for topic in required:
        if topic not in streams.types:
            reasons.append(f"missing topic {topic}")
        elif streams.counts.get(topic, 0) == 0:
            reasons.append(f"no messages on {topic}")
    if spec.cameras is not None and set(topics["cameras"]) != set(spec.cameras):
        reasons.append(f"cameras {sorted(topics['cameras'])} differ from the dataset's {sorted(spec.cameras)}")
    if reasons:
        raise BagRefusedError(reasons)

    joint_samples = streams.joints.get(topics["joint_states"], [])
    if not joint_samples:
        raise BagRefusedError([f"no sensor_msgs/JointState messages on {topics['joint_states']}"])
    joint_names = tuple(config.joint_names) or spec.joint_names or joint_samples[0][1]
    if spec.joint_names is not None and tuple(joint_names) != spec.joint_names:
        reasons.append(f"joint-name mismatch: {list(joint_names)} differ from the dataset's {list(spec.joint_names)}")
    all_stamps = [s for s, *_ in joint_samples] + [t for times, _ in streams.images.values() for t in times]
    base = min(all_stamps) - _NS
    joints = _joint_series(joint_samples, joint_names, topics["joint_states"], base, reasons)
    cameras = {name: np.asarray([(t - base) / _NS for t in streams.images[topic][0]])
               for name, topic in topics["cameras"].items()}
    leader = None
    if topics["source"] == "leader":
        leader_names = tuple(config.leader_joint_names) or tuple(joint_names)
        if len(leader_names) != len(joint_names):
            reasons.append(f"joint-name mismatch: {len(leader_names)} leader joints for {len(joint_names)} joints")
        else:
            leader = _joint_series(streams.joints.get(topics["actions"][0], []), leader_names,
                                   topics["actions"][0], base, reasons)
    if joints is None or (topics["source"] == "leader" and leader is None):
        raise BagRefusedError(reasons)

    dt = config.dt
    firsts = [joints.stamps[0], *(c[0] for c in cameras.values())]
    lasts = [joints.stamps[-1], *(c[-1] for c in cameras.values())]
    if leader is not None:
        firsts.append(leader.stamps[0])
        lasts.append(leader.stamps[-1] - dt)
    start, end = max(firsts), min(lasts)
    periodic = {topics["joint_states"]: joints.stamps, **{topics["cameras"][n]: s for n, s in cameras.items()}}
    if leader is not None:
        periodic[topics["actions"][0]] = leader.stamps
    stream_report = {}
    for topic, stamps in periodic.items():
        found = gaps(stamps, start, end, config.max_gap)
        for at, length in found[:3]:
            reasons.append(f"gap of {length:.3f} s on {topic} at t={at - start:.2f} s (max_gap {config.max_gap} s)")
        if len(found) > 3:
            reasons.append(f"{len(found) - 3} more gaps on {topic}")
        diffs = np.diff(stamps)
        stream_report[topic] = {"messages": int(stamps.size), "rate_hz": round(rate_hz(stamps), 2),
                                "missing": missing_messages(stamps),
                                "max_interval_s": round(float(diffs.max()), 4) if diffs.size else None}
    grid = time_grid(start, end, dt)
    if grid.size < config.min_frames:
        reasons.append(f"too short: {grid.size} frame(s) at {config.rate:g} Hz (min_frames {config.min_frames})")
    if reasons:
        raise BagRefusedError(reasons)

    # Actions: the target for t_k + dt.
    rejected: dict[str, int] = {}
    if topics["source"] == "leader":
        actions = leader_targets(leader, grid + dt)
        action_messages = int(leader.stamps.size)
    else:
        actions = np.full((grid.size, len(joint_names)), np.nan)
        covered: set[str] = set()
        action_messages = 0
        for topic in topics["actions"]:
            commands = _commands(streams.commands.get(topic, []), base)
            action_messages += len(commands)
            if not commands:
                continue
            names = commands[0].joint_names
            foreign = [n for n in names if n not in joint_names]
            if foreign:
                reasons.append(f"joint-name mismatch: {topic} commands {foreign}, not among the dataset joints "
                               f"{list(joint_names)}")
                continue
            columns = [joint_names.index(n) for n in names]
            subset = JointSeries(joints.stamps, joints.positions[:, columns], joints.velocities[:, columns])
            ordered = tuple(joint_names[c] for c in sorted(columns))
            targets, why = trajectory_targets(commands, ordered, grid + dt, _reorder(subset, names, ordered),
                                              config.interpolate_from_desired_state)
            actions[:, sorted(columns)] = targets
            covered.update(names)
            for reason, count in why.items():
                rejected[f"{topic}: {reason}"] = count
        uncovered = [j for j in joint_names if j not in covered]
        if uncovered and not reasons:
            reasons.append(f"joint-name mismatch: no action topic commands {uncovered}")
    if reasons:
        raise BagRefusedError(reasons)

    # Observations at t_k.
    proprio_index = at_or_before(joints.stamps, grid)
    proprio = joints.positions[proprio_index]
    images, misaligned, sizes = {}, {}, {}
    for name, topic in topics["cameras"].items():
        index = at_or_before(cameras[name], grid)
        misaligned[name] = int(np.sum(grid - cameras[name][index] > config.max_image_age))
        msgtype = streams.types[topic]
        decoded: dict[int, np.ndarray] = {}
        frames = []
        try:
            for i in index.tolist():
                if i not in decoded:
                    msg = typestore.deserialize_cdr(streams.images[topic][1][i], msgtype)
                    decoded[i] = resize_short_side(decode_image(msg, msgtype), config.image_size)
                frames.append(decoded[i])
        except Exception as exc:  # noqa: BLE001 - corrupt image data
            raise BagRefusedError([f"cannot decode {topic}: {exc}"]) from None
        shapes = {f.shape[:2] for f in decoded.values()}
        if len(shapes) != 1:
            reasons.append(f"{topic}: image size changes within the episode ({sorted(shapes)})")
            continue
        sizes[name] = shapes.pop()
        if spec.cameras is not None and sizes[name] != spec.cameras[name]:
            h, w = sizes[name]
            reasons.append(f"camera {name}: {w}x{h} px (after resizing) differs from the dataset's "
                           f"{spec.cameras[name][1]}x{spec.cameras[name][0]}")
        images[name] = np.stack(frames)
    for name, count in misaligned.items():
        if count > config.max_misaligned * grid.size:
            reasons.append(f"{count} of {grid.size} frames have a {name} image older than max_image_age "
                           f"{config.max_image_age} s")

    instruction = config.instruction or str(info.get("instruction") or "") or next(
        (g.strip() for g in streams.goals if g.strip()), "")
    task = config.task or str(info.get("task") or "") or instruction
    if not instruction:
        reasons.append("no instruction (none recorded on the goal topic or in the episode record; give instruction)")

    first = 0
    if config.trim_idle:
        skip = idle_prefix(actions, config.idle_tolerance)
        if skip is None:
            reasons.append(f"no motion: the action targets never move by more than {config.idle_tolerance}")
        else:
            first = skip
    if grid.size - first < config.min_frames:
        reasons.append(f"too short after trimming the idle start: {grid.size - first} frame(s)")
    if reasons:
        raise BagRefusedError(reasons)

    keep = slice(first, None)
    episode = Episode(
        images={name: frames[keep] for name, frames in images.items()},
        proprio=proprio[keep].astype(np.float32),
        actions=actions[keep].astype(np.float32),
        task=task, instruction=instruction, seed=-1, success=bool(info.get("success", True)),
        timestamps=grid[keep] - grid[first],
    )
    if spec.joint_names is None:
        spec.joint_names = tuple(joint_names)
    if spec.cameras is None:
        spec.cameras = sizes
    counts = info.get("counts") or {}
    report = {
        "bag": str(path), "task": task, "instruction": instruction, "status": status,
        "recorded_s": round(float(info["duration_s"]), 3) if info.get("duration_s") is not None else None,
        "duration_s": round(float(grid[-1] - grid[first]), 3), "frames": episode.length, "trimmed_frames": first,
        "streams": stream_report,
        "misaligned_frames": misaligned,
        "recorder_dropped": {t: int(c.get("dropped_backlog", 0)) + int(c.get("lost", 0))
                             for t, c in counts.items() if isinstance(c, dict)},
        "action": {"source": topics["source"], "topics": topics["actions"], "messages": action_messages,
                   "rejected": rejected},
        "input_mb": round(streams.bytes / 1e6, 3),
    }
    return episode, report


def _reorder(series: JointSeries, names: Sequence[str], ordered: Sequence[str]) -> JointSeries:
    index = [list(names).index(n) for n in ordered]
    return JointSeries(series.stamps, series.positions[:, index], series.velocities[:, index])


# -- the whole build ------------------------------------------------------------------------------------------
def discover_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Bag directories named by ``paths``: a bag directory itself, or a recordings directory (its
    ``episode_*`` and ``incomplete/episode_*`` directories, in order)."""
    from dream_vla_ros.record.episode import INCOMPLETE_DIR, INFO_FILE, episode_index

    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / "metadata.yaml").is_file() or (path / INFO_FILE).is_file() or not path.is_dir():
            out.append(path)
            continue
        children = [p for d in (path, path / INCOMPLETE_DIR) if d.is_dir() for p in sorted(d.iterdir())
                    if p.is_dir() and (episode_index(p.name) is not None or (p / "metadata.yaml").is_file())]
        out.extend(children or [path])
    return list(dict.fromkeys(out))


@dataclass
class BuildResult:
    meta: DatasetMeta | None
    report: dict[str, Any]


def build_dataset(paths: Sequence[str | Path], config: BuildConfig, log: Callable[[str], None] = print,
                  distro: str | None = None) -> BuildResult:
    """Build ``config.out`` from the bags at ``paths`` (see the module docstring). Nothing is written when no
    episode is usable (``meta`` None); the report says why."""
    from dream_vla_ros.record.bag import typestore_for

    started = time.perf_counter()
    out = Path(config.out)
    if (out / META_FILE).exists() and not config.overwrite:
        raise InputError(f"{out}: already holds a dataset (use overwrite to replace it)")
    typestore = typestore_for(distro)
    bags = discover_bags(paths)
    if not bags:
        raise InputError("no bag directories given")
    spec = _DatasetSpec()
    writer: DatasetWriter | None = None
    entries, reports, refused = [], [], []
    input_bytes = 0
    for path in bags:
        try:
            episode, report = build_episode(path, config, spec, typestore)
        except BagRefusedError as exc:
            refused.append({"bag": str(path), "reasons": exc.reasons})
            log(f"refused {path}: " + "; ".join(exc.reasons))
            continue
        if writer is None:
            writer = DatasetWriter(out, spec.joint_names, config.dt, spec.cameras, source=_source(config, bags),
                                   overwrite=config.overwrite)
        entry = writer.write(episode, len(entries))
        entries.append(entry)
        report["file"] = entry.file
        reports.append(report)
        input_bytes += int(report["input_mb"] * 1e6)
        log(f"{path.name}: {entry.length} frames ({report['duration_s']:.1f} s) {episode.instruction!r}")
    report: dict[str, Any] = {"dataset": str(out), "rate_hz": config.rate, "dt": config.dt, "episodes": reports,
                              "refused": refused}
    if writer is None:
        report["totals"] = {"episodes": 0, "refused": len(refused), "frames": 0}
        return BuildResult(None, report)
    phrasings: dict[str, dict[str, list[str]]] = {}
    for entry in entries:
        train = phrasings.setdefault(entry.task, {"train": [], "heldout": []})["train"]
        if entry.instruction not in train:
            train.append(entry.instruction)
    writer.phrasings = phrasings
    tasks = [e.task for e in entries]
    train_ids, val_ids = split_by_episode(tasks, config.val_fraction, config.seed)
    split = {"val_fraction": config.val_fraction, "seed": config.seed, "train": train_ids, "validation": val_ids}
    writer.source = {**writer.source, "split": split}
    meta = writer.finalize(entries)
    seconds = time.perf_counter() - started
    report.update(
        joint_names=list(meta.joint_names),
        cameras={name: {"height": h, "width": w} for name, (h, w) in meta.cameras.items()},
        totals={"episodes": len(entries), "refused": len(refused), "frames": meta.num_frames,
                "duration_s": round(sum(r["duration_s"] for r in reports), 3)},
        joint_ranges={kind: {j: [round(float(stats.min[i]), 4), round(float(stats.max[i]), 4)]
                             for i, j in enumerate(meta.joint_names)} for kind, stats in meta.stats.items()},
        split=split,
        throughput={"seconds": round(seconds, 3), "frames_per_s": round(meta.num_frames / seconds, 1),
                    "input_mb": round(input_bytes / 1e6, 2), "input_mb_per_s": round(input_bytes / 1e6 / seconds, 2)},
    )
    import json

    (out / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
    (out / REPORT_MD).write_text(markdown_report(report))
    return BuildResult(meta, report)


def _source(config: BuildConfig, bags: Sequence[Path]) -> dict[str, Any]:
    return {"generator": "dream-vla-ros dataset build", "bags": [str(p) for p in bags], "rate_hz": config.rate,
            "image_size": config.image_size, "max_gap": config.max_gap, "max_image_age": config.max_image_age,
            "trim_idle": config.trim_idle, "action_source": config.action_source or "as recorded",
            "interpolate_from_desired_state": config.interpolate_from_desired_state}


def markdown_report(report: dict[str, Any]) -> str:
    """The build report as Markdown (what ``report.md`` holds)."""
    totals = report.get("totals", {})
    lines = [f"# Dataset build: {report['dataset']}", "",
             f"- {totals.get('episodes', 0)} episode(s), {totals.get('frames', 0)} frames at {report['rate_hz']:g} Hz"
             f" ({totals.get('duration_s', 0)} s); {totals.get('refused', 0)} bag(s) refused"]
    if "throughput" in report:
        t = report["throughput"]
        lines.append(f"- Build: {t['seconds']} s, {t['frames_per_s']} frames/s, {t['input_mb']} MB of bags "
                     f"({t['input_mb_per_s']} MB/s)")
    if "split" in report:
        s = report["split"]
        lines.append(f"- Split by episode (val_fraction {s['val_fraction']}, seed {s['seed']}): train {s['train']}, "
                     f"validation {s['validation']}")
    if report["episodes"]:
        lines += ["", "| episode | bag | instruction | s | frames | trimmed | rates (Hz) | missing | misaligned | "
                  "recorder drops | rejected commands |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in report["episodes"]:
            rates = ", ".join(f"{t}: {s['rate_hz']}" for t, s in e["streams"].items())
            missing = sum(s["missing"] for s in e["streams"].values())
            lines.append(f"| {e['file']} | {Path(e['bag']).name} | {e['instruction']} | {e['duration_s']} | "
                         f"{e['frames']} | {e['trimmed_frames']} | {rates} | {missing} | "
                         f"{sum(e['misaligned_frames'].values())} | {sum(e['recorder_dropped'].values())} | "
                         f"{sum(e['action']['rejected'].values())} |")
    if report.get("joint_ranges"):
        lines += ["", "| joint | proprio min | proprio max | action min | action max |", "|---|---|---|---|---|"]
        for joint, (lo, hi) in report["joint_ranges"]["proprio"].items():
            alo, ahi = report["joint_ranges"]["actions"][joint]
            lines.append(f"| {joint} | {lo} | {hi} | {alo} | {ahi} |")
    if report["refused"]:
        lines += ["", "## Refused", ""]
        lines += [f"- `{r['bag']}`: " + "; ".join(r["reasons"]) for r in report["refused"]]
    return "\n".join(lines) + "\n"
