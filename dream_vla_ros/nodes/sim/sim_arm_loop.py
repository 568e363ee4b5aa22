"""The simulation thread of the simulated arm node: it steps the arm and publishes what the arm senses.

One thread, the only user of MuJoCo, runs :class:`SimulationLoop` at the physics rate (80 Hz, paced by
:class:`~dream_vla_ros.sim.pacing.Pacer`). Each step: the commands that arrived go to the controller
(:class:`~dream_vla_ros.sim.controller.TrajectoryController`; ignored while the reset sequence of
:class:`~dream_vla_ros.sim.episode.EpisodeCycle` keeps it inactive), the joint states and camera frames due
are published (none while the arm is offline), the controller is sampled at the end time of the step and the
arm steps to it, then the episode counts the step and may end. Joint states and frames are stamped with the
time of the physics state they show; every camera of a frame is rendered from the same state. Rendering
happens only for camera frames, only for cameras whose topic has a subscriber (on llvmpipe a frame costs
several physics steps' worth of CPU; docs/performance.md), and on a camera thread of its own
(:class:`~dream_vla_ros.sim.camera_thread.CameraThread`, from a copy of the frame's physics state), so the
physics keeps its pace while frames render; a frame is published when rendered, after its stamp, like a
camera's exposure-to-message delay.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from dream_vla_ros.nodes.conversions import rgb_to_image, seconds_to_stamp
from dream_vla_ros.nodes.health import RateMeter
from dream_vla_ros.nodes.sim.sim_arm_config import SimArmNodeConfig
from dream_vla_ros.sim.camera_thread import CameraThread
from dream_vla_ros.sim.controller import TrajectoryController
from dream_vla_ros.sim.episode import ACTIVE, OFFLINE, SETTLING, SUCCESS, EpisodeCycle, ResetRequest, ResetRequests
from dream_vla_ros.sim.pacing import Pacer


@dataclass(frozen=True)
class LoopOutputs:
    """Where the loop's commands come from and its messages go (the node's subscription and publishers)."""

    poll_commands: Callable[[], None]  # hands the controller what arrived on its topic since the last call
    images: dict[str, Any]  # camera -> sensor_msgs/Image publisher
    joint_states: Any  # sensor_msgs/JointState publisher
    success: Any  # std_msgs/Bool publisher
    event: Callable[[dict[str, Any]], None]  # publishes an episode event
    clock: Callable[[float], None] | None  # publishes /clock (with use_sim_time)


class LoopStats:
    """What the loop reports on /diagnostics: written by the loop, read by the diagnostics timer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[str, Any] = {"state": OFFLINE}
        self.counts = {"steps": 0, "frames": 0, "joint_states": 0, "episodes": 0}
        self.step_ms: deque[float] = deque(maxlen=200)
        self.render_ms: deque[float] = deque(maxlen=100)
        self.physics_rate = RateMeter()
        self.camera_rate = RateMeter()

    def values(self) -> dict[str, object]:
        """State, counts, rates (Hz) and the median step and render times (ms)."""
        now = time.monotonic()
        with self.lock:
            values: dict[str, object] = {**self.status, **self.counts}
            step_ms, render_ms = list(self.step_ms), list(self.render_ms)
        values["physics rate_hz"] = self.physics_rate.value(now)
        values["camera rate_hz"] = self.camera_rate.value(now)
        if step_ms:
            values["step ms (median)"] = float(np.median(step_ms))
        if render_ms:
            values["render ms (median)"] = float(np.median(render_ms))
        return values


