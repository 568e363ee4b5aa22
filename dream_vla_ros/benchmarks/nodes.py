"""CPU share of each node in closed loop: the simulated arm (both cameras), the policy node (shipped model) and
the chunk executor, each its own process, while the arm executes a goal.

The graph is the ``sim_arm`` config started like ``dream-vla-ros up sim_arm`` (through evaluation's session);
one episode of the first task runs without a step limit (``sim_arm.max_steps: 0``) so the goal is being
executed for the whole measurement. Each node's CPU share is its process's CPU time (utime + stime of all its
threads, from /proc or psutil) over the measured wall time, in per cent of one core;
``policy_between_inferences_cpu_percent`` leaves out the inference thread's CPU time inside the engine (the
policy node's /diagnostics counter ``inference cpu_s``), i.e. what the node costs besides its model.
``lag_events``: the times
the simulation fell behind the wall clock since the episode started (warm-up included; its /diagnostics counter).
"""

from __future__ import annotations

import argparse
from typing import Any

from dream_vla_ros.benchmarks.closed_loop import add_graph_arguments, counter_change, run_graph, session_overrides
from dream_vla_ros.process_stats import cpu_percent

WARMUP_S = 5.0
KEYS = {"chunk_executor": "executor_cpu_percent", "policy_node": "policy_cpu_percent", "sim_arm": "sim_cpu_percent"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration after warm-up (s)")
    add_graph_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = session_overrides(args, {"sim_arm": {"max_steps": 0}})
    result = run_graph(args, overrides, WARMUP_S + args.seconds, marks=(WARMUP_S,))
    start, end = result["samples"][1], result["samples"][-1]
    out: dict[str, Any] = {key: round(cpu_percent(start[node], end[node]), 2) for node, key in KEYS.items()}
    first, last = result["counters"]
    seconds = end["sim_arm"].wall - start["sim_arm"].wall
    inference = counter_change(first, last, "policy_node", "inference cpu_s")
    out["policy_between_inferences_cpu_percent"] = round(out["policy_cpu_percent"] - 100.0 * inference / seconds, 2)
    out["inferences_per_s"] = round(counter_change(first, last, "policy_node", "inferences") / seconds, 2)
    out["lag_events"] = counter_change(first, last, "sim_arm", "lag_events")
    out["seconds"] = round(seconds, 2)
    return out


def summary(result: dict[str, Any]) -> str:
    return (f"CPU over {result['seconds']:.0f} s (per cent of one core): "
            f"executor {result['executor_cpu_percent']:.1f}, policy node {result['policy_cpu_percent']:.1f} "
            f"({result['policy_between_inferences_cpu_percent']:.1f} outside its "
            f"{result['inferences_per_s']:.1f} inferences/s), sim arm {result['sim_cpu_percent']:.1f}; "
            f"lag events {result['lag_events']:g}")
