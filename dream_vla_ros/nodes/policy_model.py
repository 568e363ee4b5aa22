"""The policy node's parameters against the model it loaded (ROS-free): what *configure* checks and derives."""

from __future__ import annotations

from typing import Any

import numpy as np

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.nodes.conversions import JointMapper
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig


def robot_joints(config: PolicyNodeConfig, meta: Any) -> tuple[str, ...]:
    """The robot's joint names in the model's joint order (``joint_names``, else the model's own), after checking
    the cameras, joints and image size of ``config`` against the model's metadata (ConfigError naming what
    does not fit)."""
    if len(config.camera_topics) != len(meta.cameras):
        raise ConfigError(
            f"camera_topics: {len(config.camera_topics)} topic(s) for the model's {len(meta.cameras)} "
            f"camera(s) {list(meta.cameras)}"
        )
    joints = config.joint_names or meta.joint_names
    if len(joints) != len(meta.joint_names):
        raise ConfigError(
            f"joint_names: {len(joints)} names for the model's {len(meta.joint_names)} joints "
            f"{list(meta.joint_names)}"
        )
    size = config.expected_image_size
    if size is not None and min(size) * meta.crop_fraction < meta.image_size:
        raise ConfigError(
            f"image_width/image_height: {size[0]}x{size[1]} frames are smaller than the model's "
            f"{meta.image_size} px input (after a {meta.crop_fraction:g} centre crop)"
        )
    return tuple(joints)


def joint_mapper(config: PolicyNodeConfig, joints: tuple[str, ...], envelope: Any) -> JointMapper:
    """The joint-state reader: ``joints`` in model order; with ``joint_fault_margin`` >= 0 and a model that
    records its joint envelope, a position beyond the envelope plus that margin is a fault."""
    bounds = None
    if envelope.position_min and config.joint_fault_margin >= 0.0:
        margin = config.joint_fault_margin
        bounds = (np.asarray(envelope.position_min) - margin, np.asarray(envelope.position_max) + margin)
    return JointMapper(joints, strict=config.strict_joint_names, bounds=bounds)
