"""A **stand-in for MoveIt Servo's joint-jog path**, for tests and the simulated arm: control_msgs/JointJog
velocities in, trajectory_msgs/JointTrajectory commands to a JointTrajectoryController out.

It is **not** MoveIt Servo: no collision checking, no singularity or joint-limit handling, no smoothing, no
Cartesian inputs, no services. It only does what Servo does with a joint-jog command on its simplest path, so
the executor's ``servo`` output can be run closed loop where MoveIt is not installed:

- every ``publish_period`` s, if the newest command is fresh (``header.stamp`` within
  ``incoming_command_timeout`` of now, as Servo checks it), the commanded joint positions advance by
  velocity * elapsed time (joints not in the command hold; :mod:`dream_vla_ros.sim.jog_integrator`) and a
  JointTrajectory is published: the commanded positions continued at the commanded velocity for
  ``lookahead_points`` periods, with ``header.stamp`` = now (Servo too stamps its output in absolute time and
  sends several points, so a late timer tick neither jerks nor stalls the controller);
- the integration starts from the measured joint state, and again after every halt;
- when the commands stop (stale), it publishes one hold at the commanded positions and then nothing.

Run: ``python -m dream_vla_ros.nodes.sim.jog_integrator_node --ros-args -p
output_topic:=/arm_controller/joint_trajectory``. Not installed as an executable (it is a test and simulation
tool).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dream_vla_ros.configuration import require
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.controller_outputs import import_control_msgs
from dream_vla_ros.nodes.conversions import seconds_to_duration, seconds_to_stamp, stamp_to_seconds
from dream_vla_ros.sim.jog_integrator import JogIntegrator

NODE_NAME = "servo_node"


@dataclass(frozen=True)
class JogIntegratorConfig:
    """Parameters of the JointJog integrator (read at start).

    command_topic: control_msgs/JointJog input (MoveIt Servo's ``~/delta_joint_cmds``).
    joint_states_topic: sensor_msgs/JointState; the integration starts from it (all its joints are commanded).
    output_topic: trajectory_msgs/JointTrajectory output (the controller's ``joint_trajectory`` topic).
    publish_period: seconds between outputs (Servo's ``publish_period``).
    incoming_command_timeout: seconds after which a command is stale and the integrator halts.
    lookahead_points: points per output message, one period apart (rides out that many late ticks).
    """

    command_topic: str = "/servo_node/delta_joint_cmds"
    joint_states_topic: str = "/joint_states"
    output_topic: str = "/arm_controller/joint_trajectory"
    publish_period: float = 0.01
    incoming_command_timeout: float = 0.1
    lookahead_points: int = 5

    def __post_init__(self) -> None:
        require(1 <= self.lookahead_points <= 100, "lookahead_points",
                f"must be in [1, 100], got {self.lookahead_points}")
        for name in ("command_topic", "joint_states_topic", "output_topic"):
            require(bool(getattr(self, name)), name, "must be non-empty")
        for name in ("publish_period", "incoming_command_timeout"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0.0, name, f"must be > 0 s, got {value}")


class JogIntegratorNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self, JogIntegratorConfig)
        self.config = params.read(self, JogIntegratorConfig)
        jog_type = import_control_msgs("servo").msg.JointJog
        self._lock = threading.Lock()
        self._measured: tuple[list[str], np.ndarray] | None = None
        self._command: tuple[float, dict[str, float]] | None = None
        self._integrator = JogIntegrator(self.config.incoming_command_timeout)
        self.commands = 0
        self._publisher = self.create_publisher(JointTrajectory, self.config.output_topic, qos.CONTROLLER)
        self.create_subscription(jog_type, self.config.command_topic, self._on_jog, qos.CONTROLLER)
        self.create_subscription(JointState, self.config.joint_states_topic, self._on_joint_state, qos.SENSOR)
        self.create_timer(self.config.publish_period, self._on_timer)
        self.get_logger().info(f"JointJog integrator (a MoveIt Servo stand-in, not Servo): "
                               f"{self.config.command_topic} -> {self.config.output_topic}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            self._measured = (list(msg.name), np.asarray(msg.position, dtype=float))

    def _on_jog(self, msg) -> None:
        velocities = {name: float(v) for name, v in zip(msg.joint_names, msg.velocities, strict=False)
                      if math.isfinite(v)}
        with self._lock:
            self._command = (stamp_to_seconds(msg.header.stamp), velocities)
            self.commands += 1

    def _on_timer(self) -> None:
        now = self._now()
        with self._lock:
            command, measured = self._command, self._measured
        out = self._integrator.update(now, command, measured)
        if out is not None:
            self._publish(now, *out, self.config.publish_period)

    def _publish(self, now: float, q: np.ndarray, v: np.ndarray, period: float) -> None:
        msg = JointTrajectory(joint_names=list(self._integrator.names))
        msg.header.stamp = seconds_to_stamp(now)
        msg.points = [
            JointTrajectoryPoint(positions=(q + v * period * i).tolist(), velocities=v.tolist(),
                                 time_from_start=seconds_to_duration(period * i))
            for i in range(1, self.config.lookahead_points + 1)
        ]
        self._publisher.publish(msg)


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.runtime import run

    return run([JogIntegratorNode], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
