"""One MT10 task's Meta-World scene, prepared for joint control, and its offscreen rendering.

:class:`Scene` builds a task's Meta-World environment with its goal visible and seeded sampling at every
reset, turns the finger actuators into stiff position servos with a force limit, and records the ids the
joint controller of :class:`dream_vla_ros.sim.joint_arm.JointArm` needs (the arm is the first seven
coordinates, :data:`ARM_JOINT_NAMES`).

Rendering uses MuJoCo's offscreen renderer without shadows, reflections or multisampling (these dominate
the cost on a software rasterizer such as llvmpipe; see docs/performance.md); Meta-World's corner cameras
are mounted upside down and are rotated 180 degrees so that every image is upright (table at the bottom).
"""

from __future__ import annotations

import atexit
import pickle
import weakref
from typing import TYPE_CHECKING

import mujoco  # after dream_vla_ros.sim/__init__ has set MUJOCO_GL and LP_NUM_THREADS
import numpy as np

from dream_vla_ros.errors import ConfigError, InputError
from dream_vla_ros.sim.tasks import task_spec

if TYPE_CHECKING:
    from dream_vla_ros.sim.joint_arm import SimArmConfig

ARM_JOINT_NAMES: tuple[str, ...] = tuple(f"right_j{i}" for i in range(7))

CAMERAS: tuple[str, ...] = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
UPSIDE_DOWN_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})

# Finger slide joints: name -> travel from open (0) to closed, m.
FINGER_TRAVEL = {"r_close": 0.04, "l_close": -0.03}


class Scene:
    """One task's Meta-World environment, its renderer and the ids the controller needs."""

    def __init__(self, task: str, config: SimArmConfig) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS, ML1_ARGS_KWARGS
        from metaworld.types import Task

        spec = task_spec(task)
        env_cls = ALL_V3_ENVIRONMENTS[spec.env_name]
        env = env_cls(render_mode=None)
        kwargs = {k: v for k, v in ML1_ARGS_KWARGS[spec.env_name]["kwargs"].items() if k != "task_id"}
        # MT benchmarks: goal visible in the 39-D observation (the experts read it); one fixed random vector
        # is installed only to satisfy set_task, then replaced by seeded sampling at every reset.
        kwargs.update(rand_vec=env._random_reset_space.low.copy(), env_cls=env_cls, partially_observable=False)
        env.set_task(Task(env_name=spec.env_name, data=pickle.dumps(kwargs)))
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        self.task = spec.name
        self.env = env
        self.model = env.model
        self.data = env.data
        model = self.model

        arm_joints = [model.joint(name) for name in ARM_JOINT_NAMES]
        self.arm_qpos = np.array([int(j.qposadr[0]) for j in arm_joints])
        self.arm_dof = np.array([int(j.dofadr[0]) for j in arm_joints])
        if not (np.array_equal(self.arm_qpos, np.arange(7)) and np.array_equal(self.arm_dof, np.arange(7))):
            raise ConfigError(f"{spec.env_name}: arm joints are not the first seven coordinates")
        self.arm_low = np.array([j.range[0] if j.limited else -np.inf for j in arm_joints])
        self.arm_high = np.array([j.range[1] if j.limited else np.inf for j in arm_joints])
        self.arm_damping = model.dof_damping[:7].copy()

        # Fingers: stiff position servos with Meta-World's force limit (see the joint_arm module docstring).
        self.finger_qpos = np.array([int(model.joint(n).qposadr[0]) for n in FINGER_TRAVEL])
        self.finger_dof = np.array([int(model.joint(n).dofadr[0]) for n in FINGER_TRAVEL])
        self.finger_travel = np.array(list(FINGER_TRAVEL.values()))
        self.finger_actuator = np.empty(2, dtype=int)
        for i, name in enumerate(FINGER_TRAVEL):
            ids = [a for a in range(model.nu) if model.actuator_trnid[a, 0] == model.joint(name).id]
            if len(ids) != 1:
                raise ConfigError(f"{spec.env_name}: expected one actuator on {name}")
            self.finger_actuator[i] = ids[0]
        for a in self.finger_actuator:
            model.actuator_gainprm[a, 0] = config.gripper_stiffness
            model.actuator_biasprm[a, 1] = -config.gripper_stiffness
            model.actuator_biasprm[a, 2] = -config.gripper_damping
            model.actuator_forcelimited[a] = 1
            model.actuator_forcerange[a] = (-config.gripper_force, config.gripper_force)

        self.welds = np.array([i for i in range(model.neq) if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD])
        self.mocap_id = int(model.body_mocapid[model.body("mocap").id])

        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), config.width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), config.height)
        self._size = (config.height, config.width)
        self._renderer: mujoco.Renderer | None = None

    @property
    def renderer(self) -> mujoco.Renderer:
        """The offscreen renderer, created on first use (no GL context for scenes that never render)."""
        if self._renderer is None:
            self._renderer = make_renderer(self.model, *self._size)
            # Registered after mujoco's own EGL clean-up, so it runs first: free the context while EGL lives.
            atexit.register(_close_at_exit, weakref.ref(self))
        return self._renderer

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.env.close()


def make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """An offscreen renderer of ``model`` without shadows and reflections (its GL context is current in, and
    belongs to, the calling thread)."""
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:  # noqa: BLE001 - mujoco raises FatalError/RuntimeError/EGL errors alike
        raise ConfigError(
            f"rendering failed ({exc}); headless rendering needs MUJOCO_GL=egl (or osmesa) in the"
            " environment before mujoco is first imported: export it, or import dream_vla_ros.sim"
            " before metaworld/mujoco"
        ) from None
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    return renderer


def render_camera(renderer: mujoco.Renderer, data: mujoco.MjData, camera: str) -> np.ndarray:
    """RGB uint8 [height, width, 3] of ``camera`` showing ``data``, upright (:data:`UPSIDE_DOWN_CAMERAS` turned)."""
    if camera not in CAMERAS:
        raise InputError(f"camera: unknown camera {camera!r}; known: {', '.join(CAMERAS)}")
    renderer.update_scene(data, camera=camera)
    image = renderer.render()
    if camera in UPSIDE_DOWN_CAMERAS:
        image = image[::-1, ::-1]
    return np.ascontiguousarray(image)


def _close_at_exit(scene_ref: weakref.ref) -> None:
    scene = scene_ref()
    if scene is not None:
        scene.close()


def return_freed_memory() -> None:
    """Hand the heap that closed scenes freed back to the OS. A scene's model, textures and renderer buffers
    come back as fragmented glibc arenas, so without this a process that rebuilds scenes keeps growing
    (docs/performance.md has the figures); with it, it stays flat."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def close_scenes(scenes: dict[str, Scene]) -> None:
    """Close every scene of ``scenes`` and empty it."""
    for scene in scenes.values():
        scene.close()
    scenes.clear()
