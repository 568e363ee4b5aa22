"""The node graph an evaluation drives: its parameters and where its nodes listen.

- :class:`GraphEndpoints`: the node names and topics a client of the graph needs, read from the params file and
  the overrides through the nodes' own config classes (``nodes/*_config.py``), so their defaults and
  validation are the nodes' own;
- :func:`policy_overrides` / :func:`clock_overrides`: the parameters of an evaluation graph (the model and its
  halting, the arm's cameras wired to the model, every node on the arm's ``/clock``);
- the checkpoint's cameras and its cap on core iterations, from its config.json (no torch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dream_vla_ros.bringup import Bringup, NodeSpec
from dream_vla_ros.configuration import from_mapping, load_node_config, unflatten
from dream_vla_ros.errors import ConfigError
from dream_vla_ros.evaluation.config import EvalConfig, Halting
from dream_vla_ros.evaluation.pacing import PacingConfig
from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig
from dream_vla_ros.nodes.sim.sim_arm_config import SimArmNodeConfig
from dream_vla_ros.policy.config import ModelConfig
from dream_vla_ros.record.config import RecorderConfig

T = TypeVar("T")


def node_config(cls: type[T], node: NodeSpec) -> T:
    """The config ``node`` starts with: its params-file section plus the overrides of its own fields (ROS-wide
    parameters such as ``use_sim_time`` are not the node's)."""
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {key: value for key, value in node.parameters.items() if key.split(".")[0] in names}
    if node.params_file is None:
        return from_mapping(cls, unflatten(overrides))
    return load_node_config(cls, node.params_file, node.name, overrides)


def resolve(name: str, namespace: str, node: str = "") -> str:
    """A topic or service name as ROS resolves it for a node ``node`` in ``namespace`` (absolute names stay)."""
    ns = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
    if name.startswith("/"):
        return name
    if name.startswith("~/"):
        return f"{ns}/{node}/{name[2:]}"
    return f"{ns}/{name}"


def node_path(node: NodeSpec) -> str:
    """The fully qualified name of ``node`` (``/<namespace>/<name>``)."""
    return resolve(node.name, node.namespace)


@dataclass(frozen=True)
class GraphEndpoints:
    """Where the nodes of a graph listen and speak, fully qualified.

    sim: the simulated arm node; trajectory_topic: its controller's JointTrajectory input; camera_topic: its
    first camera; joint_states_topic: its joint states.
    goal_topic: where goals go: the policy node's goal input (without one the recorder's, else the policy
        node's default); policy: the policy node ("" without one).
    executor: the chunk executor ("" without one); controller_interface / jog_topic: how it commands the arm
    and its Servo command topic.
    recorder: the recorder node ("" without one).
    lifecycle: (process name, node) of every lifecycle node that starts itself (``autostart``): the graph is up
    once each says ``active``.
    """

    sim: str
    trajectory_topic: str
    camera_topic: str
    joint_states_topic: str
    goal_topic: str
    policy: str = ""
    executor: str = ""
    controller_interface: str = "topic"
    jog_topic: str = ""
    recorder: str = ""
    lifecycle: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, bringup: Bringup) -> GraphEndpoints:
        """The endpoints of ``bringup``'s graph (it must have a ``sim_arm`` node)."""
        nodes = {n.executable: n for n in bringup.nodes}
        if "sim_arm" not in nodes:
            raise ConfigError(f"{bringup.config_file}: the graph has no sim_arm node")
        sim_node = nodes["sim_arm"]
        sim = node_config(SimArmNodeConfig, sim_node)
        values: dict[str, Any] = {
            "sim": node_path(sim_node),
            "trajectory_topic": resolve(sim.trajectory_topic, sim_node.namespace),
            "camera_topic": resolve(sim.camera_topics[0], sim_node.namespace),
            "joint_states_topic": resolve(sim.joint_states_topic, sim_node.namespace),
            "goal_topic": resolve(PolicyNodeConfig.goal_topic, sim_node.namespace),
        }
        if "recorder" in nodes:
            node = nodes["recorder"]
            values.update(recorder=node_path(node),
                          goal_topic=resolve(node_config(RecorderConfig, node).goal_topic, node.namespace))
        lifecycle = []
        if "policy_node" in nodes:
            node = nodes["policy_node"]
            policy = node_config(PolicyNodeConfig, node)
            values.update(policy=node_path(node), goal_topic=resolve(policy.goal_topic, node.namespace))
            if policy.autostart:
                lifecycle.append((node.name, values["policy"]))
        if "chunk_executor" in nodes:
            node = nodes["chunk_executor"]
            executor = node_config(ExecutorNodeConfig, node)
            values.update(executor=node_path(node), controller_interface=executor.controller_interface,
                          jog_topic=resolve(executor.servo.command_topic, node.namespace))
            if executor.autostart:
                lifecycle.append((node.name, values["executor"]))
        return cls(**values, lifecycle=tuple(lifecycle))


