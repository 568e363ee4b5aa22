"""The joint-position Meta-World arm: expert replay, reproducibility, upright cameras, gripper unit."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("metaworld")

from dream_vla_ros.errors import ConfigError, InputError
from dream_vla_ros.sim.expert import replay, run_expert
from dream_vla_ros.sim.joint_arm import (
    CONTROL_DT,
    JOINT_NAMES,
    JointArm,
    SimArmConfig,
    gripper_from_effort,
)
from dream_vla_ros.sim.scene import UPSIDE_DOWN_CAMERAS
from dream_vla_ros.sim.tasks import MT10

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def arm():
    with JointArm(SimArmConfig(task="reach", cameras=("corner", "corner4"), width=64, height=64)) as arm:
        yield arm


@pytest.mark.parametrize("task", MT10)
def test_expert_joint_targets_replay_successfully(arm, task):
    seed = 12
    demo = run_expert(arm, task, seed)
    assert demo.success, f"the scripted expert failed {task} seed {seed}"
    assert demo.targets.shape == (len(demo.targets), len(JOINT_NAMES))
    start = arm.reset(task, seed).goal_distance
    result = replay(arm, task, seed, demo.targets)
    assert result.success
    assert 0.0 <= arm.state().goal_distance < start  # the expert brought the task towards its goal
    # Before any contact (the first 20 steps) the joints track within about a centiradian.
    assert float(np.max(result.tracking_error[:20])) < 0.03


def test_same_seed_gives_identical_states_and_images(arm):
    demo = run_expert(arm, "pick-place", 3)
    targets = demo.targets[:25]

    def rollout(a: JointArm):
        states, images = [a.reset("pick-place", 3).positions], [a.render()]
        for target in targets:
            states.append(a.step(target).positions)
            images.append(a.render())
        return np.stack(states), np.stack(images), a.task_observation()

    first = rollout(arm)
    second = rollout(arm)
    with JointArm(arm.config) as fresh:
        third = rollout(fresh)
    for other in (second, third):
        for x, y in zip(first, other, strict=True):
            np.testing.assert_array_equal(x, y)
    arm.reset("pick-place", 4)
    assert not np.allclose(arm.task_observation()[4:7], first[2][4:7]), "another seed moves the object"


def test_cameras_are_upright(arm):
    """Raising the hand moves the red arm up in every corner image; the table fills the lower half."""

    def red_row(image):
        pixels = image.astype(int)
        mask = (pixels[..., 0] > 90) & (pixels[..., 1] < 50) & (pixels[..., 2] < 50)
        return np.nonzero(mask)[0].mean()

    def wood_fraction(image):
        rgb = image.astype(float) + 1.0
        ratio_g, ratio_b = rgb[..., 1] / rgb[..., 0], rgb[..., 2] / rgb[..., 0]
        mask = (rgb[..., 0] > 50) & (ratio_g > 0.45) & (ratio_g < 0.85) & (ratio_b < 0.7)
        half = len(image) // 2
        return mask[:half].mean(), mask[half:].mean()

    arm.reset("reach", 0)
    before = {name: arm.render(name) for name in sorted(UPSIDE_DOWN_CAMERAS)}
    for _ in range(30):
        arm.step_mocap(np.array([0.0, 0.0, 1.0]), -1.0)
    for name, image in before.items():
        after = arm.render(name)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert red_row(after) < red_row(image) - 1.0, f"{name}: the raised hand is not higher in the image"
    for name in ("corner", "corner4"):
        top, bottom = wood_fraction(before[name])
        assert bottom > 2 * top, f"{name}: the table is not at the bottom"


@pytest.mark.parametrize("command", [-1.0, -0.5, 0.0, 0.5, 1.0])
def test_gripper_state_settles_at_its_command(arm, command):
    state = arm.reset("reach", 2)
    hold = state.positions[:7]
    for _ in range(40):
        state = arm.step(hold, command)
    assert state.positions[7] == pytest.approx(command, abs=0.05)
    assert arm.joint_targets()[7] == command
    assert np.max(np.abs(state.positions[:7] - hold)) < 0.01, "the arm holds its position"


def test_gripper_effort_mapping():
    assert gripper_from_effort(-1.0) == -1.0
    assert gripper_from_effort(0.0) == -1.0
    assert gripper_from_effort(0.6) == 1.0
    assert gripper_from_effort(1.0) == 1.0
    assert gripper_from_effort(0.02) == pytest.approx(0.0)


def test_state_and_timing(arm):
    state = arm.reset("drawer-close", 1)
    assert state.step == 0 and state.time == 0.0 and not state.success
    state = arm.step(state.positions)
    assert state.step == 1 and state.time == pytest.approx(CONTROL_DT)
    assert state.positions.shape == (8,) and state.velocities.shape == (8,)
    assert arm.task == "drawer-close" and arm.seed == 1


def test_bad_input_is_refused(arm):
    arm.reset("reach", 0)
    with pytest.raises(InputError, match="joint_targets"):
        arm.step(np.zeros(7))
    with pytest.raises(InputError, match="joint_targets"):
        arm.step(np.zeros(6), 0.0)
    with pytest.raises(InputError, match="finite"):
        arm.step(np.full(8, np.nan))
    with pytest.raises(InputError, match="camera"):
        arm.render("nowhere")
    with pytest.raises(ConfigError, match="task"):
        arm.reset("fly-to-the-moon", 0)


def test_config_checks():
    with pytest.raises(ConfigError, match="cameras"):
        SimArmConfig(cameras=("fisheye",))
    with pytest.raises(ConfigError, match="width"):
        SimArmConfig(width=4)
    with pytest.raises(ConfigError, match="task"):
        SimArmConfig(task="juggle")
    with JointArm(SimArmConfig(width=32, height=32)) as fresh, pytest.raises(InputError, match="reset"):
        fresh.step(np.zeros(8))
