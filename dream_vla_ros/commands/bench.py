"""Run a benchmark and print its figures.

Every benchmark prints a human-readable summary, or one JSON object with --json. Ratios are measured
side by side in one run; absolute timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import importlib
import json

# name -> (module under dream_vla_ros.benchmarks, one-line help). Each module has
# ``add_arguments(parser)``, ``run(args) -> dict`` and ``summary(result) -> str``.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "policy": ("policy", "parameters, FLOPs and CPU latency of a policy preset"),
    "executor": ("executor", "chunk executor smoothness, tracking and cost per tick"),
    "latency": ("latency", "ROS 2 path latency: 640x480 camera -> policy node -> executor -> controller topic"),
    "recording": ("recording", "recorder CPU and dropped messages at 2x 640x480 @ 30 Hz + 500 Hz joint states; "
                  "dataset build throughput"),
    "backends": ("backends", "every inference backend side by side: latency, stages, k, parity to torch"),
    "memory": ("memory", "resident memory (and CUDA memory on a GPU) of the policy process per backend"),
    "nodes": ("nodes", "CPU share of the sim arm, policy node and executor processes in closed loop"),
    "soak": ("soak", "the whole graph for minutes (2x 30 Hz cameras, 500 Hz joint states): missed ticks, jitter, "
             "RSS growth, lag events"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="<benchmark>", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        module = importlib.import_module(f"dream_vla_ros.benchmarks.{module_name}")
        bench_parser = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        bench_parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
        module.add_arguments(bench_parser)
        bench_parser.set_defaults(_bench=module)


def main(args: argparse.Namespace) -> int:
    result = args._bench.run(args)
    print(json.dumps(result) if args.json else args._bench.summary(result))
    return 0
