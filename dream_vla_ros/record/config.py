"""Parameters of the recorder (ROS-free; the node declares one ROS parameter per field, see ``nodes/params``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from dream_vla_ros.configuration import require
from dream_vla_ros.errors import ConfigError

# Parameters that may change while the node runs (they label the next episode).
EPISODE_PARAMETERS = ("task", "instruction")

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_IMAGE_SUFFIXES = {"compressed", "image_raw", "image", "image_rect", "image_color", "image_rect_color"}


def camera_name(topic: str) -> str:
    """A dataset camera name from a topic: ``/wrist/image_raw`` -> ``wrist``, ``/cam/color/image_raw`` ->
    ``cam_color``, ``/camera/image_raw/compressed`` -> ``camera``."""
    parts = [p for p in topic.split("/") if p]
    while len(parts) > 1 and parts[-1] in _IMAGE_SUFFIXES:
        parts.pop()
    return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(parts)) or "camera"


@dataclass(frozen=True)
class RecorderConfig:
    """Recorder node parameters (read at start, except ``task`` and ``instruction``).

    out_dir: directory receiving one rosbag2 directory per kept episode (episode_NNNNNN); the episode being
        recorded lives in <out_dir>/incomplete/ until it is stopped.
    camera_topics: camera topics, in camera order: sensor_msgs/Image, or sensor_msgs/CompressedImage for a
        topic ending in /compressed.
    camera_names: dataset camera name per camera topic (empty: derived from the topic, /wrist/image_raw ->
        wrist).
    joint_states_topic: sensor_msgs/JointState of the arm (the proprioception of the dataset).
    action_source: where the action targets come from: trajectory (trajectory_msgs/JointTrajectory commands
        sent to the controller) or leader (sensor_msgs/JointState of a leader arm, leader-follower teleop).
    action_topics: the action source's topics (trajectory: one per controller; leader: the leader's joint
        states).
    goal_topic: std_msgs/String language goal (reliable, transient local); recorded, and its latest text is
        the episode's instruction when the instruction parameter is empty.
    extra_topics: further topics recorded as they are (their type is looked up in the ROS graph).
    task: task label of the next episode (free-form; empty = the instruction); may change at run time.
    instruction: instruction of the next episode (empty = the latest goal message); may change at run time.
    require_instruction: refuse ~/start while there is no instruction.
    require_publishers: refuse ~/start while a camera, joint-state or action topic has no publisher.
    sensor_reliability: best_effort or reliable for cameras, joint states and leader joint states (best
        effort matches every publisher; reliable matches reliable publishers only).
    camera_queue_depth: subscription history of each camera topic, in messages.
    queue_depth: subscription history of every other topic, in messages.
    max_backlog_mb: MB of received messages waiting for the disk; beyond it new messages are dropped (and
        counted) instead of growing memory.
    flush_period: s between flushes of buffered messages into the file; a killed recorder loses at most about
        this much plus the backlog.
    compression: none or zstd (MCAP chunk compression: smaller bags, more CPU).
    max_episode_duration: s after which an episode is stopped and kept automatically (0 = no limit).
    min_free_space: GB of free disk in out_dir below which diagnostics warn.
    stop_free_space: GB of free disk below which ~/start is refused and a running episode is stopped and kept.
    diagnostics_period: s between /diagnostics messages.
    """

    out_dir: str = "recordings"
    camera_topics: tuple[str, ...] = ("/camera/image_raw",)
    camera_names: tuple[str, ...] = ()
    joint_states_topic: str = "/joint_states"
    action_source: Literal["trajectory", "leader"] = "trajectory"
    action_topics: tuple[str, ...] = ("/arm_controller/joint_trajectory",)
    goal_topic: str = "/goal"
    extra_topics: tuple[str, ...] = ()
    task: str = ""
    instruction: str = ""
    require_instruction: bool = True
    require_publishers: bool = True
    sensor_reliability: Literal["best_effort", "reliable"] = "best_effort"
    camera_queue_depth: int = 10
    queue_depth: int = 200
    max_backlog_mb: float = 512.0
    flush_period: float = 1.0
    compression: Literal["none", "zstd"] = "none"
    max_episode_duration: float = 0.0
    min_free_space: float = 2.0
    stop_free_space: float = 0.5
    diagnostics_period: float = 1.0

    def __post_init__(self) -> None:
        require(bool(self.out_dir), "out_dir", "must be non-empty")
        require(len(self.camera_topics) >= 1, "camera_topics", "at least one camera topic is needed")
        require(not self.camera_names or len(self.camera_names) == len(self.camera_topics), "camera_names",
                f"{len(self.camera_names)} names for {len(self.camera_topics)} camera topics")
        for name in self.camera_names:
            require(bool(_NAME.match(name)), "camera_names", f"{name!r} must use only letters, digits, '_' and '-'")
        names = self.cameras
        require(len(set(names.values())) == len(names) and len(names) == len(self.camera_topics), "camera_names",
                f"cameras need distinct names and topics, got {list(zip(self.camera_topics, names, strict=False))};"
                " set camera_names")
        require(len(self.action_topics) >= 1, "action_topics", "at least one action topic is needed")
        topics = [*self.camera_topics, self.joint_states_topic, *self.action_topics, *self.extra_topics]
        if self.goal_topic:
            topics.append(self.goal_topic)
        require(all(topics), "topics", "topic names must be non-empty")
        duplicates = sorted({t for t in topics if topics.count(t) > 1})
        require(not duplicates, "topics", f"each topic may have one role only: {', '.join(duplicates)}")
        require(1 <= self.camera_queue_depth <= 10000, "camera_queue_depth", "must be in [1, 10000]")
        require(1 <= self.queue_depth <= 100000, "queue_depth", "must be in [1, 100000]")
        require(math.isfinite(self.max_backlog_mb) and self.max_backlog_mb > 0, "max_backlog_mb", "must be > 0 MB")
        require(0.05 <= self.flush_period <= 60.0, "flush_period", f"must be in [0.05, 60] s, got {self.flush_period}")
        require(self.max_episode_duration >= 0, "max_episode_duration", "must be >= 0 s")
        require(self.stop_free_space >= 0 and self.min_free_space >= self.stop_free_space, "min_free_space",
                "need min_free_space >= stop_free_space >= 0 (GB)")
        require(self.diagnostics_period > 0, "diagnostics_period", "must be > 0 s")

    @property
    def cameras(self) -> dict[str, str]:
        """Camera topic -> dataset camera name."""
        if self.camera_names:
            return dict(zip(self.camera_topics, self.camera_names, strict=True))
        return {topic: camera_name(topic) for topic in self.camera_topics}

    def roles(self) -> dict[str, str]:
        """Topic -> role (camera, joint_states, action, goal, extra) for every configured topic."""
        out = dict.fromkeys(self.camera_topics, "camera")
        out[self.joint_states_topic] = "joint_states"
        out.update(dict.fromkeys(self.action_topics, "action"))
        if self.goal_topic:
            out[self.goal_topic] = "goal"
        out.update(dict.fromkeys(self.extra_topics, "extra"))
        return out

    def message_type(self, topic: str) -> str:
        """The message type a configured topic carries ("" for extra topics: looked up in the graph)."""
        role = self.roles().get(topic)
        if role is None:
            raise ConfigError(f"{topic}: not a configured topic")
        if role == "camera":
            return "sensor_msgs/msg/CompressedImage" if topic.rstrip("/").endswith("/compressed") else \
                "sensor_msgs/msg/Image"
        if role == "joint_states" or (role == "action" and self.action_source == "leader"):
            return "sensor_msgs/msg/JointState"
        if role == "action":
            return "trajectory_msgs/msg/JointTrajectory"
        if role == "goal":
            return "std_msgs/msg/String"
        return ""