class SimulationLoop:
    """The physics loop of the simulated arm node (see the module docstring); builds the arm in its thread."""

    def __init__(self, config: SimArmNodeConfig, outputs: LoopOutputs, controller: TrajectoryController,
                 pacer: Pacer, resets: ResetRequests, stats: LoopStats, logger: Any) -> None:
        from dream_vla_ros.sim.joint_arm import CONTROL_DT, JOINT_NAMES, JointArm, SimArmConfig

        self.config, self.outputs, self.controller, self.pacer = config, outputs, controller, pacer
        self.resets, self.stats, self.logger = resets, stats, logger
        self.dt = CONTROL_DT
        self.arm = JointArm(SimArmConfig(task=config.task, cameras=config.cameras, width=config.width,
                                         height=config.height, seed=config.seed))
        self.cycle = EpisodeCycle(config.reset_pause, config.max_steps)
        self.state = None
        self.request: ResetRequest | None = None  # the reset in progress
        self.camera_period = max(1.0 / config.camera_rate, self.dt)
        self.joint_period = max(1.0 / config.joint_state_rate, self.dt)
        self.next_frame = 0.0
        self.next_joint_state = 0.0
        self.joint_msg = JointState(name=list(JOINT_NAMES))
        self.cameras = CameraThread(config.height, config.width, self._publish_frame, self._frame_failed)

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set."""
        try:
            self.pacer.run(self.tick, stop)
        finally:
            self.cameras.close()
            self.arm.close()

    # -- one physics tick -------------------------------------------------------------------------------------
    def tick(self) -> None:
        controller, cycle, outputs = self.controller, self.cycle, self.outputs
        outputs.poll_commands()
        commands = controller.take()
        if self.request is None:
            request = self.resets.current
            if request is not None:
                self.begin_reset(request)
        t = self.pacer.now()
        controller.time = t
        if outputs.clock is not None:
            outputs.clock(t)
        phase = cycle.phase
        if phase == OFFLINE:
            controller.ignore(commands)
            if cycle.settle(t):
                self.next_frame = self.next_joint_state = t
            return
        self.publish_state(t)
        if phase == SETTLING:
            controller.ignore(commands)
            event = cycle.activate(t, self.pacer.lag_events)
            if event is not None:
                self.activate(event)
        else:
            controller.receive(commands, t, self.state.positions, self.state.velocities)
        started = time.perf_counter()
        end = t + self.dt
        target, target_velocity = controller.sample(end)
        state = self.state = self.arm.step(target)
        controller.update_goal(end, target, target_velocity, state.positions, state.velocities)
        step_ms = (time.perf_counter() - started) * 1e3
        stats = self.stats
        stats.physics_rate.tick(time.monotonic())
        with stats.lock:
            stats.step_ms.append(step_ms)
            stats.counts["steps"] += 1
        if cycle.phase == ACTIVE:
            event = cycle.step(end, state.success, state.goal_distance, self.pacer.lag_events, self.pacer.pace)
            if event is not None:
                if event["event"] == SUCCESS:
                    outputs.success.publish(Bool(data=True))
                outputs.event(event)

    def begin_reset(self, request: ResetRequest) -> None:
        from dream_vla_ros.sim.tasks import instruction

        self.request = request
        self.controller.abort_goals()
        self.state = self.arm.reset(request.task, request.seed)
        self.controller.hold(self.arm.joint_targets())
        self.cameras.prepare(self.arm.physics()[0])  # a new scene's renderer, so its first frame is not late
        self.pacer.reanchor()  # the scene build is not a lag event
        episode = self.cycle.begin(
            self.arm.task, request.seed, instruction(request.task, request.phrasing_index, request.phrasing_split),
            request.phrasing_split, request.phrasing_index, self.pacer.now(),
        )
        self.outputs.success.publish(Bool(data=False))
        with self.stats.lock:
            self.stats.status = {"state": OFFLINE, "task": episode.task, "seed": episode.seed,
                                 "episode": episode.number}
        self.controller.active = False

    def activate(self, event: dict[str, Any]) -> None:
        self.outputs.event(event)
        self.logger.info(f"episode {event['episode']}: {event['task']} seed {event['seed']}: "
                         f"{event['instruction']!r}")
        with self.stats.lock:
            self.stats.counts["episodes"] = event["episode"]
            self.stats.status["state"] = ACTIVE
        self.controller.active = True
        self.resets.complete(self.request, event)
        self.request = None

    def publish_state(self, t: float) -> None:
        state, stats = self.state, self.stats
        stamp = seconds_to_stamp(t)
        if t >= self.next_joint_state - 1e-9:
            self.next_joint_state = max(self.next_joint_state + self.joint_period, t + 0.5 * self.dt)
            msg = self.joint_msg
            msg.header.stamp = stamp
            msg.position = state.positions.tolist()
            msg.velocity = state.velocities.tolist()
            self.outputs.joint_states.publish(msg)
            with stats.lock:
                stats.counts["joint_states"] += 1
        if t >= self.next_frame - 1e-9:
            self.next_frame = max(self.next_frame + self.camera_period, t + 0.5 * self.dt)
            watched = [(c, pub) for c, pub in self.outputs.images.items() if pub.get_subscription_count() > 0]
            if not watched:
                return  # nobody looks: skip the render (most of the simulation's CPU time)
            self.cameras.capture(t, *self.arm.physics(), [camera for camera, _ in watched])

    def _publish_frame(self, t: float, images: dict[str, Any], render_ms: float) -> None:
        """(Camera thread.) One rendered frame: an Image per camera, stamped with the frame's physics time."""
        stamp = seconds_to_stamp(t)
        for camera, image in images.items():
            self.outputs.images[camera].publish(rgb_to_image(image, "rgb8", stamp, camera))
        stats = self.stats
        stats.camera_rate.tick(time.monotonic())
        with stats.lock:
            stats.render_ms.append(render_ms)
            stats.counts["frames"] += 1

    def _frame_failed(self, exc: BaseException) -> None:
        self.logger.error(f"camera frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
