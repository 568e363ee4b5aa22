"""Policy node and chunk executor in one process (the lowest-latency layout: no cross-process hop).

The two nodes keep their names (``policy_node``, ``chunk_executor``) and read their own sections of the
params file, exactly as when they run separately; they share one executor (``chunk_executor.executor_threads``;
inference runs on the policy node's worker thread). A ``__node:=`` remap on the
command line is ignored, since it would give both nodes one name.

:func:`compose` turns a bringup description with both nodes into one with a single ``composed`` process and
a params file that holds each node's section plus its overrides, and ``use_sim_time`` for both (used by
``up --composed`` and the ``composed:=true`` launch argument).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from dream_vla_ros.bringup import Bringup, NodeSpec

POLICY, EXECUTOR, COMPOSED = "policy_node", "chunk_executor", "composed"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def compose(bringup: Bringup, directory: str | Path | None = None) -> Bringup:
    """Replace the policy node and the chunk executor of ``bringup`` by one composed process."""
    from dream_vla_ros.configuration import ROS_PARAMETERS_KEY, read_yaml, unflatten, write_params_file
    from dream_vla_ros.errors import ConfigError

    pair = [n for n in bringup.nodes if n.executable in (POLICY, EXECUTOR)]
    if {n.executable for n in pair} != {POLICY, EXECUTOR}:
        raise ConfigError(f"{bringup.config_file}: composing needs both a {POLICY} and a {EXECUTOR} section")
    data = read_yaml(bringup.config_file)
    # use_sim_time goes to the `/**` section: it reaches both nodes whatever the composed process is called.
    shared = dict((data.get("/**") or {}).get(ROS_PARAMETERS_KEY) or {})
    document: dict[str, Any] = {"/**": {ROS_PARAMETERS_KEY: shared}}
    for node in pair:
        section = dict(data.get(node.name, {}).get(ROS_PARAMETERS_KEY) or {})
        overrides = {k: v for k, v in node.parameters.items() if k != "use_sim_time"}
        document[node.name] = {ROS_PARAMETERS_KEY: _merge(section, unflatten(overrides))}
        shared.update({k: v for k, v in node.parameters.items() if k == "use_sim_time"})
    folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="dream_vla_composed_"))
    path = folder / f"{bringup.config_file.stem}_composed.yaml"
    write_params_file(path, document)
    composed = NodeSpec(COMPOSED, COMPOSED, pair[0].namespace, path)
    others = tuple(n for n in bringup.nodes if n not in pair)
    return dataclasses.replace(bringup, nodes=(composed, *others))


def strip_node_remap(argv: list[str]) -> list[str]:
    """``argv`` without ``-r/--remap __node:=X`` pairs (one name cannot fit two nodes)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("-r", "--remap") and i + 1 < len(argv) and argv[i + 1].startswith("__node:="):
            skip = True
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.executor_node import ExecutorNode
    from dream_vla_ros.nodes.policy_node import PolicyNode
    from dream_vla_ros.nodes.runtime import run

    argv = strip_node_remap(list(sys.argv if argv is None else argv))
    return run([lambda: PolicyNode(POLICY), lambda: ExecutorNode(EXECUTOR)], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
