"""Reading recorded episode bags: which topics an episode's build reads, their messages, camera frames as arrays.

Stamps stay integer nanoseconds here: header stamps of images (:func:`~dream_vla_ros.record.bag.header_stamp_ns`)
and joint states, the bag's receive time where a header stamp is 0; commands keep both their receive time and
their header stamp (0 = start on receipt). Camera messages stay raw until a frame is needed (:func:`decode_image`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.train.bag_config import BuildConfig

NS = 1_000_000_000
"""Nanoseconds per second."""
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")

JointSample = tuple[int, tuple[str, ...], np.ndarray, np.ndarray]
"""One JointState: stamp ns, joint names, positions, velocities."""
CommandSample = tuple[int, int, Any]
"""One JointTrajectory: receive time ns, header stamp ns, the message."""


@dataclass(frozen=True)
class EpisodeTopics:
    """The topics one episode's build reads: camera name -> topic, joint states, the action source
    (``trajectory`` or ``leader``) and its topics."""

    cameras: dict[str, str]
    joint_states: str
    source: str
    actions: tuple[str, ...]


def episode_topics(config: BuildConfig, info: dict[str, Any], types: dict[str, str]) -> EpisodeTopics:
    """The build's topics: ``config``'s overrides, else the episode record ``info``, else the defaults (every
    image topic a camera named by :func:`~dream_vla_ros.record.config.camera_name`)."""
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
    return EpisodeTopics(
        cameras=cameras,
        joint_states=config.joint_states_topic or info.get("joint_states") or "/joint_states",
        source=source,
        actions=tuple(config.action_topics) or tuple(action.get("topics") or default_actions),
    )


@dataclass(frozen=True)
class BagStreams:
    """What one bag holds on the topics the build reads.

    topics: those topics; types / counts: every topic's message type and count; images: camera topic ->
    (stamps, raw messages); joints: joint-state topic -> samples; commands: trajectory topic -> samples;
    goals: the instructions published on the goal topic; bytes: size of the bag's files.
    """

    topics: EpisodeTopics
    types: dict[str, str]
    counts: dict[str, int]
    images: dict[str, tuple[list[int], list[bytes]]]
    joints: dict[str, list[JointSample]]
    commands: dict[str, list[CommandSample]]
    goals: list[str]
    bytes: int


def _stamp_or(stamp: Any, fallback: int) -> int:
    value = int(stamp.sec) * NS + int(stamp.nanosec)
    return value if value > 0 else fallback


def read_streams(path: Path, typestore, config: BuildConfig, info: dict[str, Any]) -> BagStreams:
    """The bag's messages on the topics :func:`episode_topics` chooses (and the goal topic)."""
    from rosbags.rosbag2 import Reader

    from dream_vla_ros.record.bag import header_stamp_ns

    types: dict[str, str] = {}
    counts: dict[str, int] = {}
    images: dict[str, tuple[list[int], list[bytes]]] = {}
    joints: dict[str, list[JointSample]] = {}
    commands: dict[str, list[CommandSample]] = {}
    goals: list[str] = []
    with Reader(path) as reader:
        for connection in reader.connections:
            types[connection.topic] = connection.msgtype
            counts[connection.topic] = counts.get(connection.topic, 0) + connection.msgcount
        topics = episode_topics(config, info, types)
        roles = dict.fromkeys(topics.cameras.values(), "camera")
        roles[topics.joint_states] = "joint_states"
        roles.update(dict.fromkeys(topics.actions, "action"))
        roles.update({t: "goal" for t, ty in types.items() if ty == "std_msgs/msg/String" and t == info.get("goal", t)})
        wanted = [c for c in reader.connections if c.topic in roles]
        for connection, timestamp, raw in reader.messages(connections=wanted) if wanted else ():  # [] = all
            topic, msgtype = connection.topic, connection.msgtype
            if roles[topic] == "camera":
                times, frames = images.setdefault(topic, ([], []))
                times.append(header_stamp_ns(raw) or timestamp)
                frames.append(raw)
                continue
            msg = typestore.deserialize_cdr(raw, msgtype)
            if msgtype == "std_msgs/msg/String":
                goals.append(str(msg.data))
            elif msgtype == "sensor_msgs/msg/JointState":
                joints.setdefault(topic, []).append(
                    (_stamp_or(msg.header.stamp, timestamp), tuple(msg.name),
                     np.asarray(msg.position, dtype=np.float64), np.asarray(msg.velocity, dtype=np.float64)))
            elif msgtype == "trajectory_msgs/msg/JointTrajectory":
                commands.setdefault(topic, []).append(
                    (timestamp, int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec), msg))
    return BagStreams(topics, types, counts, images, joints, commands, goals,
                      bytes=sum(p.stat().st_size for p in path.glob("*.mcap")))


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


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` px, keeping the aspect ratio (0 = unchanged)."""
    h, w = image.shape[:2]
    if size == 0 or min(h, w) == size:
        return image
    from dream_vla_ros.policy.resize import resize

    scale = size / min(h, w)
    return resize(image, max(1, round(w * scale)), max(1, round(h * scale)))


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
