"""Recording overhead over DDS and dataset build throughput.

Two processes on a private ROS domain (discovery kept on this host, the large-image Fast DDS profile):

- *robot*: ``--cameras`` rgb8 cameras (640x480 at 30 Hz by default), joint states of 8 joints at 500 Hz,
  JointTrajectory commands (10-point windows) at ``--action-rate`` and the latched goal; every message
  carries its sequence number in ``header.frame_id``;
- *recorder*: the recorder node (``config/recorder.yaml`` with these topics), recording ``--episodes``
  episodes over ``--seconds`` in total through its ``~/start`` / ``~/stop`` services.

Measured: the recorder process's CPU (utime + stime from /proc, in % of one core) while recording and while
subscribed but idle, its peak resident memory, the bytes written; per topic the messages missing from each
episode's bag (gaps in the sequence numbers between its first and last message: everything lost on the way,
in DDS or in the recorder) next to the recorder's own counters (dropped because the disk fell behind, lost as
reported by the middleware, missing estimated from header-stamp gaps). Then the episodes are built into a
dataset (``dream-vla-ros dataset build``, ``--rate`` Hz, ``--image-size``) and its throughput is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dream_vla_ros.benchmarks import last_json, standalone_main

JOINTS = [f"joint_{i}" for i in range(7)] + ["gripper"]
TRAJECTORY_TOPIC = "/bench/arm_controller/joint_trajectory"
JOINT_TOPIC = "/bench/joint_states"
GOAL_TOPIC = "/bench/goal"
GOAL = "pick up the block"


def camera_topic(index: int) -> str:
    return f"/bench/cam{index}/image_raw"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="recorded time in total (s)")
    parser.add_argument("--episodes", type=int, default=2, help="episodes the recorded time is split into")
    parser.add_argument("--cameras", type=int, default=2, help="number of cameras")
    parser.add_argument("--width", type=int, default=640, help="image width (px)")
    parser.add_argument("--height", type=int, default=480, help="image height (px)")
    parser.add_argument("--camera-rate", type=float, default=30.0, help="frames per second per camera")
    parser.add_argument("--joint-rate", type=float, default=500.0, help="joint states per second")
    parser.add_argument("--action-rate", type=float, default=50.0, help="trajectory commands per second")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="subscribed-but-idle CPU window (s)")
    parser.add_argument("--compression", choices=["none", "zstd"], default="none", help="MCAP chunk compression")
    parser.add_argument("--rate", type=float, default=40.0, help="dataset build: policy rate (Hz)")
    parser.add_argument("--image-size", type=int, default=128, help="dataset build: shorter image side (0 = as is)")
    parser.add_argument("--keep", default="", metavar="DIR", help="keep the bags and dataset in DIR")
    parser.add_argument("--role", choices=["robot"], help=argparse.SUPPRESS)


# -- the robot process ---------------------------------------------------------------------------------------
def _robot(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.nodes.conversions import seconds_to_duration

    rclpy.init()
    node = rclpy.create_node("bench_robot")
    cameras = [node.create_publisher(Image, camera_topic(i), qos.SENSOR) for i in range(args.cameras)]
    joints = node.create_publisher(JointState, JOINT_TOPIC, qos.SENSOR)
    commands = node.create_publisher(JointTrajectory, TRAJECTORY_TOPIC, qos.CONTROLLER)
    goal = node.create_publisher(String, GOAL_TOPIC, qos.GOAL)
    goal.publish(String(data=GOAL))
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8).tobytes() for _ in cameras]
    images = [Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3, data=p)
              for p in pixels]
    state = JointState(name=JOINTS, position=[0.0] * len(JOINTS), velocity=[0.0] * len(JOINTS))
    clock = node.get_clock()
    periods = {"camera": 1.0 / args.camera_rate, "joints": 1.0 / args.joint_rate, "action": 1.0 / args.action_rate}
    sent = {"camera": 0, "joints": 0, "action": 0}
    start = time.monotonic()
    due = dict.fromkeys(periods, start)
    print("publishing", flush=True)
    try:
        while rclpy.ok():
            now = time.monotonic()
            t = now - start
            if now >= due["joints"]:
                state.header.stamp = clock.now().to_msg()
                state.header.frame_id = str(sent["joints"])
                state.position = [0.3 * math.sin(0.5 * t + j) for j in range(len(JOINTS))]
                joints.publish(state)
                sent["joints"] += 1
                due["joints"] += periods["joints"]
            if now >= due["camera"]:
                stamp = clock.now().to_msg()
                for publisher, image in zip(cameras, images, strict=True):
                    image.header.stamp = stamp
                    image.header.frame_id = str(sent["camera"])
                    publisher.publish(image)
                sent["camera"] += 1
                due["camera"] += periods["camera"]
            if now >= due["action"]:
                msg = JointTrajectory(joint_names=JOINTS)
                msg.header.frame_id = str(sent["action"])
                msg.points = [JointTrajectoryPoint(
                    positions=[0.3 * math.sin(0.5 * (t + (i + 1) * 0.02) + j) for j in range(len(JOINTS))],
                    time_from_start=seconds_to_duration((i + 1) * 0.02)) for i in range(10)]
                commands.publish(msg)
                sent["action"] += 1
                due["action"] += periods["action"]
            time.sleep(max(0.0, min(due.values()) - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return sent


# -- measurement helpers -------------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sequence_gaps(bag: Path) -> dict[str, dict[str, int]]:
    """Per topic: messages in the bag and messages missing between its first and last sequence number."""
    from rosbags.rosbag2 import Reader

    from dream_vla_ros.record.bag import typestore_for

    store = typestore_for(None)
    sequences: dict[str, list[int]] = {}
    with Reader(bag) as reader:
        for connection, _, raw in reader.messages():
            if connection.msgtype == "std_msgs/msg/String":
                continue
            frame_id = store.deserialize_cdr(raw, connection.msgtype).header.frame_id
            sequences.setdefault(connection.topic, []).append(int(frame_id))
    out = {}
    for topic, numbers in sequences.items():
        unique = sorted(set(numbers))
        expected = unique[-1] - unique[0] + 1
        out[topic] = {"recorded": len(numbers), "expected": expected, "missing": expected - len(unique)}
    return out


def _params(args: argparse.Namespace, folder: Path) -> Path:
    from dream_vla_ros.configuration import node_section, read_yaml, write_params_file
    from dream_vla_ros.paths import config_dir

    values = node_section(read_yaml(config_dir() / "recorder.yaml"), "recorder")
    values.update(out_dir=str(folder / "bags"), camera_topics=[camera_topic(i) for i in range(args.cameras)],
                  joint_states_topic=JOINT_TOPIC, action_topics=[TRAJECTORY_TOPIC], goal_topic=GOAL_TOPIC,
                  compression=args.compression)
    return write_params_file(folder / "recorder.yaml", {"recorder": {"ros__parameters": values}})


class _Services:
    """The recorder's start/stop from an in-process client node on the benchmark's domain."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from std_srvs.srv import Trigger

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("bench_recording_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.clients = {name: self.node.create_client(Trigger, f"/recorder/{name}")
                        for name in ("start", "stop", "discard")}

    def call(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        from std_srvs.srv import Trigger

        from dream_vla_ros.errors import DreamVlaError
        from dream_vla_ros.ros_calls import call_service

        client = self.clients[name]
        response = call_service(client, Trigger.Request(), timeout, error=DreamVlaError,
                                pause=lambda: self.executor.spin_once(timeout_sec=0.05))
        if not response.success:
            raise DreamVlaError(f"bench recording: /recorder/{name} refused: {response.message}")
        return json.loads(response.message)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.role == "robot":
        return _robot(args)

    import dream_vla_ros
    from dream_vla_ros.bringup import dds_environment
    from dream_vla_ros.errors import DreamVlaError
    from dream_vla_ros.process_group import ProcessGroup
    from dream_vla_ros.train.bag_config import BuildConfig
    from dream_vla_ros.train.bag_dataset import build_dataset

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dream_vla_recording_"))
    folder.mkdir(parents=True, exist_ok=True)
    params = _params(args, folder)
    domain_id = random.Random().randrange(110, 200)
    root = str(Path(dream_vla_ros.__file__).resolve().parent.parent)
    env = {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")])),
           **dds_environment()}
    os.environ.update({k: v for k, v in env.items() if k not in ("ROS_DOMAIN_ID", "PYTHONPATH")})
    stops: list[dict[str, Any]] = []
    services = None
    try:
        with ProcessGroup(echo=None) as group:
            recorder = group.start("recorder", [sys.executable, "-m", "dream_vla_ros.nodes.recorder_node",
                                                "--ros-args", "--params-file", str(params)], env)
            robot = group.start("robot", [sys.executable, "-m", "dream_vla_ros.benchmarks.recording", "--role",
                                          "robot", "--cameras", str(args.cameras), "--width", str(args.width),
                                          "--height", str(args.height), "--camera-rate", str(args.camera_rate),
                                          "--joint-rate", str(args.joint_rate), "--action-rate",
                                          str(args.action_rate)], env)
            if not group.wait_for_line("robot", "publishing", 60.0):
                raise DreamVlaError(f"bench recording: the robot process did not start:\n{group.output('robot')}")
            services = _Services(domain_id)
            _warm_up(services, group)
            idle_cpu = _cpu_share(recorder.popen.pid, robot.popen.pid, args.idle_seconds)
            per_episode = args.seconds / args.episodes
            recording_cpu, robot_cpu, wall = 0.0, 0.0, 0.0
            for _ in range(args.episodes):
                services.call("start")
                shares = _cpu_share(recorder.popen.pid, robot.popen.pid, per_episode)
                stops.append(services.call("stop"))
                recording_cpu += shares["recorder_cpu_s"]
                robot_cpu += shares["robot_cpu_s"]
                wall += shares["wall_s"]
            peak_rss = _peak_rss_mb(recorder.popen.pid)
            group.stop()
            sent = last_json(group.output("robot"))
    finally:
        if services is not None:
            services.close()
    bags = [Path(s["path"]) for s in stops]
    messages: dict[str, dict[str, int]] = {}
    for bag, stop in zip(bags, stops, strict=True):
        for topic, gap in _sequence_gaps(bag).items():
            entry = messages.setdefault(topic, {"recorded": 0, "expected": 0, "missing": 0, "dropped_backlog": 0,
                                                "lost_reported": 0, "missing_estimate": 0})
            counts = stop["counts"].get(topic, {})
            entry["recorded"] += gap["recorded"]
            entry["expected"] += gap["expected"]
            entry["missing"] += gap["missing"]
            entry["dropped_backlog"] += counts.get("dropped_backlog", 0)
            entry["lost_reported"] += counts.get("lost", 0)
            entry["missing_estimate"] += counts.get("missing", 0)
    bag_bytes = sum(p.stat().st_size for bag in bags for p in bag.glob("*.mcap"))
    build = build_dataset([folder / "bags"], BuildConfig(out=str(folder / "dataset"), rate=args.rate,
                                                         image_size=args.image_size, overwrite=True),
                          log=lambda _: None)
    report = build.report
    result = {
        "setup": {"cameras": args.cameras, "image": f"{args.width}x{args.height} rgb8",
                  "camera_rate_hz": args.camera_rate, "joint_rate_hz": args.joint_rate,
                  "action_rate_hz": args.action_rate, "seconds": args.seconds, "episodes": args.episodes,
                  "compression": args.compression, "transport": "Fast DDS, large-data SHM profile" if
                  "FASTDDS_DEFAULT_PROFILES_FILE" in env else os.environ.get("RMW_IMPLEMENTATION", "")},
        "recording": {
            "recorder_cpu_percent": round(100 * recording_cpu / wall, 1),
            "recorder_cpu_percent_idle": round(100 * idle_cpu["recorder_cpu_s"] / idle_cpu["wall_s"], 1),
            "robot_publisher_cpu_percent": round(100 * robot_cpu / wall, 1),
            "recorder_peak_rss_mb": round(peak_rss, 1),
            "bag_mb": round(bag_bytes / 1e6, 1),
            "write_mb_per_s": round(bag_bytes / 1e6 / wall, 1),
        },
        "messages": messages,
        "dropped_total": sum(m["missing"] for m in messages.values()),
        "published": sent,
        "dataset_build": {"episodes": report["totals"]["episodes"], "frames": report["totals"]["frames"],
                          "refused": report["refused"], "image_size": args.image_size, "rate_hz": args.rate,
                          **report.get("throughput", {})},
        "machine": {"cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)},
    }
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _warm_up(services: _Services, group) -> None:
    """Wait until the recorder accepts a start (subscribed, goal received), then discard that episode."""
    from dream_vla_ros.errors import DreamVlaError

    deadline = time.monotonic() + 60.0
    while True:
        try:
            services.call("start", timeout=10.0)
            break
        except DreamVlaError as exc:
            if time.monotonic() > deadline or not group.processes["recorder"].running:
                raise DreamVlaError(f"{exc}\n{group.output('recorder')[-2000:]}") from None
            time.sleep(0.2)
    time.sleep(1.0)  # let every stream reach the recorder
    services.call("discard")


def _cpu_share(recorder_pid: int, robot_pid: int, seconds: float) -> dict[str, float]:
    start_wall = time.monotonic()
    start_recorder, start_robot = _cpu_seconds(recorder_pid), _cpu_seconds(robot_pid)
    time.sleep(seconds)
    return {"wall_s": time.monotonic() - start_wall, "recorder_cpu_s": _cpu_seconds(recorder_pid) - start_recorder,
            "robot_cpu_s": _cpu_seconds(robot_pid) - start_robot}


def summary(result: dict[str, Any]) -> str:
    rec, setup = result["recording"], result["setup"]
    lines = [
        f"{setup['cameras']} x {setup['image']} at {setup['camera_rate_hz']:g} Hz + joint states at "
        f"{setup['joint_rate_hz']:g} Hz + commands at {setup['action_rate_hz']:g} Hz, {setup['seconds']:g} s in "
        f"{setup['episodes']} episode(s)",
        f"recorder CPU: {rec['recorder_cpu_percent']} % of one core recording, {rec['recorder_cpu_percent_idle']} % "
        f"idle; peak RSS {rec['recorder_peak_rss_mb']} MB; {rec['bag_mb']} MB written ({rec['write_mb_per_s']} MB/s)",
        f"messages missing from the bags: {result['dropped_total']}",
        *(f"  {topic:<40} recorded {m['recorded']:>6} of {m['expected']:>6}, missing {m['missing']}, "
          f"recorder: dropped {m['dropped_backlog']}, lost {m['lost_reported']}, est. missing {m['missing_estimate']}"
          for topic, m in result["messages"].items()),
    ]
    build = result["dataset_build"]
    if "seconds" in build:
        lines.append(f"dataset build: {build['episodes']} episodes, {build['frames']} frames in {build['seconds']} s "
                     f"({build['frames_per_s']} frames/s, {build['input_mb_per_s']} MB/s of bags)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return standalone_main(argv, prog="dream-vla-ros bench recording", description=__doc__,
                           add_arguments=add_arguments, run=run, summary=summary)


if __name__ == "__main__":
    raise SystemExit(main())
