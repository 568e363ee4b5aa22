"""Record demonstrations over ROS 2: one rosbag2 directory (MCAP) per episode, with its instruction.

  run        run the recorder node here (config/recorder.yaml + --set overrides); on a terminal, type
             's [instruction]' to start an episode, 'k' to stop and keep it, 'd' to discard it, 'q' to quit
  start      start an episode on a running recorder (optionally setting its --instruction / --task first)
  stop       stop the episode and keep it          discard    stop the episode and delete it
  list DIR   the episodes of a recordings directory (status, duration, instruction)
  repair DIR salvage episodes left in DIR/incomplete/ by a killed recorder
  expert     simulation: drive the simulated arm with the scripted expert through ROS topics and record it
             (the stand-in for teleoperation: the same seeds and phrasings as `collect`, but through the wire)

The recorder subscribes the cameras, /joint_states, the goal topic and the action source (the commanded
JointTrajectory, or a leader arm's JointState) with raw=True and writes the bytes as received. Episodes are
<out_dir>/episode_NNNNNN/ (metadata.yaml, episode_NNNNNN.mcap, episode.json); the one being recorded is in
<out_dir>/incomplete/ until it is stopped. Services: /recorder/start, /recorder/stop, /recorder/discard
(std_srvs/Trigger); events on /recorder/events; counters on /diagnostics. See docs/recording.md.

examples:
  dream-vla-ros record run --out data/bags --set camera_topics:=[/scene/image_raw,/wrist/image_raw]
  dream-vla-ros record run --set action_source:=leader --set action_topics:=[/leader/joint_states]
  dream-vla-ros record start --instruction "put the cup on the plate"
  dream-vla-ros record stop
  dream-vla-ros record list data/bags
  dream-vla-ros record repair data/bags
  dream-vla-ros record expert --out data/bags_mt10 --tasks mt10 --episodes-per-task 10 --image-size 96
then: dream-vla-ros dataset build data/bags --out data/my_arm
"""

from __future__ import annotations

import argparse
import json
import sys

