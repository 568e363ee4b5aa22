"""Which nodes, with which parameters, for a named config: the node graph behind launch files and ``up``.

A config file (``config/<name>.yaml``) is a ROS 2 params file. Its top-level keys name the nodes to run:
each section is one node, and its name is the node kind (``EXECUTABLES``), so a custom config starts
exactly the nodes it configures. The same description is turned into ``launch_ros`` actions
by ``launch/*.launch.py`` (on a full ROS install) and into processes by ``dream-vla-ros up`` (anywhere
rclpy runs), so both start the same graph with the same parameters.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_vla_ros.configuration import ROS_PARAMETERS_KEY, read_yaml, write_params_file
from dream_vla_ros.errors import ConfigError
from dream_vla_ros.paths import config_dir, resolve_config

# Node kind (= default node name = executable installed in lib/dream_vla_ros) -> Python module with main().
# setup.py declares one console script per entry; a test keeps the two in step.
EXECUTABLES: dict[str, str] = {
    "policy_node": "dream_vla_ros.nodes.policy_node",
    "chunk_executor": "dream_vla_ros.nodes.executor_node",
    "composed": "dream_vla_ros.nodes.composed",
    "sim_arm": "dream_vla_ros.nodes.sim.sim_arm_node",
    "recorder": "dream_vla_ros.nodes.recorder_node",
}

# Fast DDS profile for camera-sized messages (16 MB shared-memory segment; see the README).
FASTDDS_PROFILE = "fastdds_large_data.xml"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, as ``ros2 run`` / launch_ros would start it."""

    executable: str
    name: str
    namespace: str = ""
    params_file: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def module(self) -> str:
        return EXECUTABLES[self.executable]

    def ros_args(self) -> list[str]:
        """The ``--ros-args ...`` part of the command line for this node."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:=/{self.namespace.strip('/')}"]
        if self.params_file is not None:
            args += ["--params-file", str(self.params_file)]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={_ros_literal(value)}"]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return args


@dataclass(frozen=True)
class Bringup:
    """The whole graph of a config, plus the environment its processes need."""

    config_file: Path
    nodes: tuple[NodeSpec, ...]
    environment: dict[str, str]


def _ros_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_ros_literal(v) for v in value) + "]"
    return str(value)


def dds_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables that make large images travel well: the Fast DDS profile when Fast DDS is used."""
    base = dict(os.environ if base is None else base)
    extra: dict[str, str] = {}
    rmw = base.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if rmw.startswith("rmw_fastrtps") and "FASTDDS_DEFAULT_PROFILES_FILE" not in base:
        extra["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_dir() / FASTDDS_PROFILE)
    return extra


def describe(
    config: str | Path,
    *,
    namespace: str = "",
    use_sim_time: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    only: tuple[str, ...] = (),
) -> Bringup:
    """The node graph of ``config`` (a name under ``config/`` or a path to a params file).

    ``overrides`` maps node name -> parameter overrides (e.g. ``{"policy_node": {"model": "..."}}``);
    ``only`` restricts the graph to the named nodes.
    """
    path = resolve_config(config)
    data = read_yaml(path)
    overrides = overrides or {}
    nodes = []
    for name, section in data.items():
        if name == "/**":
            continue
        if not isinstance(section, dict) or ROS_PARAMETERS_KEY not in section:
            raise ConfigError(f"{path}: section {name!r} must hold a '{ROS_PARAMETERS_KEY}' mapping")
        if name not in EXECUTABLES:
            raise ConfigError(f"{path}: unknown node {name!r}; known node kinds: {', '.join(sorted(EXECUTABLES))}")
        if only and name not in only:
            continue
        parameters = {"use_sim_time": use_sim_time, **overrides.get(name, {})}
        nodes.append(NodeSpec(name, name, namespace, path, parameters))
    missing = [name for name in only if name not in data]
    if missing:
        known = ", ".join(n for n in data if n != "/**")
        raise ConfigError(f"{path.name} has no node {', '.join(map(repr, missing))}; its nodes: {known}")
    unknown = set(overrides) - {n.name for n in nodes}
    if unknown:
        raise ConfigError(f"overrides name nodes not in {path.name}: {', '.join(sorted(unknown))}")
    if not nodes:
        raise ConfigError(f"{path}: no nodes to start")
    return Bringup(path, tuple(nodes), dds_environment())


def scoped(bringup: Bringup, directory: str | Path | None = None) -> Bringup:
    """``bringup`` with the params file of every namespaced node rewritten so that its sections reach it.

    A params file names nodes by fully qualified name: a ``policy_node:`` section is ``/policy_node`` and misses
    ``/arm/policy_node``. The rewritten file (in ``directory``, default a new temporary one) keys each node
    section ``/**/<name>`` (that name in any namespace); without namespaces ``bringup`` is returned as it is.
    """
    if not any(node.namespace and node.params_file for node in bringup.nodes):
        return bringup
    folder = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="dream_vla_scoped_"))
    written: dict[Path, Path] = {}
    nodes = []
    for node in bringup.nodes:
        if node.namespace and node.params_file is not None:
            if node.params_file not in written:
                document = {(key if key.startswith("/") else f"/**/{key}"): section
                            for key, section in read_yaml(node.params_file).items()}
                target = folder / f"{len(written)}_{node.params_file.stem}.yaml"
                written[node.params_file] = write_params_file(target, document)
            node = dataclasses.replace(node, params_file=written[node.params_file])
        nodes.append(node)
    return dataclasses.replace(bringup, nodes=tuple(nodes))
