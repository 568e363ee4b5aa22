"""End-to-end latency of the ROS 2 path: camera frame -> policy node -> chunk executor -> controller topic.

Three processes on a private ROS domain (discovery kept on this host, the large-image Fast DDS profile):

- *sensors*: a 640x480 rgb8 camera at 30 Hz and joint states at 500 Hz (stamped just before publishing),
  and the language goal;
- *nodes*: the policy node and the chunk executor composed in one process (``--separate``: two processes),
  each writing one JSON line of timings per chunk (their ``profile_path`` parameter);
- *controller*: a reliable subscriber on ``/arm_controller/joint_trajectory`` measuring the age of each
  window on arrival (the executor stamps windows ``now`` here: ``window.stamp: now_plus_lead``, lead 0).

Per chunk the breakdown (ms): ``transport`` (frame stamp -> image callback), ``conversion`` (message ->
RGB view), ``preprocessing`` (crop/resize/normalise in the engine), ``engine`` (the model itself),
``postprocess_publish`` (de-normalisation, checks, message, publish), ``chunk_transport`` (publish -> executor
callback), ``executor_merge`` (message -> chunk -> merged timeline) and, per window, ``executor_to_controller``
(control tick -> controller callback). **Host overhead** = transport + conversion + preprocessing +
postprocess_publish + chunk_transport + executor_merge: every stage on the path except the engine and the
waits (for the next request, the next control tick: ``wait`` is reported apart). The cross-process transport
of the 640x480 frame is the floor of that sum (``transport_floor_ms`` = its median).

``--soak MINUTES`` runs longer and adds ``rss_growth_fraction`` (resident memory of the nodes process at the
end vs. after warm-up) and ``missed_tick_fraction`` (control ticks later than 1.5 periods, counted by the
executor). The model is the ``tiny`` preset with random weights unless ``--model`` names a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dream_vla_ros.benchmarks import last_json, standalone_main

CAMERA_TOPIC = "/bench/camera/image_raw"
GOAL = "pick up the block"
STAGES = ("transport", "conversion", "preprocessing", "engine", "postprocess_publish", "chunk_transport",
          "executor_merge", "executor_to_controller", "wait")
OVERHEAD = ("transport", "conversion", "preprocessing", "postprocess_publish", "chunk_transport", "executor_merge")
WARMUP_S = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration after warm-up (s)")
    parser.add_argument("--soak", type=float, default=0.0, metavar="MINUTES",
                        help="soak run of this many minutes: adds RSS growth and missed control ticks")
    parser.add_argument("--model", default="", help="checkpoint directory (default: tiny preset, random weights)")
    parser.add_argument("--preset", default="tiny", help="preset for the random-weight model (tiny, sim, orin)")
    parser.add_argument("--separate", action="store_true", help="policy node and executor in two processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the policy node")
    parser.add_argument("--rate", type=float, default=100.0, help="executor control rate (Hz)")
    parser.add_argument("--role", choices=["sensors", "controller"], help=argparse.SUPPRESS)
    parser.add_argument("--joints", default="", help=argparse.SUPPRESS)


# -- helper processes ----------------------------------------------------------------------------------------
def _sensors(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.nodes.conversions import rgb_to_image

    rclpy.init()
    node = rclpy.create_node("bench_sensors")
    camera = node.create_publisher(type(rgb_to_image(np.zeros((1, 1, 3), np.uint8))), CAMERA_TOPIC, qos.SENSOR)
    joints = node.create_publisher(JointState, "/joint_states", qos.SENSOR)
    goal = node.create_publisher(String, "/goal", qos.GOAL)
    goal.publish(String(data=GOAL))
    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image = rgb_to_image(pixels)
    names = args.joints.split(",")
    state = JointState(name=names, position=[0.0] * len(names))
    clock = node.get_clock()
    sent = {"frames": 0, "joint_states": 0}
    start = time.monotonic()
    next_joint, next_frame = start, start
    try:
        while rclpy.ok():
            now = time.monotonic()
            if now >= next_joint:
                state.header.stamp = clock.now().to_msg()
                joints.publish(state)
                sent["joint_states"] += 1
                next_joint += 1.0 / 500.0
            if now >= next_frame:
                image.header.stamp = clock.now().to_msg()
                camera.publish(image)
                sent["frames"] += 1
                next_frame += 1.0 / 30.0
            time.sleep(max(0.0, min(next_joint, next_frame) - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return sent


def _controller(args: argparse.Namespace) -> dict[str, Any]:
    import rclpy
    from trajectory_msgs.msg import JointTrajectory

    from dream_vla_ros.nodes import qos

    rclpy.init()
    node = rclpy.create_node("bench_controller")
    latencies: list[float] = []

    def on_window(msg: JointTrajectory) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if stamp > 0:
            latencies.append((node.get_clock().now().nanoseconds * 1e-9 - stamp) * 1e3)

    node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", on_window, qos.CONTROLLER)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):  # noqa: BLE001 - external shutdown ends the measurement
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    skip = min(len(latencies) // 10, 300)  # discovery and warm-up
    kept = latencies[skip:]
    return {"windows": len(kept), "executor_to_controller_ms": _median(kept), "p90_ms": _quantile(kept, 0.9)}


# -- the benchmark -------------------------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))])


def _model(args: argparse.Namespace, folder: Path) -> tuple[Path, tuple[str, ...], str]:
    if args.model:
        from dream_vla_ros.paths import resolve_model
        from dream_vla_ros.policy.checkpoint import load_model_config

        path = resolve_model(args.model)
        config = load_model_config(path)
    else:
        from dream_vla_ros.policy.checkpoint import save_checkpoint
        from dream_vla_ros.policy.config import preset
        from dream_vla_ros.policy.model import build_model

        config = preset(args.preset)
        path = save_checkpoint(build_model(config), folder / "model")
    return path, tuple(config.joint_names), config.vision.cameras[0]


def _params(args: argparse.Namespace, folder: Path, model: Path, joints: tuple[str, ...]) -> Path:
    from dream_vla_ros.configuration import write_params_file

    cameras = 1
    policy = {
        "model": str(model), "threads": args.threads, "warmup_runs": 3,
        "camera_topics": [CAMERA_TOPIC] * cameras, "image_width": 640, "image_height": 480,
        "joint_states_topic": "/joint_states", "goal_topic": "/goal", "diagnostics_period": 1.0,
        "profile_path": str(folder / "policy.jsonl"),
    }
    executor = {
        "joint_states_topic": "/joint_states", "diagnostics_period": 1.0,
        "profile_path": str(folder / "executor.jsonl"),
        "chunking": {
            "joint_names": list(joints), "control_period": 1.0 / args.rate,
            "limits": {"position_min": [-10.0], "position_max": [10.0], "max_velocity": [5.0],
                       "max_acceleration": [50.0]},
            "window": {"stamp": "now_plus_lead", "lead": 0.0},
        },
    }
    return write_params_file(folder / "params.yaml", {"policy_node": {"ros__parameters": policy},
                                                      "chunk_executor": {"ros__parameters": executor}})


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by the shutdown
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.role == "sensors":
        return _sensors(args)
    if args.role == "controller":
        return _controller(args)

    import dream_vla_ros
    from dream_vla_ros.bringup import dds_environment
    from dream_vla_ros.errors import DreamVlaError
    from dream_vla_ros.process_group import ProcessGroup

    duration = args.soak * 60.0 if args.soak > 0 else args.seconds
    folder = Path(tempfile.mkdtemp(prefix="dream_vla_latency_"))
    model, joints, _camera = _model(args, folder)
    params = _params(args, folder, model, joints)
    root = str(Path(dream_vla_ros.__file__).resolve().parent.parent)
    env = {
        "ROS_DOMAIN_ID": str(random.Random().randrange(110, 200)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")])),
        **dds_environment(),
    }
    me = [sys.executable, "-m", "dream_vla_ros.benchmarks.latency"]
    ros_args = ["--ros-args", "--params-file", str(params)]
    with ProcessGroup(echo=None) as group:
        if args.separate:
            nodes = [group.start("policy", [sys.executable, "-m", "dream_vla_ros.nodes.policy_node", *ros_args], env),
                     group.start("executor", [sys.executable, "-m", "dream_vla_ros.nodes.executor_node", *ros_args],
                                 env)]
        else:
            nodes = [group.start("nodes", [sys.executable, "-m", "dream_vla_ros.nodes.composed", *ros_args], env)]
        group.start("controller", [*me, "--role", "controller"], env)
        group.start("sensors", [*me, "--role", "sensors", "--joints", ",".join(joints)], env)
        policy_log = folder / "policy.jsonl"
        deadline = time.monotonic() + 120.0
        while not _read_jsonl(policy_log):
            if time.monotonic() > deadline or not all(p.running for p in group.processes.values()):
                outputs = "\n".join(f"[{n}] {group.output(n)[-1500:]}" for n in group.processes)
                raise DreamVlaError(f"bench latency: no chunk within 120 s of start\n{outputs}")
            time.sleep(0.1)
        time.sleep(WARMUP_S)
        rss_start = sum(_rss_kb(p.popen.pid) for p in nodes)
        executor_start = (_read_jsonl(folder / "executor.jsonl") or [{}])[-1]
        end = time.monotonic() + duration
        while time.monotonic() < end:
            if not all(p.running for p in group.processes.values()):
                raise DreamVlaError("bench latency: a process exited early:\n" + "\n".join(
                    f"[{n}] {group.output(n)[-1500:]}" for n in group.processes))
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        rss_end = sum(_rss_kb(p.popen.pid) for p in nodes)
        executor_lines = _read_jsonl(folder / "executor.jsonl")
        group.stop()
        controller = last_json(group.output("controller"))
        sensors = last_json(group.output("sensors"))
    return _summarise(args, folder, executor_start, executor_lines, controller, sensors,
                      rss_start, rss_end, duration)


def _summarise(args, folder, executor_start, executor_lines, controller, sensors, rss_start, rss_end,
               duration) -> dict[str, Any]:
    policy = _read_jsonl(folder / "policy.jsonl")
    merges = {round(e["stamp"], 6): e for e in executor_lines}
    first_stamp = executor_start.get("stamp", 0.0)
    rows = []
    for p in policy:
        e = merges.get(round(p["stamp"], 6))
        if e is None or p["stamp"] <= first_stamp:
            continue
        rows.append({
            "transport": p["transport_ms"],
            "conversion": p["conversion_ms"],
            "preprocessing": p["preprocessing_ms"],
            "engine": p["engine_ms"],
            "postprocess_publish": p["postprocessing_ms"] + p["publish_ms"],
            "chunk_transport": max(0.0, (e["received"] - p["published"]) * 1e3),
            "executor_merge": e["merge_ms"],
            "wait": p["wait_ms"],
        })
    overhead = [sum(r[s] for s in OVERHEAD) for r in rows]
    breakdown = {s: _median([r[s] for r in rows]) for s in STAGES if s != "executor_to_controller"}
    breakdown["executor_to_controller"] = controller.get("executor_to_controller_ms", float("nan"))
    result: dict[str, Any] = {
        "chunks": len(rows),
        "host_overhead_ms_median": _median(overhead),
        "host_overhead_ms_p90": _quantile(overhead, 0.9),
        "breakdown_ms": {k: round(v, 3) for k, v in breakdown.items()},
        "transport_floor_ms": round(breakdown["transport"], 3),
        "seconds": duration,
        "layout": "separate" if args.separate else "composed",
        "chunk_rate_hz": len(rows) / duration if duration else 0.0,
        "frames_sent": sensors.get("frames"),
        "joint_states_sent": sensors.get("joint_states"),
        "controller_windows": controller.get("windows"),
    }
    if executor_lines and executor_start:
        last = executor_lines[-1]
        ticks = last["ticks"] - executor_start.get("ticks", 0)
        missed = last["missed_ticks"] - executor_start.get("missed_ticks", 0)
        fraction = missed / (ticks + missed) if ticks + missed else float("nan")
    else:
        fraction = float("nan")
    if args.soak > 0:
        result["rss_growth_fraction"] = (rss_end - rss_start) / rss_start if rss_start else float("nan")
        result["missed_tick_fraction"] = fraction
        result["rss_mb"] = {"start": rss_start / 1024, "end": rss_end / 1024}
    else:
        result["missed_tick_fraction"] = fraction
    return result


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"{result['chunks']} chunks over {result['seconds']:.0f} s ({result['layout']}, "
        f"{result['chunk_rate_hz']:.1f} chunks/s)",
        f"host overhead: median {result['host_overhead_ms_median']:.2f} ms, "
        f"p90 {result['host_overhead_ms_p90']:.2f} ms (goal <= 5 ms median; floor: the 640x480 frame's transport, "
        f"{result['transport_floor_ms']:.2f} ms median)",
        "breakdown (median ms):",
        *(f"  {stage:<24} {value:8.3f}" for stage, value in result["breakdown_ms"].items()),
    ]
    if "rss_growth_fraction" in result:
        lines.append(f"soak: RSS growth {result['rss_growth_fraction'] * 100:.2f} % (goal < 5 %), "
                     f"missed control ticks {result['missed_tick_fraction'] * 100:.3f} % (goal < 1 %)")
    else:
        lines.append(f"missed control ticks: {result['missed_tick_fraction'] * 100:.3f} %")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return standalone_main(argv, prog="dream-vla-ros bench latency", description=__doc__,
                           add_arguments=add_arguments, run=run, summary=summary)


if __name__ == "__main__":
    raise SystemExit(main())
