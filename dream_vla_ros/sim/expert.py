"""Joint-space demonstrations from Meta-World's scripted experts.

The experts (``metaworld.policies``) command hand displacements. :func:`run_expert` runs one through the
arm's own mocap/weld control (the weld acts as inverse kinematics) and records, after every step, the arm's
joint positions ``qpos[0:7]`` plus the gripper target as that step's joint-position target.
:func:`replay` drives those targets through the joint-position controller from the same seeded start; a
demonstration is usable when its replay succeeds. :func:`record_demonstration` does both and, during the
replay, records the images and joint states the policy will see.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.sim.joint_arm import JOINT_NAMES, NUM_ARM_JOINTS, JointArm, gripper_from_effort
from dream_vla_ros.sim.tasks import task_spec

HOLD_STEPS = 10
"""Steps the expert keeps acting after the first success, so demonstrations show the goal held."""
MAX_STEPS = 500
"""Steps after which an expert episode ends without success (Meta-World's episode length)."""


@dataclass(frozen=True)
class Demonstration:
    """An expert episode in joint space.

    targets: [T, 8] joint-position targets (rad) and gripper target ([-1 open, +1 closed]), one per step.
    success: the expert solved the task.
    steps_to_success: 1-based step of the first success, or None.
    """

    task: str
    seed: int
    targets: np.ndarray
    success: bool
    steps_to_success: int | None


@dataclass(frozen=True)
class Replay:
    """Joint targets driven through the joint-position arm.

    positions: [T, 8] joint state observed before each step (what a policy sees with that step's image).
    images: camera -> uint8 [T, H, W, 3] rendered before each step (empty unless rendering was asked).
    tracking_error: max |joint - target| over the arm joints after each step, [T] rad.
    """

    success: bool
    steps_to_success: int | None
    positions: np.ndarray
    images: dict[str, np.ndarray]
    tracking_error: np.ndarray


def run_expert(
    arm: JointArm, task: str, seed: int, max_steps: int = MAX_STEPS, hold_steps: int = HOLD_STEPS
) -> Demonstration:
    """Run the scripted expert of ``task`` from the seeded start for at most ``max_steps`` steps; stop
    ``hold_steps`` after success."""
    from metaworld.policies import ENV_POLICY_MAP

    spec = task_spec(task)
    policy = ENV_POLICY_MAP[spec.env_name]()
    arm.reset(spec.name, seed)
    targets = np.empty((max_steps, len(JOINT_NAMES)))
    first_success: int | None = None
    steps = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the experts warn when their proportional gains saturate
        while steps < max_steps:
            action = policy.get_action(arm.task_observation())
            gripper = gripper_from_effort(float(action[3]))
            state = arm.step_mocap(action[:3], gripper)
            targets[steps, :NUM_ARM_JOINTS] = state.positions[:NUM_ARM_JOINTS]
            targets[steps, NUM_ARM_JOINTS] = gripper
            steps += 1
            if first_success is None and state.success_now:
                first_success = steps
            if first_success is not None and steps >= first_success + hold_steps:
                break
    return Demonstration(
        task=spec.name,
        seed=int(seed),
        targets=targets[:steps].copy(),
        success=first_success is not None,
        steps_to_success=first_success,
    )


def replay(arm: JointArm, task: str, seed: int, targets: np.ndarray, render: bool = False) -> Replay:
    """Drive ``targets`` [T, 8] through the joint-position arm from the seeded start of ``task``."""
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[1] != len(JOINT_NAMES) or len(targets) == 0:
        raise InputError(f"targets: expected [T, {len(JOINT_NAMES)}] with T >= 1, got {targets.shape}")
    state = arm.reset(task, seed)
    steps = len(targets)
    positions = np.empty((steps, len(JOINT_NAMES)))
    errors = np.empty(steps)
    cameras = arm.config.cameras if render else ()
    images = {name: np.empty((steps, arm.config.height, arm.config.width, 3), dtype=np.uint8) for name in cameras}
    first_success: int | None = None
    for t in range(steps):
        positions[t] = state.positions
        for name in cameras:
            images[name][t] = arm.render(name)
        state = arm.step(targets[t])
        errors[t] = float(np.max(np.abs(state.positions[:NUM_ARM_JOINTS] - targets[t, :NUM_ARM_JOINTS])))
        if first_success is None and state.success_now:
            first_success = t + 1
    return Replay(
        success=first_success is not None,
        steps_to_success=first_success,
        positions=positions,
        images=images,
        tracking_error=errors,
    )


def record_demonstration(
    arm: JointArm, task: str, seed: int, hold_steps: int = HOLD_STEPS
) -> tuple[Demonstration, Replay | None]:
    """Expert run, then a rendered replay of its joint targets; the replay is None when the expert failed.

    The pair is a usable demonstration when ``replay.success``.
    """
    demo = run_expert(arm, task, seed, hold_steps=hold_steps)
    if not demo.success:
        return demo, None
    return demo, replay(arm, task, seed, demo.targets, render=True)
