"""Start the node graph of a named config as separate processes, the way `ros2 launch` would.

For machines without launch_ros (e.g. a plain venv with the ROS 2 wheels). The graph comes from the
config file itself (each top-level section is one node), so `up sim_arm` and
`ros2 launch dream_vla_ros sim_arm.launch.py` start the same nodes with the same parameters.
Ctrl-C stops every process cleanly.

examples:
  dream-vla-ros up sim_arm
  dream-vla-ros up jetson_arm --set policy_node.model:=/data/models/my_arm --namespace arm
  dream-vla-ros up ./my_robot.yaml --dry-run
  dream-vla-ros up sim_arm --composed       (policy node and chunk executor in one process)
  dream-vla-ros up sim_arm --only policy_node,chunk_executor
"""

from __future__ import annotations

import argparse
import shlex
import signal
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config name under config/ (e.g. sim_arm) or a path to a params file")
    parser.add_argument("--namespace", default="", help="namespace for every node")
    parser.add_argument("--use-sim-time", action="store_true", help="set use_sim_time on every node")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM:=VALUE",
        help="override one parameter of one node (repeatable)",
    )
    parser.add_argument("--only", action="append", default=[], metavar="NODE[,NODE...]",
                        help="start only these nodes (repeatable, or a comma-separated list)")
    parser.add_argument(
        "--composed", action="store_true", help="run the policy node and the chunk executor in one process"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")


def parse_overrides(items: list[str]) -> dict[str, dict[str, object]]:
    """``["policy_node.model:=x"]`` -> ``{"policy_node": {"model": "x"}}`` (values parsed as YAML scalars)."""
    import yaml

    from dream_vla_ros.errors import ConfigError

    out: dict[str, dict[str, object]] = {}
    for item in items:
        target, sep, value = item.partition(":=")
        node, dot, param = target.partition(".")
        if not sep or not dot or not node or not param:
            raise ConfigError(f"--set {item!r}: expected NODE.PARAM:=VALUE")
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


def only_nodes(items: list[str]) -> tuple[str, ...]:
    """``--only`` values (each one name or a comma-separated list) -> node names, in order, without repeats."""
    names = [name.strip() for item in items for name in item.split(",")]
    return tuple(dict.fromkeys(name for name in names if name))


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    from dream_vla_ros.bringup import describe, scoped
    from dream_vla_ros.process_group import ProcessGroup, node_argv, start_bringup

    bringup = describe(
        args.config,
        namespace=args.namespace,
        use_sim_time=args.use_sim_time,
        overrides=parse_overrides(args.set),
        only=only_nodes(args.only),
    )
    if args.composed:
        import tempfile

        from dream_vla_ros.nodes.composed import compose

        bringup = compose(bringup, tempfile.mkdtemp(prefix="dream_vla_up_"))
    bringup = scoped(bringup)
    if args.dry_run:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in bringup.environment.items())
        for node in bringup.nodes:
            print(" ".join(filter(None, [env, shlex.join(node_argv(node.module, node.ros_args()))])))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # `kill`/`timeout` stop the graph like Ctrl-C does
    with ProcessGroup() as group:
        start_bringup(group, bringup)
        print(f"started {len(bringup.nodes)} node(s) from {bringup.config_file}; Ctrl-C to stop")
        try:
            while all(p.running for p in group.processes.values()):
                time.sleep(0.2)
        except KeyboardInterrupt:
            print("stopping...")
        codes = group.stop()
    failed = {name: code for name, code in codes.items() if code not in (0, None, -2, 130)}
    for name, code in failed.items():
        print(f"{name} exited with {code}")
    return 1 if failed else 0
