"""The simulated arm node over real DDS: reset and instruction, sensor streams, JTC semantics, expert replay."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dream_vla_ros.bringup import describe

pytestmark = [pytest.mark.ros, pytest.mark.sim]

NODE = "/sim_arm"
SMALL = {"width": 64, "height": 64, "reset_pause": 0.15}


def start_arm(ros, **parameters):
    (node,) = describe("sim_arm", only=("sim_arm",), overrides={"sim_arm": {**SMALL, **parameters}}).nodes
    ros.start_python("sim_arm", node.module, *node.ros_args())


def set_parameters(ros, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = ros.node.create_client(SetParameters, f"{NODE}/set_parameters")
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return ros.call(client, request, timeout=30.0).results


def reset(ros, **values) -> dict:
    from std_srvs.srv import Trigger

    if values:
        assert all(r.successful for r in set_parameters(ros, **values))
    response = ros.call(ros.node.create_client(Trigger, f"{NODE}/reset"), Trigger.Request(), timeout=60.0)
    assert response.success, response.message
    return json.loads(response.message)


class JointLog:
    """Joint states received by the probe node: (receive time, stamp, positions, velocities, names)."""

    def __init__(self, ros) -> None:
        from sensor_msgs.msg import JointState

        from dream_vla_ros.nodes import qos

        self.samples: list[tuple[float, float, np.ndarray, np.ndarray, list[str]]] = []
        ros.node.create_subscription(JointState, "/joint_states", self._on, qos.SENSOR)

    def _on(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.samples.append((time.time(), stamp, np.array(msg.position), np.array(msg.velocity), list(msg.name)))

    def latest(self) -> np.ndarray:
        return self.samples[-1][2]


def spin_for(ros, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ros.executor.spin_once(timeout_sec=0.01)


def trajectory(names, rows, times, stamp=None):
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from dream_vla_ros.nodes.conversions import seconds_to_duration, seconds_to_stamp

    msg = JointTrajectory(joint_names=list(names))
    if stamp is not None:
        msg.header.stamp = seconds_to_stamp(stamp)
    msg.points = [JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=seconds_to_duration(t))
                  for row, t in zip(rows, times, strict=True)]
    return msg


def test_reset_answers_the_instruction_and_sensors_stream(ros):
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.sim.joint_arm import JOINT_NAMES
    from dream_vla_ros.sim.tasks import instruction

    start_arm(ros, cameras=["corner", "topview"], camera_topics=["/camera/image_raw", "/camera/top/image_raw"])
    frames, top_frames, events = [], [], []
    ros.node.create_subscription(Image, "/camera/image_raw", frames.append, qos.SENSOR)
    ros.node.create_subscription(Image, "/camera/top/image_raw", top_frames.append, qos.SENSOR)
    ros.node.create_subscription(String, f"{NODE}/episode", lambda m: events.append(json.loads(m.data)), qos.EVENTS)
    joints = JointLog(ros)

    event = reset(ros, task="push", seed=7, phrasing_split="heldout", phrasing_index=1)
    assert event["task"] == "push" and event["seed"] == 7
    assert event["instruction"] == instruction("push", 1, "heldout")
    frames.clear()
    top_frames.clear()
    joints.samples.clear()
    spin_for(ros, 1.0)
    assert 15 <= len(frames) <= 40, len(frames)  # 30 Hz on a shared machine
    assert 15 <= len(top_frames) <= 40, len(top_frames)
    assert (frames[-1].width, frames[-1].height, frames[-1].encoding) == (64, 64, "rgb8")
    assert len(frames[-1].data) == 64 * 64 * 3
    assert (frames[-1].header.frame_id, top_frames[-1].header.frame_id) == ("corner", "topview")
    corner_stamps = {(f.header.stamp.sec, f.header.stamp.nanosec) for f in frames}
    assert sum((f.header.stamp.sec, f.header.stamp.nanosec) in corner_stamps for f in top_frames) >= 10, \
        "both cameras render the same physics states"
    assert bytes(frames[-1].data) != bytes(top_frames[-1].data)
    assert len(joints.samples) >= 40, len(joints.samples)  # 80 Hz
    _, _, position, velocity, names = joints.samples[-1]
    assert names == list(JOINT_NAMES) and position.shape == (8,) and velocity.shape == (8,)
    ages = [r - s for r, s, *_ in joints.samples]
    assert min(ages) > -0.005, "joint states stamped ahead of the wall clock"
    assert float(np.median(ages)) < 0.05
    assert any(e["event"] == "reset" and e["episode"] == event["episode"] for e in events)

    results = set_parameters(ros, task="fly-to-the-moon")
    assert not results[0].successful and "unknown task" in results[0].reason
    assert not set_parameters(ros, width=32)[0].successful  # read at start


def test_trajectories_follow_jtc_semantics(ros):
    from dream_vla_ros.sim.joint_arm import JOINT_NAMES

    start_arm(ros)
    joints = JointLog(ros)
    reset(ros, task="reach", seed=3)
    from trajectory_msgs.msg import JointTrajectory

    from dream_vla_ros.nodes import qos

    pub = ros.node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", qos.CONTROLLER)
    ros.wait_for_subscriber("/arm_controller/joint_trajectory")
    ros.spin_until(lambda: joints.samples, 10.0, "joint states")
    spin_for(ros, 0.2)
    q0 = joints.latest().copy()
    q0[7] = -1.0  # gripper command: open

    def target(delta_j0: float) -> np.ndarray:
        row = q0.copy()
        row[0] += delta_j0
        return row

    # A: +0.4 rad over 1.0 s. After 0.35 s it is replaced by B: -0.2 rad over 0.4 s (hard replacement).
    pub.publish(trajectory(JOINT_NAMES, [target(0.2), target(0.4)], [0.5, 1.0]))
    spin_for(ros, 0.35)
    midway = joints.latest()[0] - q0[0]
    assert 0.03 < midway < 0.25, midway
    pub.publish(trajectory(JOINT_NAMES, [target(-0.2)], [0.4]))
    # Rejected: non-increasing times, an unknown joint, a missing joint, a trajectory that ended in the past.
    pub.publish(trajectory(JOINT_NAMES, [target(0.5), target(0.6)], [0.5, 0.5]))
    pub.publish(trajectory([*JOINT_NAMES[:7], "elbow"], [target(0.5)], [0.5]))
    pub.publish(trajectory(JOINT_NAMES[:7], [target(0.5)[:7]], [0.5]))
    pub.publish(trajectory(JOINT_NAMES, [target(0.5)], [0.5], stamp=time.time() - 5.0))
    spin_for(ros, 1.2)
    final = joints.latest()
    assert abs(final[0] - (q0[0] - 0.2)) < 0.02, final[0] - q0[0]
    assert np.allclose(final[1:7], q0[1:7], atol=0.03)

    # Stamped in the future (stamp = now + 0.5 s, in the node's wall-clock time): as the JTC does
    # (trajectory.cpp), the arm splines from its state at receipt to the first point, due at the stamp plus its
    # time_from_start (0.8 s from now): after 0.3 s it is about 3/8 of the way (-0.125), not waiting at -0.2.
    start = time.time() + 0.5
    pub.publish(trajectory(JOINT_NAMES, [target(0.0)], [0.3], stamp=start))
    spin_for(ros, 0.3)
    assert -0.17 < joints.latest()[0] - q0[0] < -0.08, joints.latest()[0] - q0[0]
    spin_for(ros, 0.8)
    assert abs(joints.latest()[0] - q0[0]) < 0.02
    output = ros.processes.output("sim_arm")
    for reason in ("strictly increasing", "joints not in this controller", "partial joint goals", "in the past"):
        assert reason in output, output[-2000:]


def test_expert_replay_through_the_trajectory_topic_succeeds():
    """The scripted expert's joint targets, sent as one JointTrajectory, solve the task on the node."""
    from ros_harness import allocate_domain_id

    from dream_vla_ros.evaluation.config import EvalConfig
    from dream_vla_ros.evaluation.runner import evaluate_expert

    lines: list[str] = []
    config = EvalConfig(tasks=("reach", "drawer-close"), episodes=1, expert=True, max_steps=300,
                        domain_id=allocate_domain_id())
    result = evaluate_expert(config, log=lines.append)
    assert result["replayed_episodes"] == 2, lines
    assert result["replay_success"] == 1.0, lines
    assert result["controller_interface"] == "topic"
