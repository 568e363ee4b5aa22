"""The whole node graph in closed loop for the graph benchmarks (``bench nodes``, ``bench soak``).

The graph starts the way evaluation starts it (:class:`~dream_vla_ros.evaluation.session.RosSession`: the
``sim_arm`` config's processes in a private domain, the shipped model by default); the benchmark then runs
seeded episodes back to back, each with its instruction as the goal, while it samples the processes' CPU
time and memory (:mod:`dream_vla_ros.process_stats`) and reads each node's /diagnostics counters.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

from dream_vla_ros.process_stats import Sample, sample_all

NODES = ("sim_arm", "policy_node", "chunk_executor")
DEFAULT_MODEL = "metaworld_mt10"


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model of the policy node (shipped name or folder)")
    parser.add_argument("--config", default="sim_arm", help="node graph (config name or params file)")
    parser.add_argument("--tasks", default="reach", help="comma-separated MT10 tasks, run in turn")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM:=VALUE",
                        help="override one parameter of one node (repeatable)")


class DiagnosticsWatch:
    """The newest summary values on /diagnostics per node (status name = the node's name)."""

    def __init__(self, node: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self._lock = threading.Lock()
        self._values: dict[str, dict[str, str]] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_array,
                                 QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE))

    def _on_array(self, msg: Any) -> None:
        with self._lock:
            for status in msg.status:
                if ": " not in status.name:  # per-cause statuses are "<node>: <slot>"
                    self._values[status.name] = {kv.key: kv.value for kv in status.values}

    def numbers_of(self, nodes: tuple[str, ...], timeout: float = 10.0) -> dict[str, dict[str, float]]:
        """:meth:`numbers` once every node of ``nodes`` has published a summary (or after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            numbers = self.numbers()
            if all(node in numbers for node in nodes) or time.monotonic() > deadline:
                return numbers
            time.sleep(0.05)

    def numbers(self) -> dict[str, dict[str, float]]:
        """Node -> the numeric values of its latest summary status."""
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for node, values in self._values.items():
                for key, value in values.items():
                    try:
                        out.setdefault(node, {})[key] = float(value)
                    except ValueError:
                        continue
        return out


def counter_change(start: dict[str, dict[str, float]], end: dict[str, dict[str, float]], node: str,
                   key: str) -> float:
    """How much the /diagnostics counter ``key`` of ``node`` rose between two :meth:`DiagnosticsWatch.numbers`
    (nan when either lacks it)."""
    nan = float("nan")
    return end.get(node, {}).get(key, nan) - start.get(node, {}).get(key, nan)


def session_overrides(args: argparse.Namespace, extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Parameter overrides: the model, then ``extra`` (the benchmark's own), then ``--set``."""
    from dream_vla_ros.commands.up import parse_overrides

    out: dict[str, dict[str, Any]] = {"policy_node": {"model": args.model}}
    for source in (extra, parse_overrides(args.set)):
        for node, values in source.items():
            out.setdefault(node, {}).update(values)
    return out


def run_graph(
    args: argparse.Namespace,
    overrides: dict[str, dict[str, Any]],
    seconds: float,
    marks: tuple[float, ...],
    on_start: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Run episodes for ``seconds`` after the first chunk-driven episode starts; sample every process at each
    of ``marks`` (seconds from the start, plus the end). Returns ``{"samples": [{node: Sample}], "marks",
    "counters" (DiagnosticsWatch.numbers at the first and the last sample),
    "episodes", "seconds", "control_period"}``.

    ``on_start(session)`` runs once the graph is up (e.g. to start extra processes into its domain)."""
    from dream_vla_ros.errors import ConfigError, DreamVlaError
    from dream_vla_ros.evaluation.config import DEFAULT_SEED
    from dream_vla_ros.evaluation.graph import node_config
    from dream_vla_ros.evaluation.session import RosSession
    from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig

    tasks = [t for t in args.tasks.split(",") if t]
    session = RosSession(args.config, overrides=overrides)
    executor = next((node for node in session.bringup.nodes if node.executable == "chunk_executor"), None)
    if executor is None:
        raise ConfigError(f"{session.bringup.config_file}: the graph has no chunk_executor node")
    period = node_config(ExecutorNodeConfig, executor).chunking.control_period  # the executor's tick
    with session:
        if on_start is not None:
            on_start(session)
        diagnostics = DiagnosticsWatch(session.node)
        pids = {name: session.processes.processes[name].popen.pid for name in NODES
                if name in session.processes.processes}
        samples: list[dict[str, Sample]] = []
        pending = sorted(m for m in marks if 0.0 <= m < seconds)
        start = end = None
        episodes = 0
        while end is None or time.monotonic() < end:
            task = tasks[episodes % len(tasks)]
            event = session.reset(task, seed=DEFAULT_SEED + episodes)
            session.set_goal(event["instruction"])
            episodes += 1
            if start is None:
                start = time.monotonic()
                end = start + seconds
                samples.append(sample_all(pids))
                first = diagnostics.numbers_of(tuple(pids))  # a counter missing at the start would read nan
            while time.monotonic() < end:
                if pending and time.monotonic() - start >= pending[0]:
                    pending.pop(0)
                    samples.append(sample_all(pids))
                remaining = min(end, start + pending[0] if pending else end) - time.monotonic()
                if session.wait_episode_end(event["episode"], timeout=max(0.01, min(remaining, 1.0))):
                    break
        samples.append(sample_all(pids))
        last = diagnostics.numbers()
        dead = [n for n, p in session.processes.processes.items() if not p.running]
        if dead:
            raise DreamVlaError(f"{', '.join(dead)} exited during the run:\n{session.outputs()}")
        return {"samples": samples, "counters": (first, last), "episodes": episodes,
                "seconds": time.monotonic() - start, "control_period": period}

