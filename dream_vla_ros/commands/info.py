"""Show the package version, the detected ROS 2 distribution, which inference backends can run here
(and why the others cannot), and the model directories that were found."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    from dream_vla_ros.environment_report import collect_info

    info = collect_info()
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"dream_vla_ros {info['version']}  (Python {info['python']})")
    print(f"ROS 2 distribution: {info['ros_distro'] or 'not found (install the ros extra or source ROS 2)'}")
    print("backends:")
    for name, backend in info["backends"].items():
        mark = "yes" if backend["available"] else "no "
        print(f"  {name:<12} {mark}  {backend['reason']}")
    print("models:")
    for model in info["models"] or ["(none found)"]:
        print(f"  {model}")
    return 0
