"""Turn a bringup description into ``launch_ros`` actions (used by ``launch/*.launch.py``).

The launch files stay thin: they name a config and call :func:`generate`. Everything that does not need
``launch`` itself (which node, which executable, which parameters) is computed by :func:`node_kwargs`
from :mod:`dream_vla_ros.bringup`, and tested on machines without ``launch_ros``.
"""

from __future__ import annotations

from typing import Any

from dream_vla_ros.bringup import Bringup, describe, scoped
from dream_vla_ros.paths import PACKAGE

LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    # name -> (default, description)
    "config_file": ("", "params file to use instead of the packaged config"),
    "model": ("", "model directory or exported engine directory (empty: the config's choice)"),
    "backend": ("", "inference backend: torch, onnxruntime or tensorrt (empty: the config's choice)"),
    "device": ("", "where the backend runs: cpu, cuda or cuda:N (empty: the config's choice)"),
    "precision": ("", "backend precision, e.g. fp32, fp16 (empty: the config's, or fp32 when backend or device is "
                      "given)"),
    "namespace": ("", "namespace for every node"),
    "use_sim_time": ("false", "use /clock instead of the wall clock"),
    "camera_topics": ("", "comma-separated camera topics of the policy node, in model order (empty: the config's)"),
    "controller": ("", "controller receiving the windows of the chunk executor, in place of the config's "
                       "(also where joint_controllers names it; empty: the config's)"),
    "composed": ("false", "run the policy node and the chunk executor in one process"),
}
POLICY, EXECUTOR = "policy_node", "chunk_executor"


def node_kwargs(bringup: Bringup) -> list[dict[str, Any]]:
    """Keyword arguments of one ``launch_ros.actions.Node`` per node of ``bringup``."""
    return [
        {
            "package": PACKAGE,
            "executable": node.executable,
            "name": node.name,
            "namespace": node.namespace,
            "parameters": [str(node.params_file), node.parameters] if node.params_file else [node.parameters],
            "remappings": list(node.remappings),
            "output": "screen",
            "emulate_tty": True,
        }
        for node in bringup.nodes
    ]


def overrides(config: str, value: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Parameter overrides of the nodes of ``config`` for the launch argument values ``value`` (name -> text)."""
    from dream_vla_ros.configuration import ROS_PARAMETERS_KEY, read_yaml
    from dream_vla_ros.paths import resolve_config

    sections = {name: (section or {}).get(ROS_PARAMETERS_KEY) or {}
                for name, section in read_yaml(resolve_config(config)).items() if isinstance(section, dict)}
    policy: dict[str, Any] = {k: value[k] for k in ("model", "backend", "device", "precision") if value.get(k)}
    if not value.get("precision") and (value.get("backend") or value.get("device")):
        policy["precision"] = "fp32"  # the config's precision belongs to its backend and device (e.g. fp16 on TensorRT)
    if value.get("camera_topics"):
        policy["camera_topics"] = [t.strip() for t in value["camera_topics"].split(",") if t.strip()]
    executor: dict[str, Any] = {}
    if value.get("controller"):
        executor["controller"] = value["controller"]
        configured = sections.get(EXECUTOR, {})
        if configured.get("joint_controllers"):
            previous = configured.get("controller", "")
            executor["joint_controllers"] = [value["controller"] if c == previous else c
                                             for c in configured["joint_controllers"]]
    wanted = {POLICY: policy, EXECUTOR: executor}
    return {node: values for node, values in wanted.items() if values and node in sections}


def check_model(bringup: Bringup) -> None:
    """ConfigError naming what to set when a policy node of ``bringup`` has no model."""
    from dream_vla_ros.configuration import ROS_PARAMETERS_KEY, read_yaml
    from dream_vla_ros.errors import ConfigError

    for node in bringup.nodes:
        if node.executable != POLICY or node.parameters.get("model"):
            continue
        section = read_yaml(node.params_file).get(node.name, {}) if node.params_file else {}
        if not (section.get(ROS_PARAMETERS_KEY) or {}).get("model"):
            raise ConfigError(f"{node.name}: no model: pass model:=<model directory or ONNX export> (or set "
                              f"{node.name}.model in {node.params_file})")


def generate(config_name: str):
    """A LaunchDescription for ``config/<config_name>.yaml`` with the arguments of ``LAUNCH_ARGUMENTS``."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def setup(context, *_args, **_kwargs):
        value = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
        config = value["config_file"] or config_name
        bringup = describe(
            config,
            namespace=value["namespace"],
            use_sim_time=value["use_sim_time"].lower() == "true",
            overrides=overrides(config, value),
        )
        check_model(bringup)
        if value["composed"].lower() == "true":
            from dream_vla_ros.nodes.composed import compose

            bringup = compose(bringup)
        bringup = scoped(bringup)
        env = [SetEnvironmentVariable(k, v) for k, v in bringup.environment.items()]
        return env + [Node(**kwargs) for kwargs in node_kwargs(bringup)]

    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=setup)])
