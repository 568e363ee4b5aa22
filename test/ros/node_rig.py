"""A probe for the policy node and the chunk executor: plays cameras, joint states, goal, controllers.

The probe runs in the test process on the harness's private domain. A feed timer publishes every camera and
the joint states at 50 Hz from replaceable *producers* (a fault swaps one producer for a bad one); it records
every chunk, every controller window (checking the joint limits on each), every chunk request and the latest
``/diagnostics`` status per name. Waits spin the probe until a condition holds.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

PEERS = Path(__file__).parent / "peers"
MODEL_JOINTS = ("joint_a", "joint_b", "gripper")
ROBOT_JOINTS = ("shoulder", "elbow", "finger")
CAMERAS = {"main": "/cam/main/image_raw", "wrist": "/cam/wrist/image_raw/compressed"}
WIDTH, HEIGHT = 64, 48
HOME = (0.1, -0.2, 0.0)
LIMITS = {"position_min": [-3.0], "position_max": [3.0], "max_velocity": [1.0], "max_acceleration": [5.0]}


def make_model(directory: Path, **changes: Any) -> Path:
    """The ``tiny`` preset with random weights and two cameras (main: Image, wrist: CompressedImage);
    ``changes`` replace fields of its ModelConfig."""
    import dataclasses

    from dream_vla_ros.policy.checkpoint import save_checkpoint
    from dream_vla_ros.policy.config import preset
    from dream_vla_ros.policy.model import build_model

    config = preset("tiny", **changes)
    config = dataclasses.replace(config, vision=dataclasses.replace(config.vision, cameras=tuple(CAMERAS)))
    save_checkpoint(build_model(config), directory)
    return directory


def policy_params(model: Path, **changes: Any) -> dict[str, Any]:
    params = {
        "model": str(model),
        "threads": 1,
        "warmup_runs": 1,
        "camera_topics": list(CAMERAS.values()),
        "image_width": WIDTH,
        "image_height": HEIGHT,
        "joint_names": list(ROBOT_JOINTS),
        "joint_states_topic": "/joint_states",
        "goal_topic": "/goal",
        "max_image_age": 1.0,
        "max_joint_state_age": 1.0,
        "max_sync_skew": 0.2,
        "diagnostics_period": 0.1,
    }
    params.update(changes)
    return params


def executor_params(**changes: Any) -> dict[str, Any]:
    params = {
        "controller": "arm_controller",
        "joint_controllers": ["arm_controller", "arm_controller", "gripper_controller"],
        "joint_states_topic": "/joint_states",
        "max_joint_state_age": 0.5,
        "diagnostics_period": 0.1,
        "chunking": {"joint_names": list(ROBOT_JOINTS), "control_period": 0.01, "limits": LIMITS},
    }
    params.update(changes)
    return params


def write_params(path: Path, **sections: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({name: {"ros__parameters": p} for name, p in sections.items()}))
    return path


@dataclass
class Status:
    level: int
    message: str
    values: dict[str, str]
    received: float


@dataclass
class Chunk:
    received: float
    stamp: float
    msg: Any


@dataclass
class Rig:
    """The probe; ``ros`` is a ``ros_harness.RosTestBed``."""

    ros: Any
    chunk_topic: str = "/policy_node/action_chunk"
    act_as_executor: bool = False
    chunks: list[Chunk] = field(default_factory=list)
    windows: dict[str, list] = field(default_factory=dict)
    requests: list = field(default_factory=list)
    status: dict[str, Status] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    published_stamps: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Header, String
        from trajectory_msgs.msg import JointTrajectory

        from dream_vla_ros.nodes import qos

        node = self.ros.node
        self.node = node
        self._pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.image_pubs = {
            name: node.create_publisher(CompressedImage if topic.endswith("/compressed") else Image, topic, qos.SENSOR)
            for name, topic in CAMERAS.items()
        }
        self.joint_pub = node.create_publisher(JointState, "/joint_states", qos.SENSOR)
        self.goal_pub = node.create_publisher(String, "/goal", qos.GOAL)
        self.chunk_pub = node.create_publisher(JointTrajectory, self.chunk_topic, qos.CHUNK)
        self.request_pub = node.create_publisher(Header, "/chunk_executor/chunk_request", qos.REQUEST)
        node.create_subscription(JointTrajectory, self.chunk_topic, self._on_chunk, qos.CHUNK)
        node.create_subscription(Header, "/chunk_executor/chunk_request", self.requests.append, qos.REQUEST)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.controller_subs: dict[str, Any] = {}
        for controller in ("arm_controller", "gripper_controller"):
            self.subscribe_controller(controller)
        self.image_producers: dict[str, Callable[[Any], Any] | None] = {}
        self.joint_producer: Callable[[Any], Any] | None = None
        self.restore_producers()
        self._compressed = self._encode(self._pixels)
        node.create_timer(0.02, self._feed)
        if self.act_as_executor:
            node.create_timer(0.05, self._request)

    # -- clock and waits -------------------------------------------------------------------------------------
    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def wait(self, condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        try:
            return self.ros.spin_until(condition, timeout, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.report()}") from None

    def wait_until(self, t: float) -> None:
        self.wait(lambda: self.now() >= t, timeout=max(1.0, t - self.now() + 5.0), what=f"time {t:.2f}")

    def report(self) -> str:
        summary = {name: (s.level, s.message[:160]) for name, s in self.status.items()}
        return f"statuses: {summary}\nchunks: {len(self.chunks)}\n{self.ros.outputs()}"

    # -- producers -------------------------------------------------------------------------------------------
    def _encode(self, rgb: np.ndarray) -> bytes:
        import cv2

        ok, data = cv2.imencode(".png", rgb[..., ::-1])
        assert ok
        return data.tobytes()

    def good_image(self, camera: str, encoding: str = "rgb8"):
        from sensor_msgs.msg import CompressedImage

        from dream_vla_ros.nodes.conversions import rgb_to_image

        if CAMERAS[camera].endswith("/compressed"):
            return lambda stamp: self._stamped(CompressedImage(format="png", data=self._compressed), stamp)
        return lambda stamp: rgb_to_image(self._pixels, encoding, stamp)

    def good_joints(self, names=ROBOT_JOINTS, positions=HOME):
        from sensor_msgs.msg import JointState

        def make(stamp):
            msg = JointState(name=list(names), position=[float(p) for p in positions])
            msg.header.stamp = stamp
            return msg

        return make

    @staticmethod
    def _stamped(msg, stamp):
        msg.header.stamp = stamp
        return msg

    def restore_producers(self) -> None:
        self.image_producers = {name: self.good_image(name) for name in CAMERAS}
        self.joint_producer = self.good_joints()

    def _feed(self) -> None:
        """Publish what every producer makes of this tick's stamp (a producer may return None: nothing)."""
        stamp = self.node.get_clock().now().to_msg()
        for camera, producer in self.image_producers.items():
            msg = producer(stamp) if producer is not None else None
            if msg is not None:
                if camera == "main":
                    self.published_stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
                    del self.published_stamps[:-500]
                self.image_pubs[camera].publish(msg)
        msg = self.joint_producer(stamp) if self.joint_producer is not None else None
        if msg is not None:
            self.joint_pub.publish(msg)

    def _request(self) -> None:
        from std_msgs.msg import Header

        msg = Header(frame_id=f"probe/{len(self.chunks)}")
        msg.stamp = self.node.get_clock().now().to_msg()
        self.request_pub.publish(msg)

    # -- goal, chunks, controllers ---------------------------------------------------------------------------
    def set_goal(self, text: str) -> None:
        from std_msgs.msg import String

        self.goal_pub.publish(String(data=text))

    def publish_raw_goal(self, payload: bytes) -> None:
        """A std_msgs/String whose bytes are ``payload`` on the wire (e.g. invalid UTF-8)."""
        size = len(payload) + 1
        self.goal_pub.publish(b"\x00\x01\x00\x00" + size.to_bytes(4, "little") + payload + b"\x00")

    def publish_chunk(self, positions, names=ROBOT_JOINTS, t0: float | None = None, dt: float = 0.05,
                      times=None) -> None:
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from dream_vla_ros.nodes.conversions import seconds_to_duration, seconds_to_stamp

        msg = JointTrajectory(joint_names=list(names))
        msg.header.stamp = seconds_to_stamp(self.now() if t0 is None else t0)
        times = times or [(i + 1) * dt for i in range(len(positions))]
        msg.points = [
            JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=seconds_to_duration(t))
            for row, t in zip(positions, times, strict=True)
        ]
        self.chunk_pub.publish(msg)

    def _on_chunk(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.chunks.append(Chunk(self.now(), stamp, msg))

    def subscribe_controller(self, controller: str) -> None:
        from trajectory_msgs.msg import JointTrajectory

        from dream_vla_ros.nodes import qos

        self.windows.setdefault(controller, [])

        def on_window(msg, controller=controller):
            self.windows[controller].append((self.now(), msg))
            del self.windows[controller][:-200]
            for point in msg.points:
                for name, q, v in zip(msg.joint_names, point.positions, point.velocities, strict=True):
                    if not (math.isfinite(q) and math.isfinite(v) and -3.0 - 1e-6 <= q <= 3.0 + 1e-6
                            and abs(v) <= 1.0 + 1e-6):
                        self.violations.append(f"{controller} {name}: q={q} v={v}")

        self.controller_subs[controller] = self.node.create_subscription(
            JointTrajectory, f"/{controller}/joint_trajectory", on_window, qos.CONTROLLER
        )

    def unsubscribe_controller(self, controller: str) -> None:
        self.node.destroy_subscription(self.controller_subs.pop(controller))

    def at_rest(self, controller: str = "arm_controller", after: float = 0.0) -> bool:
        """The newest window (received after ``after``) holds still: zero velocity everywhere."""
        windows = [w for t, w in self.windows[controller] if t > after]
        return bool(windows) and all(not any(p.velocities) for p in windows[-1].points)

    # -- diagnostics -----------------------------------------------------------------------------------------
    def _on_diagnostics(self, msg) -> None:
        now = self.now()
        for s in msg.status:
            level = s.level[0] if isinstance(s.level, bytes) else int(s.level)
            self.status[s.name] = Status(level, s.message, {kv.key: kv.value for kv in s.values}, now)

    def value(self, node: str, key: str, default: str = "") -> str:
        status = self.status.get(node)
        return status.values.get(key, default) if status else default

    def cause_status(self, node: str, needle: str, after: float = 0.0) -> Status | None:
        """The per-cause status of ``node`` whose message holds ``needle`` (WARN or ERROR), if any."""
        for name, status in self.status.items():
            if name.startswith(f"{node}: ") and status.level > 0 and needle in status.message \
                    and status.received > after:
                return status
        return None

    def mode(self) -> str:
        return self.value("chunk_executor", "mode")

    # -- processes -------------------------------------------------------------------------------------------
    def log_lines(self, process: str) -> list[str]:
        return self.ros.processes.output(process).splitlines()

    def cause_lines(self, process: str, needle: str, since: int = 0) -> list[str]:
        return [line for line in self.log_lines(process)[since:]
                if needle in line and ("[WARN]" in line or "[ERROR]" in line)]

    def alive(self, process: str) -> bool:
        return self.ros.processes.processes[process].running

    def kill(self, process: str) -> None:
        os.killpg(self.ros.processes.processes[process].popen.pid, signal.SIGKILL)
        self.ros.processes.processes[process].popen.wait(10)

    def call_trigger(self, service: str):
        from std_srvs.srv import Trigger

        return self.ros.call(self.node.create_client(Trigger, service), Trigger.Request())

    def lifecycle(self, transition: str, node: str = "policy_node") -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN,
               "active_shutdown": Transition.TRANSITION_ACTIVE_SHUTDOWN}
        client = self._client(ChangeState, f"/{node}/change_state")
        return bool(self.ros.call(client, ChangeState.Request(transition=Transition(id=ids[transition])), 30).success)

    def lifecycle_state(self, node: str = "policy_node") -> str:
        from lifecycle_msgs.srv import GetState

        return self.ros.call(self._client(GetState, f"/{node}/get_state"), GetState.Request()).current_state.label

    def set_parameters(self, node: str = "policy_node", **values: Any) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        request = SetParameters.Request(parameters=parameters)
        response = self.ros.call(self._client(SetParameters, f"/{node}/set_parameters"), request)
        assert all(r.successful for r in response.results), response

    def _client(self, srv_type, name: str):
        key = (srv_type, name)
        cache = self.__dict__.setdefault("_clients", {})
        if key not in cache:
            cache[key] = self.node.create_client(srv_type, name)
        return cache[key]


def start_node(ros, name: str, module: str, params: Path, *extra: str) -> None:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PEERS), os.environ.get("PYTHONPATH", "")]))}
    ros.start(name, [sys.executable, "-m", module, "--ros-args", "--params-file", str(params), *extra], env)
