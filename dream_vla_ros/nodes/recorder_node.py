"""The recorder node: demonstrations over ROS 2 into one rosbag2 (MCAP) directory per episode.

Interfaces (names relative to the node's namespace; ``~`` = the node's name, ``recorder`` by default):

- subscribes, with ``raw=True`` (the serialized CDR bytes, never deserialised or re-encoded on the way to the
  bag), every configured topic: ``camera_topics`` (sensor_msgs/Image, or CompressedImage for ``.../compressed``),
  ``joint_states_topic`` (sensor_msgs/JointState), ``action_topics`` (trajectory_msgs/JointTrajectory for
  ``action_source: trajectory``, reliable like the JointTrajectoryController; sensor_msgs/JointState of a
  leader arm for ``leader``), ``goal_topic`` (std_msgs/String, reliable + transient local: the current goal
  arrives on start and is the episode's instruction unless the ``instruction`` parameter is set) and
  ``extra_topics`` (type and QoS looked up from their publishers). Cameras and joint states use
  ``sensor_reliability`` (best effort by default: matches any publisher) with ``camera_queue_depth`` /
  ``queue_depth`` of history;
- services (std_srvs/Trigger): ``~/start`` starts an episode labelled with the ``task`` and ``instruction``
  parameters (set them first, e.g. ``ros2 param set /recorder instruction "open the drawer"``; the goal topic
  stands in for an empty instruction); ``~/stop`` stops it and keeps it; ``~/discard`` stops it and deletes
  it. ``message`` is a JSON object (the episode, its path, counts and warnings) or, with ``success`` false,
  the reason;
- publishes ``~/events`` (std_msgs/String, one JSON object per start / stop / discard, reliable, transient
  local, keep last 10) and ``/diagnostics`` (state, episode length, disk free, backlog, per topic: received,
  written, dropped because the disk fell behind, lost as reported by the middleware, missing from header
  stamp gaps; WARN below ``min_free_space``, ERROR below ``stop_free_space`` or on a write failure).

Bag layout and crash safety: see :mod:`dream_vla_ros.record`. On SIGINT/SIGTERM a running episode is closed
readable and marked ``interrupted``; after SIGKILL it stays in ``<out_dir>/incomplete/`` (``dream-vla-ros
record repair <out_dir>`` salvages it). Bag timestamps are receive times on this node's clock (ROS time with
``use_sim_time``); header stamps stay inside the messages.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from dream_vla_ros.errors import DreamVlaError
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.diagnostics import Diagnostics
from dream_vla_ros.nodes.health import cause_key
from dream_vla_ros.record.bag import typestore_for
from dream_vla_ros.record.config import EPISODE_PARAMETERS, RecorderConfig
from dream_vla_ros.record.episode import RecorderError
from dream_vla_ros.record.recorder import Recorder

NODE_NAME = "recorder"

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks


def message_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class RecorderNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from dream_vla_ros.environment_report import ros_distro

        params.declare(self, RecorderConfig)
        config = params.read(self, RecorderConfig)
        # Topic names resolved in this node's namespace (camera names come from the names as written).
        resolve = self.resolve_topic_name
        self.config = dataclasses.replace(
            config,
            camera_topics=tuple(resolve(t) for t in config.camera_topics),
            camera_names=tuple(config.cameras.values()),
            joint_states_topic=resolve(config.joint_states_topic),
            action_topics=tuple(resolve(t) for t in config.action_topics),
            goal_topic=resolve(config.goal_topic) if config.goal_topic else "",
            extra_topics=tuple(resolve(t) for t in config.extra_topics),
        )
        config = self.config
        distro = ros_distro()
        if self.get_parameter("use_sim_time").value:
            clock = self.get_clock()
            self._now_ns = lambda: clock.now().nanoseconds
        else:
            self._now_ns = time.time_ns
        self.recorder = Recorder(config, typestore_for(distro), clock_ns=self._now_ns, log=self._log,
                                 node_name=self.get_fully_qualified_name(), distro=distro)
        self._io_group = MutuallyExclusiveCallbackGroup()
        control_group = MutuallyExclusiveCallbackGroup()
        self._subscribed: set[str] = set()
        self.diagnostics = Diagnostics(self, self.recorder.snapshot, config.diagnostics_period,
                                       callback_group=control_group)
        for topic, role in config.roles().items():
            if role != "extra":
                self._subscribe(topic, config.message_type(topic), role)
        if config.extra_topics:
            self._discover()
            self.create_timer(1.0, self._discover, callback_group=control_group)
        self._events = self.create_publisher(String, "~/events", qos.EVENTS)
        self.create_service(Trigger, "~/start", self._on_start, callback_group=control_group)
        self.create_service(Trigger, "~/stop", self._on_stop, callback_group=control_group)
        self.create_service(Trigger, "~/discard", self._on_discard, callback_group=control_group)
        self.create_timer(config.diagnostics_period, self._poll, callback_group=control_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        cameras = ", ".join(f"{name}={topic}" for topic, name in config.cameras.items())
        self.get_logger().info(
            f"recorder: cameras {cameras}; joint states {config.joint_states_topic}; actions ({config.action_source}) "
            f"{', '.join(config.action_topics)}; goal {config.goal_topic or '-'}; episodes -> {self.recorder.root}"
        )

    def _log(self, line: str) -> None:
        self.get_logger().info(line)

    # -- subscriptions ----------------------------------------------------------------------------------------
    def _qos(self, role: str, topic: str) -> QoSProfile:
        config = self.config
        sensor = ReliabilityPolicy.RELIABLE if config.sensor_reliability == "reliable" else \
            ReliabilityPolicy.BEST_EFFORT
        depth = config.camera_queue_depth if role == "camera" else config.queue_depth
        durability = DurabilityPolicy.VOLATILE
        if role == "goal":
            reliability, durability, depth = ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL, 10
        elif role == "action" and config.action_source == "trajectory":
            reliability = ReliabilityPolicy.RELIABLE
        elif role == "extra":
            offered = [i.qos_profile for i in self.get_publishers_info_by_topic(topic)]
            reliable = offered and all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
            latched = offered and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
            reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
            durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
        else:
            reliability = sensor
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)

    def _subscribe(self, topic: str, msgtype: str, role: str, type_hash: str = "") -> None:
        try:
            cls = message_class(msgtype)
            self.recorder.add_topic(topic, msgtype, role, type_hash)
        except (DreamVlaError, ImportError, AttributeError, ValueError) as exc:
            self.diagnostics.report(f"topic {topic}", cause_key(str(exc)), f"cannot record {msgtype}: {exc}")
            return
        on_message, now = self.recorder.on_message, self._now_ns

        def callback(raw: bytes, topic: str = topic) -> None:
            on_message(topic, raw, now())

        def on_lost(info, topic: str = topic) -> None:
            self.recorder.on_lost(topic, int(info.total_count_change))

        profile = self._qos(role, topic)
        try:
            self.create_subscription(cls, topic, callback, profile, callback_group=self._io_group, raw=True,
                                     event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
        except Exception:  # noqa: BLE001 - a middleware without the message-lost event: record without it
            self.create_subscription(cls, topic, callback, profile, callback_group=self._io_group, raw=True)
        self._subscribed.add(topic)

    def _discover(self) -> None:
        """Subscribe extra topics once a publisher shows their type."""
        for topic in self.config.extra_topics:
            if topic in self._subscribed:
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if infos:
                info = infos[0]
                self._subscribe(topic, info.topic_type, "extra", str(getattr(info, "topic_type_hash", "") or ""))

    # -- episodes ---------------------------------------------------------------------------------------------
    def publishers(self) -> dict[str, list[tuple[str, str]]]:
        """Topic -> [(type, type hash)] of the publishers of every recorded topic."""
        return {topic: [(i.topic_type, str(getattr(i, "topic_type_hash", "") or ""))
                        for i in self.get_publishers_info_by_topic(topic)]
                for topic in self.recorder.topics}

    def start_episode(self) -> dict[str, Any]:
        info = self.recorder.start(self.publishers())
        self._event("start", info)
        return info

    def stop_episode(self, keep: bool = True) -> dict[str, Any]:
        summary = self.recorder.stop(keep=keep)
        self._event("stop" if keep else "discard", summary)
        return summary

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self._events.publish(String(data=json.dumps({"event": kind, **data})))

    def _answer(self, response, action):
        try:
            response.success, response.message = True, json.dumps(action())
        except RecorderError as exc:
            response.success, response.message = False, str(exc)
        return response

    def _on_start(self, request, response):
        return self._answer(response, self.start_episode)

    def _on_stop(self, request, response):
        return self._answer(response, lambda: self.stop_episode(keep=True))

    def _on_discard(self, request, response):
        return self._answer(response, lambda: self.stop_episode(keep=False))

    def _poll(self) -> None:
        was_recording = self.recorder.recording
        for slot, level, message in self.recorder.poll():
            if level:
                self.diagnostics.report(slot, cause_key(message), message, level)
            else:
                self.diagnostics.clear(slot)
        if was_recording and not self.recorder.recording:
            self._event("stop", {"reason": "automatic stop (see the log)"})

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        fields = {f.name for f in dataclasses.fields(RecorderConfig)}
        for parameter in parameters:
            if parameter.name in fields and parameter.name not in EPISODE_PARAMETERS:
                return SetParametersResult(successful=False,
                                           reason=f"{parameter.name} is read at start; restart the node to change it")
        for parameter in parameters:
            if parameter.name in EPISODE_PARAMETERS:
                if not isinstance(parameter.value, str):
                    return SetParametersResult(successful=False, reason=f"{parameter.name} must be a string")
                setattr(self.recorder, parameter.name, parameter.value.strip())
        return SetParametersResult(successful=True)

    def close(self) -> None:
        """Shutdown: an episode still running is closed readable and marked interrupted."""
        try:
            summary = self.recorder.close()
        except RecorderError as exc:
            self.get_logger().error(str(exc))
            return
        if summary is not None:
            self.get_logger().warning(f"{summary['episode']}: closed on shutdown, marked interrupted -> "
                                      f"{summary['path']}")


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.runtime import run

    return run([RecorderNode], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
