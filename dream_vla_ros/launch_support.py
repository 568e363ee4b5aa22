"""Turn a bringup description into ``launch_ros`` actions (used by ``launch/*.launch.py``).

The launch files stay thin: they name a config and call :func:`generate`. Everything that does not need
``launch`` itself (which node, which executable, which parameters) is computed by :func:`node_kwargs`
from :mod:`dream_vla_ros.bringup`, and tested on machines without ``launch_ros``.
"""

from __future__ import annotations

from typing import Any

from dream_vla_ros.bringup import Bringup, describe
from dream_vla_ros.paths import PACKAGE

LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    # name -> (default, description)
    "config_file": ("", "params file to use instead of the packaged config"),
    "model": ("", "model directory or exported engine directory (empty: the config's choice)"),
    "backend": ("", "inference backend: torch, onnxruntime or tensorrt (empty: the config's choice)"),
    "namespace": ("", "namespace for every node"),
    "use_sim_time": ("false", "use /clock instead of the wall clock"),
    "camera_topics": ("", "comma-separated camera topics of the policy node, in model order (empty: the config's)"),
    "controller": ("", "controller receiving the windows of the chunk executor (empty: the config's)"),
    "composed": ("false", "run the policy node and the chunk executor in one process"),
}


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


def _overrides(
    config: str, model: str, backend: str, camera_topics: str = "", controller: str = ""
) -> dict[str, dict[str, Any]]:
    from dream_vla_ros.configuration import read_yaml
    from dream_vla_ros.paths import resolve_config

    present = set(read_yaml(resolve_config(config)))
    policy: dict[str, Any] = {k: v for k, v in (("model", model), ("backend", backend)) if v}
    if camera_topics:
        policy["camera_topics"] = [t.strip() for t in camera_topics.split(",") if t.strip()]
    wanted = {"policy_node": policy, "chunk_executor": {"controller": controller} if controller else {}}
    return {node: values for node, values in wanted.items() if values and node in present}


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
            overrides=_overrides(config, value["model"], value["backend"], value["camera_topics"],
                                 value["controller"]),
        )
        if value["composed"].lower() == "true":
            from dream_vla_ros.nodes.composed import compose

            bringup = compose(bringup)
        env = [SetEnvironmentVariable(k, v) for k, v in bringup.environment.items()]
        return env + [Node(**kwargs) for kwargs in node_kwargs(bringup)]

    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=setup)])
