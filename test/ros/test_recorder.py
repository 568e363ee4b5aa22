"""The recorder node over real DDS: record an episode, keep it, discard one, and survive a kill -9 mid-episode."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from dream_vla_ros.bringup import describe

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning:lark.*")]
pytest.importorskip("rosbags")

NODE = "/recorder"
CAMERA = "/camera/image_raw"
TRAJECTORY = "/arm_controller/joint_trajectory"
JOINTS = ["j0", "j1", "gripper"]


def start_recorder(ros, out: Path) -> None:
    (node,) = describe("recorder", overrides={"recorder": {"out_dir": str(out), "flush_period": 0.2}}).nodes
    ros.start_python("recorder", node.module, *node.ros_args())


class Robot:
    """A camera (64x64 at 30 Hz), joint states (100 Hz), trajectory commands (10 Hz) and the goal, published by
    the probe node while it spins; counts what it sent."""

    def __init__(self, ros, goal: str) -> None:
        from builtin_interfaces.msg import Duration
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from dream_vla_ros.nodes import qos

        node = ros.node
        self.sent = {CAMERA: 0, "/joint_states": 0, TRAJECTORY: 0}
        camera = node.create_publisher(Image, CAMERA, qos.SENSOR)
        joints = node.create_publisher(JointState, "/joint_states", qos.SENSOR)
        commands = node.create_publisher(JointTrajectory, TRAJECTORY, qos.CONTROLLER)
        self.goal = node.create_publisher(String, "/goal", qos.GOAL)
        self.goal.publish(String(data=goal))
        pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8).tobytes()

        def on_camera() -> None:
            msg = Image(height=64, width=64, encoding="rgb8", step=192, data=pixels)
            msg.header.stamp = node.get_clock().now().to_msg()
            camera.publish(msg)
            self.sent[CAMERA] += 1

        def on_joints() -> None:
            t = time.time()
            msg = JointState(name=JOINTS, position=[0.1 * np.sin(t), 0.2, -0.5])
            msg.header.stamp = node.get_clock().now().to_msg()
            joints.publish(msg)
            self.sent["/joint_states"] += 1

        def on_command() -> None:
            point = JointTrajectoryPoint(positions=[0.1, 0.2, -0.5], time_from_start=Duration(nanosec=100_000_000))
            commands.publish(JointTrajectory(joint_names=JOINTS, points=[point]))
            self.sent[TRAJECTORY] += 1

        node.create_timer(1 / 30, on_camera)
        node.create_timer(1 / 100, on_joints)
        node.create_timer(1 / 10, on_command)
        for topic in (CAMERA, "/joint_states", TRAJECTORY, "/goal"):
            ros.wait_for_subscriber(topic, timeout=30)


def spin_for(ros, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ros.executor.spin_once(timeout_sec=0.005)


def trigger(ros, name: str):
    from std_srvs.srv import Trigger

    return ros.call(ros.node.create_client(Trigger, f"{NODE}/{name}"), Trigger.Request(), timeout=30.0)


def start_when_ready(ros) -> dict:
    """~/start, retried until the latched goal has reached the recorder (it is the instruction)."""
    deadline = time.monotonic() + 20.0
    while True:
        response = trigger(ros, "start")
        if response.success:
            return json.loads(response.message)
        assert "no instruction" in response.message, response.message
        assert time.monotonic() < deadline, response.message
        spin_for(ros, 0.1)


def bag_counts(path: Path) -> dict[str, int]:
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        return {c.topic: c.msgcount for c in reader.connections}


def test_record_keep_and_discard_over_dds(ros, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.record.episode import INCOMPLETE_DIR, read_info

    out = tmp_path / "bags"
    start_recorder(ros, out)
    events, diagnostics = [], []
    ros.node.create_subscription(String, f"{NODE}/events", lambda m: events.append(json.loads(m.data)), qos.EVENTS)
    ros.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    robot = Robot(ros, "open the drawer")

    started = start_when_ready(ros)
    assert started["episode"] == "episode_000000" and started["instruction"] == "open the drawer"
    assert Path(started["path"]) == out / INCOMPLETE_DIR / "episode_000000"
    spin_for(ros, 1.5)
    response = trigger(ros, "stop")
    assert response.success, response.message
    kept = json.loads(response.message)
    path = Path(kept["path"])
    assert path == out / "episode_000000" and kept["status"] == "complete"
    counts = bag_counts(path)
    assert counts == {t: c["written"] for t, c in kept["counts"].items()}
    assert counts[CAMERA] >= 25 and counts["/joint_states"] >= 80 and counts[TRAJECTORY] >= 8, counts
    assert counts["/goal"] == 1  # the latched goal at the start
    for topic in (CAMERA, "/joint_states", TRAJECTORY):
        assert kept["counts"][topic]["dropped_backlog"] == 0 and kept["counts"][topic]["lost"] == 0
        assert kept["counts"][topic]["received"] <= robot.sent[topic]
    info = read_info(path)
    assert info["status"] == "complete" and info["instruction"] == "open the drawer"
    assert info["topics"][CAMERA]["type"] == "sensor_msgs/msg/Image"
    assert info["topics"][CAMERA]["type_hash"].startswith("RIHS01_")
    assert not trigger(ros, "stop").success  # nothing running

    # The CLI sets the instruction parameter and starts; discard deletes the episode.
    ros.start_python("cli", "dream_vla_ros.cli", "record", "start", "--instruction", "close the drawer")
    assert ros.processes.processes["cli"].popen.wait(60) == 0, ros.processes.output("cli")
    second = json.loads(ros.processes.output("cli").strip().splitlines()[-1])
    assert second["episode"] == "episode_000001" and second["instruction"] == "close the drawer"
    spin_for(ros, 0.5)
    response = trigger(ros, "discard")
    assert response.success and json.loads(response.message)["status"] == "discarded"
    assert not (out / "episode_000001").exists() and not (out / INCOMPLETE_DIR / "episode_000001").exists()

    ros.spin_until(lambda: len(events) >= 4, 10.0, "recorder events")
    assert [e["event"] for e in events] == ["start", "stop", "start", "discard"]

    def latest() -> dict[str, str]:
        statuses = [s for d in diagnostics for s in d.status if s.name == NODE.strip("/")]
        return {kv.key: kv.value for kv in statuses[-1].values} if statuses else {}

    ros.spin_until(lambda: latest().get("episodes discarded") == "1", 10.0, "recorder diagnostics after discard")
    values = latest()
    assert float(values["disk free GB"]) > 0 and int(values[f"{CAMERA} received"]) > 0
    assert values["episodes kept"] == "1" and values["state"] == "idle"


def test_kill_9_mid_episode_leaves_finished_episodes_readable_and_the_current_one_marked(ros, tmp_path):
    from dream_vla_ros.cli import main as cli
    from dream_vla_ros.record.episode import INCOMPLETE_DIR, list_episodes, read_info
    from dream_vla_ros.train.bag_config import BuildConfig
    from dream_vla_ros.train.bag_dataset import build_dataset

    out = tmp_path / "bags"
    start_recorder(ros, out)
    Robot(ros, "stack the blocks")
    start_when_ready(ros)
    spin_for(ros, 1.0)
    assert trigger(ros, "stop").success
    start_when_ready(ros)
    spin_for(ros, 1.5)
    recorder = ros.processes.processes["recorder"].popen
    os.killpg(recorder.pid, signal.SIGKILL)
    recorder.wait(10)

    assert bag_counts(out / "episode_000000")[CAMERA] >= 15  # finished: a readable bag
    listing = {e.path.name: e for e in list_episodes(out)}
    partial = listing["episode_000001"]
    assert partial.path.parent.name == INCOMPLETE_DIR and not partial.readable and partial.status == "recording"
    built = build_dataset([out], BuildConfig(out=str(tmp_path / "ds"), min_frames=5), log=lambda _: None)
    refused = {Path(r["bag"]).name: r["reasons"][0] for r in built.report["refused"]}
    assert "incomplete/" in refused["episode_000001"] and "record repair" in refused["episode_000001"]

    assert cli(["record", "repair", str(out)]) == 0
    salvaged = out / "episode_000001"
    counts = bag_counts(salvaged)
    assert counts[CAMERA] >= 15 and counts["/joint_states"] >= 50, counts  # at most ~flush_period lost
    info = read_info(salvaged)
    assert info["status"] == "salvaged" and info["complete"] is False and info["instruction"] == "stack the blocks"
    assert not (out / INCOMPLETE_DIR / "episode_000001").exists()