from dream_vla_ros.commands.collect import add_demo_arguments, parse_cameras


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    run = sub.add_parser("run", help="run the recorder node in this process (interactive on a terminal)",
                         description="Run the recorder node here. On a terminal: 's [instruction]' starts an episode, "
                         "'k' keeps it, 'd' discards it, 'q' quits (a running episode is then closed, marked "
                         "interrupted). Services work as well.",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--config", default="recorder", help="params file (name under config/ or a path) with a "
                     "'recorder' section")
    run.add_argument("--out", default="", metavar="DIR", help="episodes directory (overrides out_dir)")
    run.add_argument("--set", action="append", default=[], metavar="PARAM:=VALUE",
                     help="override one recorder parameter (repeatable), e.g. joint_states_topic:=/arm/joint_states")
    run.add_argument("--namespace", default="", help="namespace of the node (topics without a leading / follow it)")
    run.add_argument("--use-sim-time", action="store_true", help="stamp the bag with /clock time")
    run.add_argument("--no-keys", action="store_true", help="no keyboard control, services only")
    for name, text in (("start", "start an episode on a running recorder"),
                       ("stop", "stop the running episode and keep it"),
                       ("discard", "stop the running episode and delete it")):
        action = sub.add_parser(name, help=text, description=text.capitalize() + ". Prints the recorder's JSON "
                                "answer; exit status 1 when it refuses (the reason is printed).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        action.add_argument("--node", default="/recorder", help="the recorder node's full name")
        action.add_argument("--timeout", type=float, default=15.0, help="s to wait for the recorder")
        if name == "start":
            action.add_argument("--instruction", default=None, help="set the instruction parameter first")
            action.add_argument("--task", default=None, help="set the task parameter first")
    listing = sub.add_parser("list", help="list the episodes of a recordings directory",
                             description="List finished and incomplete episodes with status, duration, instruction.")
    listing.add_argument("dir", help="recordings directory (the recorder's out_dir)")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    repair = sub.add_parser("repair", help="salvage episodes left in DIR/incomplete/ by a killed recorder",
                            description="Each DIR/incomplete/episode_* becomes a readable DIR/episode_*: a closed bag "
                            "is moved; otherwise the messages readable from its MCAP file are written into a new bag "
                            "marked 'salvaged' (not complete: `dataset build` uses it only with --allow-incomplete).")
    repair.add_argument("dir", help="recordings directory (the recorder's out_dir)")
    expert = sub.add_parser(
        "expert", help="simulation: record the scripted expert driving the simulated arm through ROS topics",
        description="Start sim_arm and the recorder in a private ROS domain, run the scripted expert of each task "
        "here and send its joint targets to the arm as a JointTrajectory, one recorded episode per demonstration "
        "(same seeds and phrasings as `dream-vla-ros collect`; failed attempts are discarded). Then: "
        "dream-vla-ros dataset build DIR --out DATASET.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    expert.add_argument("--out", required=True, metavar="DIR", help="recordings directory (created)")
    add_demo_arguments(expert, image_size=96)
    expert.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def main(args: argparse.Namespace) -> int:
    return {"run": _run, "start": _service, "stop": _service, "discard": _service, "list": _list,
            "repair": _repair, "expert": _expert}[args.action](args)


def _expert(args: argparse.Namespace) -> int:
    from dream_vla_ros.evaluation.ros_demos import RosDemoConfig, record_expert_demos
    from dream_vla_ros.sim.collect import CollectConfig
    from dream_vla_ros.sim.tasks import parse_tasks

    collect = CollectConfig(tasks=parse_tasks(args.tasks), episodes_per_task=args.episodes_per_task, workers=1,
                            seed=args.seed, max_attempts=args.max_attempts)
    config = RosDemoConfig(out=args.out, collect=collect, image_size=args.image_size,
                           cameras=parse_cameras(args.camera))
    summary = record_expert_demos(config, log=lambda line: print(line, file=sys.stderr), progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"kept {summary['kept']}/{summary['jobs']} demonstrations in {summary['out']} "
              f"({summary['attempts']} attempts, {summary.get('expert_failures', 0)} expert failures, "
              f"{summary.get('replay_failures', 0)} failed through ROS) in {summary['seconds']:.0f} s")
        print(f"next: dream-vla-ros dataset build {summary['out']} --out <dataset dir>")
    return 0 if summary["kept"] == summary["jobs"] else 1


def _list(args: argparse.Namespace) -> int:
    from dream_vla_ros.record.episode import list_episodes

    episodes = list_episodes(args.dir)
    if args.json:
        print(json.dumps([{"path": str(e.path), "status": e.status, "readable": e.readable,
                           "duration_s": e.duration_s, "task": e.task, "instruction": e.instruction}
                          for e in episodes]))
        return 0
    for episode in episodes:
        print(episode.line())
    if not episodes:
        print(f"no episodes in {args.dir}")
    return 0


def _repair(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dream_vla_ros.record.bag import repair
    from dream_vla_ros.record.episode import INCOMPLETE_DIR, episode_index

    incomplete = Path(args.dir) / INCOMPLETE_DIR
    targets = sorted(p for p in incomplete.iterdir() if p.is_dir() and episode_index(p.name) is not None) \
        if incomplete.is_dir() else []
    if not targets:
        print(f"nothing to repair in {incomplete}")
        return 0
    for path in targets:
        result = repair(path)
        if result.action == "empty":
            print(f"{path.name}: no readable message; removed")
        elif result.action == "moved":
            print(f"{path.name}: closed already; moved to {result.path}")
        else:
            cut = " (file cut short)" if result.truncated else ""
            print(f"{path.name}: salvaged {result.messages} messages{cut} -> {result.path}")
    return 0


def _service(args: argparse.Namespace) -> int:
    import os

    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    from dream_vla_ros.bringup import dds_environment
    from dream_vla_ros.errors import DreamVlaError
    from dream_vla_ros.ros_calls import call_service

    os.environ.update(dds_environment())
    rclpy.init(args=[])
    node = rclpy.create_node("dream_vla_record_cli")
    try:
        def spin() -> None:
            rclpy.spin_once(node, timeout_sec=0.05)

        def call(client, request):
            try:
                return call_service(client, request, args.timeout, pause=spin, error=DreamVlaError)
            except DreamVlaError as exc:
                raise DreamVlaError(f"{exc} (is the recorder running?)") from None

        values = {k: v for k in ("instruction", "task") if (v := getattr(args, k, None)) is not None}
        if values:
            client = node.create_client(SetParameters, f"{args.node}/set_parameters")
            request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                        for k, v in values.items()])
            for name, result in zip(values, call(client, request).results, strict=True):
                if not result.successful:
                    raise DreamVlaError(f"the recorder refused {name}: {result.reason}")
        response = call(node.create_client(Trigger, f"{args.node}/{args.action}"), Trigger.Request())
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if response.success:
        print(response.message)
        return 0
    print(f"dream-vla-ros record {args.action}: refused: {response.message}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    import os
    import threading

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from dream_vla_ros.bringup import NodeSpec, dds_environment
    from dream_vla_ros.commands.up import parse_overrides
    from dream_vla_ros.configuration import read_yaml
    from dream_vla_ros.errors import ConfigError
    from dream_vla_ros.nodes.recorder_node import RecorderNode
    from dream_vla_ros.paths import resolve_config
    from dream_vla_ros.record.episode import RecorderError

    config_file = resolve_config(args.config)
    if "recorder" not in read_yaml(config_file):
        raise ConfigError(f"{config_file}: no 'recorder' section")
    overrides = parse_overrides([f"recorder.{item}" for item in args.set]).get("recorder", {})
    if args.out:
        overrides["out_dir"] = args.out
    if args.use_sim_time:
        overrides["use_sim_time"] = True
    spec = NodeSpec("recorder", "recorder", args.namespace, config_file, overrides)
    ros_args = ["dream-vla-ros", *spec.ros_args()]
    os.environ.update(dds_environment())
    rclpy.init(args=ros_args)
    node = None
    try:
        node = RecorderNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if args.no_keys or not sys.stdin.isatty():
            print("recorder running; services /recorder/start, /recorder/stop, /recorder/discard; Ctrl-C to quit")
        else:
            threading.Thread(target=_keyboard, args=(node, RecorderError), daemon=True).start()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()  # a running episode is closed readable, marked interrupted
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _keyboard(node, recorder_error) -> None:
    """Line commands from the terminal, beside the spinning executor (the recorder is thread-safe)."""
    import os
    import signal

    print("keys: 's [instruction]' start, 'k' keep, 'd' discard, 'q' quit")
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        try:
            if command in ("s", "start"):
                if rest.strip():
                    node.recorder.instruction = rest.strip()
                info = node.start_episode()
                print(f"recording {info['episode']}: {info['instruction']!r}")
            elif command in ("k", "keep", "stop"):
                summary = node.stop_episode(keep=True)
                print(f"kept {summary['episode']} ({summary['duration_s']:.1f} s) -> {summary['path']}")
                for warning in summary.get("warnings", []):
                    print(f"  warning: {warning}")
            elif command in ("d", "discard"):
                summary = node.stop_episode(keep=False)
                print(f"discarded {summary['episode']}")
            elif command in ("q", "quit", "exit"):
                break
            elif command:
                print("keys: 's [instruction]' start, 'k' keep, 'd' discard, 'q' quit")
        except recorder_error as exc:
            print(f"refused: {exc}")
    os.kill(os.getpid(), signal.SIGINT)  # quit (or end of input): stop the executor as Ctrl-C does
