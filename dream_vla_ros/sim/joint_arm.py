"""A Meta-World MT10 scene whose Sawyer arm is driven by joint-position targets.

Meta-World moves the hand with a mocap body welded to it. :class:`JointArm` switches that weld off and
drives the seven arm joints ``right_j0..right_j6`` with a joint-space PD controller, like a robot under a
position-controlled ros2_control interface:

- every control step lasts :data:`CONTROL_DT` = 12.5 ms (Meta-World's 80 Hz: 5 physics substeps of
  2.5 ms); within a step the target moves linearly from the previous target to the new one;
- each substep applies torque = M (kp e + kd (v_ff - qdot)) + bias + b (v_ff + lambda e), where M is the
  joint-space inertia, bias the Coriolis/gravity forces, b the joint damping (MuJoCo integrates damping
  implicitly, so it is fed forward), e the position error and v_ff the target's velocity.

The gripper is the eighth joint, ``gripper``, in one unit for state and command: **-1 = fully open,
+1 = fully closed** (Meta-World's grip sign). The command is a closure set-point: each finger is servoed to
``(g + 1) / 2`` of its travel by a stiff, damped position loop whose force saturates at ``gripper_force``
(400 N, Meta-World's grip force), so commanding ``g`` settles at a measured ``g`` when nothing is grasped
(within 0.05 after ~0.2 s), and a grasp squeezes with the full force. Commands in the last 5% of the range
at either end drive the set-point past the finger's stop, so "fully closed/open" presses on the stop like
Meta-World's saturated grip (this keeps contact-rich tasks such as door-open replaying reliably). The state
is the measured finger travel mapped onto the same scale. :func:`gripper_from_effort` converts a Meta-World
grip effort (which saturates at 0.04) to this unit.

``JointArm.step_mocap`` keeps Meta-World's own end-effector control (weld on); the scripted experts use it to
produce joint-space demonstrations (see :mod:`dream_vla_ros.sim.expert`).

Scenes and rendering live in :mod:`dream_vla_ros.sim.scene`: every image is upright (table at the bottom).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import mujoco  # after dream_vla_ros.sim/__init__ has set MUJOCO_GL and LP_NUM_THREADS
import numpy as np

from dream_vla_ros.configuration import require
from dream_vla_ros.errors import InputError
from dream_vla_ros.sim.scene import (
    ARM_JOINT_NAMES,
    CAMERAS,
    FINGER_TRAVEL,
    Scene,
    close_scenes,
    render_camera,
    return_freed_memory,
)
from dream_vla_ros.sim.tasks import task_spec

JOINT_NAMES: tuple[str, ...] = (*ARM_JOINT_NAMES, "gripper")
NUM_ARM_JOINTS = 7

GRIPPER_OPEN = -1.0
GRIPPER_CLOSED = 1.0

PHYSICS_DT = 0.0025
SUBSTEPS = 5
CONTROL_DT = PHYSICS_DT * SUBSTEPS

# Meta-World's fixed hand orientation (the mocap quaternion it writes every step).
_HAND_QUAT = np.array([1.0, 0.0, 1.0, 0.0])
# Closure band at each end where the finger set-point is driven past the stop (see _set_gripper_ctrl).
_END_BAND = 0.05


@dataclass(frozen=True)
class SimArmConfig:
    """Settings of the simulated arm.

    task: MT10 task at start (``reach``, ``push``, ...); ``reset`` may switch task.
    cameras: cameras rendered by ``render_all`` (the first is ``render()``'s default), from :data:`CAMERAS`.
    width, height: image size in pixels.
    seed: episode seed used by ``reset`` when none is given.
    cached_scenes: task scenes kept built (each is large, mostly textures, and slow to build; docs/performance.md).
    kp, kd: joint PD gains (1/s^2, 1/s), applied through the joint-space inertia.
    damping_feedforward: lambda in the damping feed-forward b (v_ff + lambda e), 1/s.
    gripper_force: maximum finger force, N.
    gripper_stiffness: finger position-loop stiffness below the force limit, N/m.
    gripper_damping: finger position-loop velocity gain, N s/m (with the fingers' own damping of 1000 N s/m
        and 100 kg armature, 7000 makes the loop about critically damped at the default stiffness).
    gripper_overdrive: how far past its stop (fraction of the travel) a finger is driven by a command in
        the last 5% of the range at either end, so that fully open/closed presses with the full force.
    """

    task: str = "reach"
    cameras: tuple[str, ...] = ("corner",)
    width: int = 128
    height: int = 128
    seed: int = 0
    cached_scenes: int = 2
    kp: float = 900.0
    kd: float = 60.0
    damping_feedforward: float = 30.0
    gripper_force: float = 400.0
    gripper_stiffness: float = 160000.0
    gripper_damping: float = 7000.0
    gripper_overdrive: float = 0.25

    def __post_init__(self) -> None:
        task_spec(self.task)
        require(len(self.cameras) > 0, "cameras", "at least one camera is needed")
        for name in self.cameras:
            require(name in CAMERAS, "cameras", f"unknown camera {name!r}; known: {', '.join(CAMERAS)}")
        require(len(set(self.cameras)) == len(self.cameras), "cameras", "names must not repeat")
        require(16 <= self.width <= 2048, "width", f"must be in [16, 2048] pixels, got {self.width}")
        require(16 <= self.height <= 2048, "height", f"must be in [16, 2048] pixels, got {self.height}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(self.cached_scenes >= 1, "cached_scenes", f"must be >= 1, got {self.cached_scenes}")
        require(self.kp > 0, "kp", f"must be > 0, got {self.kp}")
        require(self.kd >= 0, "kd", f"must be >= 0, got {self.kd}")
        require(self.damping_feedforward >= 0, "damping_feedforward", "must be >= 0")
        require(self.gripper_force > 0, "gripper_force", f"must be > 0, got {self.gripper_force}")
        require(self.gripper_stiffness > 0, "gripper_stiffness", "must be > 0")
        require(self.gripper_damping >= 0, "gripper_damping", "must be >= 0")
        require(0 <= self.gripper_overdrive <= 1, "gripper_overdrive", "must be in [0, 1]")


@dataclass(frozen=True)
class ArmState:
    """The arm after a reset or a control step.

    positions: [8] joint positions in :data:`JOINT_NAMES` order (rad; gripper in [-1 open, +1 closed]).
    velocities: [8] joint velocities (rad/s; gripper units/s).
    time: simulated seconds since reset (``step * CONTROL_DT``).
    step: control steps since reset.
    success: the task has been solved at some step since reset (Meta-World's episode success).
    success_now: the task's success condition holds at this step.
    goal_distance: how far the task is from its goal, in m: the distance Meta-World's success compares with
      its threshold (reach: hand to goal, 5 cm; push 5 cm and pick-place / peg-insert-side 7 cm: object to
      goal; door-open: handle x to the target x, 8 cm; the others: Meta-World's ``obj_to_target``).
    """

    positions: np.ndarray
    velocities: np.ndarray
    time: float
    step: int
    success: bool
    success_now: bool
    goal_distance: float


def gripper_from_effort(effort: float) -> float:
    """A Meta-World grip effort (actuator target, saturating at 0.04) -> the closure target it settles at."""
    return float(2.0 * np.clip(effort / FINGER_TRAVEL["r_close"], 0.0, 1.0) - 1.0)


class JointArm:
    """One Meta-World MT10 scene with the Sawyer driven by 7 joint-position targets and a gripper target.

    Usage::

        arm = JointArm(SimArmConfig(task="push"))
        state = arm.reset(seed=3)
        state = arm.step(targets7, gripper=-1.0)   # or arm.step(targets8)
        image = arm.render()                       # uint8 [H, W, 3], upright

    The same task and seed give the same initial scene, and the same targets give identical states and
    images. Scenes of other tasks are built on first use (``reset(task=...)``); the ``cached_scenes`` most
    recently used stay built.
    """

    def __init__(self, config: SimArmConfig | None = None) -> None:
        self.config = config or SimArmConfig()
        self._scenes: dict[str, Scene] = {}
        # Release scenes (large, mostly textures) when the arm is dropped without close().
        weakref.finalize(self, close_scenes, self._scenes).atexit = False
        self._scene = self._scene_for(self.config.task)
        self._target = np.zeros(NUM_ARM_JOINTS)
        self._gripper_target = GRIPPER_OPEN
        self._weld_on = True
        self._step = 0
        self._seed = self.config.seed
        self._success = False
        self._success_now = False
        self._goal_distance = float("nan")
        self._reset_done = False
        self._mulm_in = np.zeros(self._scene.model.nv)
        self._mulm_out = np.zeros(self._scene.model.nv)

    # ------------------------------------------------------------------ episode
    @property
    def task(self) -> str:
        """The current task's name."""
        return self._scene.task

    @property
    def seed(self) -> int:
        """The seed of the current episode."""
        return self._seed

    @property
    def success(self) -> bool:
        """The task has been solved at some step of this episode."""
        return self._success

    @property
    def steps(self) -> int:
        """Control steps since the last reset."""
        return self._step

    def reset(self, task: str | None = None, seed: int | None = None) -> ArmState:
        """Start a seeded episode of ``task`` (default: the current task; seed default: ``config.seed``)."""
        if task is not None:
            self._scene = self._scene_for(task)
        scene = self._scene
        self._seed = self.config.seed if seed is None else int(seed)
        if self._seed < 0:
            raise InputError(f"seed: must be >= 0, got {self._seed}")
        scene.data.eq_active[scene.welds] = 1
        scene.data.qfrc_applied[:] = 0.0
        scene.env.seed(self._seed)
        scene.env.reset()
        self._mulm_in = np.zeros(scene.model.nv)
        self._mulm_out = np.zeros(scene.model.nv)
        self._weld_on = True
        self._target = scene.data.qpos[:NUM_ARM_JOINTS].copy()
        self._gripper_target = GRIPPER_OPEN
        self._set_gripper_ctrl(GRIPPER_OPEN)
        self._step = 0
        self._success = False
        self._success_now = False
        self._reset_done = True
        self._obs = scene.env._get_obs()
        self._evaluate()
        return self.state()

    # ------------------------------------------------------------------ control
    def step(self, joint_targets: np.ndarray, gripper: float | None = None) -> ArmState:
        """Track joint-position targets for one control step (12.5 ms).

        joint_targets: [7] arm targets in rad (clipped to the joint limits), or [8] with the gripper last.
        gripper: gripper target in [-1 open, +1 closed]; required with 7 targets, unset with 8.
        """
        self._require_reset()
        targets = np.asarray(joint_targets, dtype=np.float64).reshape(-1)
        if targets.shape == (8,) and gripper is None:
            targets, gripper = targets[:7], float(targets[7])
        elif targets.shape != (7,) or gripper is None:
            raise InputError(
                f"joint_targets: expected 7 arm targets and a gripper value, or 8 values; got {targets.shape[0]}"
                f" values and gripper={gripper!r}"
            )
        if not (np.all(np.isfinite(targets)) and np.isfinite(gripper)):
            raise InputError("joint_targets: values must be finite")
        scene = self._scene
        model, data = scene.model, scene.data
        if self._weld_on:
            data.eq_active[scene.welds] = 0
            self._weld_on = False
            self._target = data.qpos[:NUM_ARM_JOINTS].copy()
        start = self._target
        goal = np.clip(targets, scene.arm_low, scene.arm_high)
        v_ff = (goal - start) / CONTROL_DT
        self._set_gripper_ctrl(gripper)
        cfg = self.config
        acc_in, acc_out = self._mulm_in, self._mulm_out
        for k in range(1, SUBSTEPS + 1):
            mujoco.mj_step1(model, data)
            desired = start + (k / SUBSTEPS) * (goal - start)
            error = desired - data.qpos[:NUM_ARM_JOINTS]
            acc_in[:NUM_ARM_JOINTS] = cfg.kp * error + cfg.kd * (v_ff - data.qvel[:NUM_ARM_JOINTS])
            mujoco.mj_mulM(model, data, acc_out, acc_in)
            data.qfrc_applied[:NUM_ARM_JOINTS] = (
                acc_out[:NUM_ARM_JOINTS]
                + data.qfrc_bias[:NUM_ARM_JOINTS]
                + scene.arm_damping * (v_ff + cfg.damping_feedforward * error)
            )
            mujoco.mj_step2(model, data)
        self._target = goal
        return self._finish_step()

    def step_mocap(self, delta_xyz: np.ndarray, gripper: float) -> ArmState:
        """One control step of Meta-World's own end-effector control (weld on, arm torques off).

        delta_xyz: hand displacement in [-1, 1] per axis (x 1 cm, Meta-World's action scale).
        gripper: gripper target in [-1 open, +1 closed].
        """
        self._require_reset()
        scene = self._scene
        data = scene.data
        if not self._weld_on:
            data.eq_active[scene.welds] = 1
            data.qfrc_applied[:NUM_ARM_JOINTS] = 0.0
            data.mocap_pos[scene.mocap_id] = data.body("hand").xpos
            data.mocap_quat[scene.mocap_id] = _HAND_QUAT
            self._weld_on = True
        scene.env.set_xyz_action(np.asarray(delta_xyz, dtype=np.float64).reshape(3))
        self._set_gripper_ctrl(float(gripper))
        mujoco.mj_step(scene.model, data, nstep=SUBSTEPS)
        self._target = data.qpos[:NUM_ARM_JOINTS].copy()
        return self._finish_step()

    def _finish_step(self) -> ArmState:
        scene = self._scene
        env = scene.env
        mujoco.mj_forward(scene.model, scene.data)
        self._step += 1
        env.curr_path_length = min(self._step, env.max_path_length)
        obs = env._get_obs()
        space = env.sawyer_observation_space
        self._obs = np.clip(obs, space.low, space.high)
        self._success_now = self._evaluate()
        self._success = self._success or self._success_now
        return self.state()

    def _evaluate(self) -> bool:
        """Meta-World's success condition at the current observation; updates the goal distance."""
        scene = self._scene
        effort = 0.5 * (self._gripper_target + 1.0)
        _, info = scene.env.evaluate_state(self._obs, np.array([0.0, 0.0, 0.0, effort]))
        if scene.task == "door-open":  # its info reports obj_to_target 0; success compares the handle's x
            self._goal_distance = float(abs(self._obs[4] - scene.env._target_pos[0]))
        else:
            self._goal_distance = float(info["obj_to_target"])
        return bool(info["success"])

    def _set_gripper_ctrl(self, gripper: float) -> None:
        scene = self._scene
        self._gripper_target = float(np.clip(gripper, GRIPPER_OPEN, GRIPPER_CLOSED))
        closure = 0.5 * (self._gripper_target + 1.0)
        # Within _END_BAND of either end the set-point runs past the finger's stop, so a fully open or closed
        # command presses the finger onto its stop with the full force (rigid, as in Meta-World).
        overdrive = np.clip((closure - (1.0 - _END_BAND)) / _END_BAND, 0.0, 1.0) - np.clip(
            (_END_BAND - closure) / _END_BAND, 0.0, 1.0
        )
        setpoint = closure + self.config.gripper_overdrive * overdrive
        scene.data.ctrl[scene.finger_actuator] = setpoint * scene.finger_travel

    def _require_reset(self) -> None:
        if not self._reset_done:
            raise InputError("JointArm: call reset() before step()")

    # ------------------------------------------------------------------ state
    def joint_positions(self) -> np.ndarray:
        """[8] positions in :data:`JOINT_NAMES` order: arm joints in rad, gripper in [-1 open, +1 closed]."""
        scene = self._scene
        out = np.empty(8)
        out[:7] = scene.data.qpos[:NUM_ARM_JOINTS]
        closure = scene.data.qpos[scene.finger_qpos] / scene.finger_travel
        out[7] = np.clip(2.0 * float(np.mean(closure)) - 1.0, GRIPPER_OPEN, GRIPPER_CLOSED)
        return out

    def joint_velocities(self) -> np.ndarray:
        """[8] velocities: arm joints in rad/s, gripper in units/s."""
        scene = self._scene
        out = np.empty(8)
        out[:7] = scene.data.qvel[:NUM_ARM_JOINTS]
        out[7] = 2.0 * float(np.mean(scene.data.qvel[scene.finger_dof] / scene.finger_travel))
        return out

    def joint_targets(self) -> np.ndarray:
        """[8] the targets currently tracked (the last commanded ones; the state itself after a reset)."""
        return np.append(self._target, self._gripper_target)

    def state(self) -> ArmState:
        """The current :class:`ArmState`."""
        return ArmState(
            positions=self.joint_positions(),
            velocities=self.joint_velocities(),
            time=self._step * CONTROL_DT,
            step=self._step,
            success=self._success,
            success_now=self._success_now,
            goal_distance=self._goal_distance,
        )

    def task_observation(self) -> np.ndarray:
        """Meta-World's 39-D state observation (hand, fingers, objects, previous frame, goal): for experts."""
        return self._obs.copy()

    def hand_position(self) -> np.ndarray:
        """[3] the hand's world position, m."""
        return self._scene.data.body("hand").xpos.copy()

    # ------------------------------------------------------------------ images
    def render(self, camera: str | None = None) -> np.ndarray:
        """RGB uint8 [height, width, 3] from ``camera`` (default: the first configured camera), upright."""
        self._require_reset()
        return render_camera(self._scene.renderer, self._scene.data, camera or self.config.cameras[0])

    def render_all(self) -> dict[str, np.ndarray]:
        """camera name -> image for every configured camera."""
        return {name: self.render(name) for name in self.config.cameras}

    def physics(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        """The current scene's model and data (for rendering elsewhere, e.g. :mod:`dream_vla_ros.sim.camera_thread`;
        the data changes with every step)."""
        self._require_reset()
        return self._scene.model, self._scene.data

    # ------------------------------------------------------------------ lifetime
    def _scene_for(self, task: str) -> Scene:
        name = task_spec(task).name
        scene = self._scenes.pop(name, None) or Scene(name, self.config)
        self._scenes[name] = scene  # most recently used last
        if len(self._scenes) > self.config.cached_scenes:
            while len(self._scenes) > self.config.cached_scenes:
                self._scenes.pop(next(iter(self._scenes))).close()
            return_freed_memory()
        return scene

    def close(self) -> None:
        """Release renderers and environments."""
        close_scenes(self._scenes)

    def __enter__(self) -> JointArm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