# -- the checkpoint ------------------------------------------------------------------------------------------
def checkpoint_model(model: str | Path) -> ModelConfig:
    """The model config of a checkpoint (its config.json, validated; no weights, no torch)."""
    from dream_vla_ros.paths import resolve_model
    from dream_vla_ros.policy.config import model_config_from_mapping, read_checkpoint_config

    return model_config_from_mapping(dict(read_checkpoint_config(resolve_model(model)).get("model", {})))


def checkpoint_cameras(model: str | Path) -> tuple[str, ...]:
    """The cameras a checkpoint reads, in its token order (``vision.cameras`` in its config.json)."""
    return checkpoint_model(model).vision.cameras


def checkpoint_k_max(model: str | Path) -> int:
    """The checkpoint's default cap on core iterations (``halting.k_max`` in its config.json)."""
    return checkpoint_model(model).halting.k_max


# -- parameters of an evaluation graph -----------------------------------------------------------------------
def camera_wiring(cameras: Sequence[str]) -> tuple[list[str], list[str]]:
    """Simulated-arm cameras and their topics (``/camera/<name>/image_raw``) for a model reading ``cameras``."""
    from dream_vla_ros.sim.scene import CAMERAS

    unknown = [c for c in cameras if c not in CAMERAS]
    if not cameras or unknown:
        raise ConfigError(f"model: it reads cameras {list(cameras)}; the simulated arm has {', '.join(CAMERAS)}")
    return list(cameras), [f"/camera/{name}/image_raw" for name in cameras]


def clock_overrides(pacing: PacingConfig, overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``overrides`` with every node on the arm's /clock (unless wall-clock) and the arm's first pace."""
    sim_time = not pacing.wall_clock
    out = {node: {**values, "use_sim_time": sim_time} for node, values in overrides.items()}
    out["sim_arm"] = {**out.get("sim_arm", {"use_sim_time": sim_time}), "real_time_factor": pacing.initial_factor}
    return out


def policy_overrides(config: EvalConfig, halting: Halting, profile_path: Path) -> dict[str, dict[str, Any]]:
    """Node parameters of an evaluation graph: the model, its halting, and the arm's cameras wired to it."""
    cameras, topics = camera_wiring(checkpoint_cameras(config.model))
    overrides = {
        "policy_node": {"model": str(config.model), "device": config.device, "threads": config.threads,
                        "profile_path": str(profile_path), "camera_topics": topics, **halting.overrides(),
                        "added_delay": config.added_delay, "added_delay_jitter": config.added_delay_jitter},
        "sim_arm": {"task": config.tasks[0], "max_steps": config.max_steps, "phrasing_split": config.phrasings,
                    "cameras": cameras, "camera_topics": topics},
        "chunk_executor": {},
    }
    if config.controller_interface != "topic":
        overrides["chunk_executor"]["controller_interface"] = config.controller_interface
    return clock_overrides(config.pacing, overrides)
