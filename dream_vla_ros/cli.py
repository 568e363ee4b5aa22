"""``dream-vla-ros``: one command line for running, training, exporting and measuring the package.

Each subcommand is a module in :mod:`dream_vla_ros.commands` with ``add_arguments(parser)`` and
``main(args) -> int``; it is imported only when it runs, so ``--help`` is fast and a missing optional
dependency breaks only the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dream_vla_ros import __version__
from dream_vla_ros.errors import DreamVlaError

# name -> (module under dream_vla_ros.commands, one-line help). Only subcommands that work are listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "show version, ROS distribution, available backends and shipped models"),
    "up": ("up", "start the node graph of a named config as processes (no ros2 launch needed)"),
    "bench": ("bench", "run a benchmark and print its figures (JSON with --json)"),
    "collect": ("collect", "record scripted-expert demonstrations in simulation into a dataset"),
    "eval": ("eval", "evaluate a model closed loop through ROS 2 on the simulated arm (success, k, latency)"),
    "demo": ("demo", "the simulated arm + policy + executor over ROS 2 completing language goals"),
    "train": ("train", "train a policy on a dataset and write a checkpoint directory"),
    "goal-check": ("goal_check", "whether a model understands a goal (as the policy node judges it), as JSON"),
    "offline-eval": ("offline_eval", "a model's loss on a dataset (no simulator): per task, under exposure changes"),
    "record": ("record", "record demonstrations over ROS 2 into rosbag2 (MCAP) episodes"),
    "dataset": ("dataset", "build a training dataset from recorded episodes (rosbag2 directories)"),
    "export": ("export", "export a checkpoint to split ONNX graphs with a manifest (onnxruntime, tensorrt)"),
    "build-engine": ("build_engine", "build the TensorRT engines of an ONNX export into the engine cache"),
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep hand-written line breaks in descriptions and show defaults."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dream-vla-ros",
        description="Drive a robot arm with a recurrent-depth diffusion VLA over ROS 2.",
        epilog="Run 'dream-vla-ros <command> --help' for the options of a command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dream_vla_ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"dream_vla_ros.commands.{module_name}")
        doc = (module.__doc__ or help_text).strip()
        sub_parser = sub.add_parser(name, help=help_text, description=doc, formatter_class=_HelpFormatter)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except DreamVlaError as exc:
        print(f"dream-vla-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
