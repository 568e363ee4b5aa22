"""The policy node: cameras + joint states + language goal -> chunks of joint targets (a lifecycle node).

Interfaces (names relative to the node's namespace; ``~`` = the node's name):

- subscribes ``camera_topics`` (sensor_msgs/Image rgb8/bgr8/mono8, or CompressedImage on ``.../compressed``)
  and ``joint_states_topic`` (sensor_msgs/JointState) with best-effort keep-last-1 QoS: only the newest frame
  per camera and the newest joint state are kept (joint states are read when an observation is made, from a
  polled subscription on the helper node ``<name>_inputs``: a 500 Hz stream wakes nothing; ``polling.py``);
- subscribes ``goal_topic`` (std_msgs/String, reliable + transient local, and reliable + volatile for
  publishers that do not latch, e.g. ``ros2 topic pub``); an empty goal means stop. Each new goal is scored
  against the instructions the model was trained on (:mod:`dream_vla_ros.policy.goals`); below
  ``min_goal_confidence`` (-1: the model's measured default) it is refused: no chunks (the executor holds),
  the cause logged once and on /diagnostics. ``~/accept_goal`` (std_srvs/Trigger) accepts the goal refused
  last, once (the operator's override). The verdict of every goal is published on ``~/goal_status``
  (std_msgs/String, JSON ``{goal, accepted, confidence, nearest_instruction, nearest_task, reason,
  checked, overridden}``, latched);
- subscribes ``chunk_request_topic`` (std_msgs/Header, from the chunk executor): each request (frame_id) is
  answered by one chunk, only when the inputs are fresh, and again only if the executor still repeats it
  ``request_timeout`` s later (the chunk was lost);
- publishes ``~/action_chunk`` (trajectory_msgs/JointTrajectory, reliable, keep last 1): header.stamp = the
  observation stamp (header stamp of the first camera's frame), point i at time_from_start (i + 1) * dt,
  positions only, joints in the model's order under the robot's names, clipped to the joint envelope the
  model was trained on plus ``envelope_margin`` (counted as ``chunks_confined_to_envelope`` on
  /diagnostics). An empty trajectory (no points) tells the executor to stop and hold;
- publishes ``/diagnostics``; services ``~/stop``, ``~/resume`` and ``~/accept_goal`` (std_srvs/Trigger).

Lifecycle: *configure* reads the parameters, loads the engine (a corrupt model or an unknown backend makes
configure fail with the cause logged and on /diagnostics; the process stays up), checks cameras, joint names
and image size against the model, warms up and subscribes; *activate* starts answering requests;
*deactivate* stops; *cleanup* drops the engine. With ``autostart`` the node configures and activates itself.

Inputs are checked by the shared contract (docs/input_validation.md, ``conversions.py``); a rejected input
blocks inference (so the executor holds), is named once on /diagnostics (cleared when the input is good
again) and in a throttled log line. Compressed frames are bounded by their encoded size and the size their
header declares before a decoder thread decodes the newest one; only decoded frames are used, and their
stamps are what freshness is judged on. After a timing fault an input must stay fresh for
``input_recovery_time`` s before it is used again.

Inference runs on one worker thread; callbacks never wait for the model or a decode. A request that arrives
while inference is running is dropped (the executor repeats requests while it wants a chunk).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from dream_vla_ros import protocol
from dream_vla_ros.engines.base import engine_status
from dream_vla_ros.errors import ConfigError, DreamVlaError, InputError
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.conversions import (
    JointMapper,
    check_compressed,
    check_goal,
    check_image,
    checked_stamp,
    compressed_to_rgb,
    image_to_rgb,
    prediction_to_trajectory,
)
from dream_vla_ros.nodes.diagnostics import Diagnostics, gate_slot, read_joint_state
from dream_vla_ros.nodes.health import RateMeter, RecoveryGate, cause_key
from dream_vla_ros.nodes.inputs import FreshnessLimits, check_freshness, timing_slots
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig, is_compressed_topic
from dream_vla_ros.nodes.polling import PolledInputs, PolledSubscription
from dream_vla_ros.nodes.worker import SingleWorker
from dream_vla_ros.policy.envelope import confine
from dream_vla_ros.policy.goals import GoalScorer, GoalVerdict

NODE_NAME = "policy_node"
ENGINE_BUILD = "engine build"
LIVE_PARAMETERS = ("halting_k_max", "halting_delta")  # applied to the running engine when set


@dataclass
class Frame:
    msg: Any
    stamp: float
    received: float
    compressed: bool
    error: str = ""  # why the frame cannot be used ("" = not known to be bad)
    used: bool = False
    rgb: np.ndarray | None = None  # the decoded pixels of a compressed frame


@dataclass(frozen=True)
class Job:
    request: str
    frames: dict[str, Frame]
    proprio: np.ndarray
    goal: str
    epoch: int
    stamp: float
    submitted: float


class PolicyNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self, PolicyNodeConfig)
        self._lock = threading.Lock()
        self.config: PolicyNodeConfig | None = None
        self.engine: Any = None
        self._robot_joints: tuple[str, ...] = ()
        self._cameras: tuple[str, ...] = ()
        self._mapper: JointMapper | None = None
        self._limits: FreshnessLimits | None = None
        self._active = False
        self._stopped = False
        self._goal = ""
        self._goal_epoch = 0
        self._goal_scorer: GoalScorer | None = None
        self._refused = ""  # the goal refused last (what ~/accept_goal accepts)
        self._verdict: dict[str, Any] = {}
        self._frames: dict[str, Frame] = {}
        self._undecoded: dict[str, Frame] = {}  # the newest compressed frame per camera, waiting for the decoder
        self._recovery = RecoveryGate(0.0)
        self._joints: tuple[np.ndarray, float] | None = None
        self._request: tuple[str, float] | None = None
        self._served: tuple[str, float] = ("", 0.0)  # request answered last, and when
        self._inputs: list[Any] = []  # our subscriptions (rclpy.Node owns the name `_subscriptions`)
        self._polled = PolledInputs(self)  # joint states are read when an observation is made (polling.py)
        self._joint_input: PolledSubscription | None = None
        self._rates: dict[str, RateMeter] = {}
        self._counts = {"frames_received": 0, "frames_rejected": 0, "frames_dropped": 0, "requests": 0,
                        "inferences": 0, "chunks_published": 0, "inference_failures": 0,
                        "chunks_confined_to_envelope": 0}
        self._inference_cpu_s = 0.0  # CPU time of the inference thread inside the engine (bench nodes)
        self._timings: dict[str, deque] = {}
        self._last_prediction: tuple[int, str] = (0, "")
        self._profile = None
        period = float(self.get_parameter("diagnostics_period").value)
        self.diagnostics = Diagnostics(self, self._diagnostic_values, period)
        self.create_timer(period, self._watch_inputs)
        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "~/action_chunk", qos.CHUNK)
        self.create_service(Trigger, protocol.STOP, self._on_stop)
        self.create_service(Trigger, protocol.RESUME, self._on_resume)
        self.create_service(Trigger, protocol.ACCEPT_GOAL, self._on_accept_goal)
        self._goal_status_pub = self.create_publisher(String, "~/goal_status", qos.GOAL)
        self._worker = SingleWorker(self._infer, self._on_worker_crash, name="inference")
        self._closing = threading.Event()
        self._delay_rng = random.Random(0)  # added_delay_jitter draws
        self._decoder = SingleWorker(self._decode_pending, self._on_worker_crash, name="decode")
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _record(self, stage: str, ms: float) -> None:
        self._timings.setdefault(stage, deque(maxlen=100)).append(ms)

    def start(self) -> None:
        """Autostart: configure and activate unless ``autostart`` is false."""
        if self.get_parameter("autostart").value:
            self.trigger_configure()
            if self.config is not None:
                self.trigger_activate()

    def close(self) -> None:
        self._closing.set()
        self._decoder.close(timeout=2.0)
        self._worker.close(timeout=2.0)
        self._polled.close()
        if self._profile is not None:
            self._profile.close()
            self._profile = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            config = params.read(self, PolicyNodeConfig)
            from dream_vla_ros.engines.base import warm_up
            from dream_vla_ros.engines.loader import load_engine

            self.get_logger().info(f"loading model {config.model!r} with backend {config.backend!r}")
            try:
                engine = load_engine(config.model, config.backend, progress=self._engine_progress,
                                     **config.engine_settings())
            finally:
                if self.diagnostics.faults.clear(ENGINE_BUILD) is not None:
                    self.diagnostics.publish()
            robot_joints = self._check_against_model(config, engine.metadata)
            scorer = self._make_goal_scorer(config, engine.metadata)
            warm_up(engine, config.warmup_runs)
        except DreamVlaError as exc:
            self.diagnostics.report("configure", cause_key(str(exc)), f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - a broken backend must not take the process down
            message = f"configure failed: {type(exc).__name__}: {exc}"
            self.diagnostics.report("configure", cause_key(message), message)
            return TransitionCallbackReturn.FAILURE
        self.diagnostics.clear("configure")
        with self._lock:
            self.config, self.engine, self._robot_joints = config, engine, robot_joints
            self._goal_scorer = scorer
            self._cameras = engine.metadata.cameras
            envelope = engine.metadata.envelope
            bounds = None
            if envelope.position_min and config.joint_fault_margin >= 0.0:
                margin = config.joint_fault_margin
                bounds = (np.asarray(envelope.position_min) - margin, np.asarray(envelope.position_max) + margin)
            self._mapper = JointMapper(robot_joints, strict=config.strict_joint_names, bounds=bounds)
            self._limits = FreshnessLimits(config.max_image_age, config.max_joint_state_age, config.max_future,
                                           config.max_sync_skew)
            self._recovery = RecoveryGate(config.input_recovery_time)
            self._undecoded = {}
            self._frames, self._joints, self._request, self._served = {}, None, None, ("", 0.0)
        if config.profile_path:
            self._profile = open(config.profile_path, "a", buffering=1)  # noqa: SIM115 - closed in cleanup/close
        self._subscribe(config)
        self.get_logger().info(
            f"configured: {engine.name}, cameras {list(self._cameras)} <- {list(config.camera_topics)}, "
            f"joints {list(robot_joints)}"
        )
        if not engine.metadata.envelope.position_min and config.envelope_margin >= 0.0:
            self.get_logger().warning("the model records no joint envelope (trained before it was recorded): "
                                      "predicted targets are not confined to the joint range it was trained on")
        return TransitionCallbackReturn.SUCCESS

    def _engine_progress(self, message: str) -> None:
        """Engine preparation inside configure (a TensorRT build takes minutes): each message on the ROS log and
        at once on /diagnostics (WARN under ``engine build`` until the engine is loaded)."""
        self.get_logger().info(f"{ENGINE_BUILD}: {message}")
        self.diagnostics.faults.report(ENGINE_BUILD, cause_key(message), message, level="warn")
        self.diagnostics.publish()

    def _check_against_model(self, config: PolicyNodeConfig, meta) -> tuple[str, ...]:
        if len(config.camera_topics) != len(meta.cameras):
            raise ConfigError(
                f"camera_topics: {len(config.camera_topics)} topic(s) for the model's {len(meta.cameras)} "
                f"camera(s) {list(meta.cameras)}"
            )
        robot_joints = config.joint_names or meta.joint_names
        if len(robot_joints) != len(meta.joint_names):
            raise ConfigError(
                f"joint_names: {len(robot_joints)} names for the model's {len(meta.joint_names)} joints "
                f"{list(meta.joint_names)}"
            )
        size = config.expected_image_size
        if size is not None and min(size) * meta.crop_fraction < meta.image_size:
            raise ConfigError(
                f"image_width/image_height: {size[0]}x{size[1]} frames are smaller than the model's "
                f"{meta.image_size} px input (after a {meta.crop_fraction:g} centre crop)"
            )
        return tuple(robot_joints)

    def _subscribe(self, config: PolicyNodeConfig) -> None:
        for camera, topic in zip(self._cameras, config.camera_topics, strict=True):
            compressed = is_compressed_topic(topic)
            self._rates[f"camera {camera}"] = RateMeter()
            self._inputs.append(self.create_subscription(
                CompressedImage if compressed else Image, topic, self._image_callback(camera, compressed), qos.SENSOR
            ))
        self._rates["joint_states"] = RateMeter()
        self._joint_input = self._polled.subscribe(JointState, config.joint_states_topic, qos.SENSOR)
        self._inputs += [
            self.create_subscription(String, config.goal_topic, self._on_goal, qos.GOAL),
            self.create_subscription(String, config.goal_topic, self._on_goal, qos.GOAL_VOLATILE),
            self.create_subscription(Header, config.chunk_request_topic, self._on_request, qos.REQUEST),
        ]

    def on_activate(self, state) -> TransitionCallbackReturn:
        with self._lock:
            self._active = True
        self.get_logger().info("active: answering chunk requests")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._publish_stop()  # the executor holds at once instead of running out its queue
        with self._lock:
            self._active = False
            self._goal_epoch += 1  # discard a chunk still being computed
        self.get_logger().info("inactive: no chunks")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        with self._lock:
            self._active = False
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        with self._lock:
            self._active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        deadline = time.monotonic() + 10.0
        while self._worker.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._joint_input is not None:
            self._polled.unsubscribe(self._joint_input)
            self._joint_input = None
        with self._lock:
            self.config, self.engine, self._mapper = None, None, None
            self._frames, self._joints, self._request, self._undecoded = {}, None, None, {}
        if self._profile is not None:
            self._profile.close()
            self._profile = None

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """``halting_k_max`` / ``halting_delta`` set while configured apply to the next chunk (``ros2 param set``);
        every other parameter, and these while unconfigured, at the next configure."""
        live = {p.name: p.value for p in parameters if p.name in LIVE_PARAMETERS}
        with self._lock:
            config, engine = self.config, self.engine
        if not live or config is None or engine is None:
            return SetParametersResult(successful=True)
        set_halting = getattr(engine, "set_halting", None)
        if set_halting is None:
            return SetParametersResult(successful=False,
                                       reason=f"backend {engine.name!r} cannot change halting while configured")
        try:
            config = dataclasses.replace(config, **live)
        except (DreamVlaError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        set_halting(config.halting_k_max, config.halting_delta)
        with self._lock:
            self.config = config
        self.get_logger().info(f"halting: k_max {config.halting_k_max}, delta {config.halting_delta:g} "
                               "(0 / negative = the model's default)")
        return SetParametersResult(successful=True)

    # -- inputs ----------------------------------------------------------------------------------------------
    def _image_callback(self, camera: str, compressed: bool):
        slot = f"camera {camera}"
        name = f"camera {camera!r}"

        def on_image(msg) -> None:
            now = self._now()
            self._rates[slot].tick(now)
            config = self.config
            if config is None:
                return
            self._counts["frames_received"] += 1
            stamp = 0.0
            try:
                stamp = checked_stamp(msg.header.stamp, name)
                if compressed:  # bounded before any decoding; the decoder thread decodes the newest one
                    check_compressed(msg, name, config.expected_image_size, config.compressed_limits)
                else:
                    check_image(msg, name, config.expected_image_size)
            except InputError as exc:
                self._keep(camera, Frame(msg, stamp, now, compressed, str(exc)))
                return
            frame = Frame(msg, stamp, now, compressed)
            if compressed:
                with self._lock:
                    self._undecoded[camera] = frame
                self._decoder.submit(camera)  # if busy, the running decode loop takes this frame next
                return
            self._keep(camera, frame)

        return on_image

    def _poll_joint_state(self) -> None:
        """Take the newest joint state, if one arrived since the last look."""
        polled = self._joint_input
        msg = polled.take_newest() if polled is not None else None
        if msg is not None:
            self._on_joint_state(msg)

    def _keep(self, camera: str, frame: Frame) -> None:
        """Make ``frame`` the newest of ``camera``. The newest frame counts, good or bad: a bad one blocks
        inference (reported now) until a good one replaces it (which clears the report)."""
        slot = f"camera {camera}"
        with self._lock:
            previous = self._frames.get(camera)
            self._frames[camera] = frame
        if previous is not None and not previous.used and not previous.error:
            self._counts["frames_dropped"] += 1
        if frame.error:
            self._counts["frames_rejected"] += 1
            self.diagnostics.report(slot, cause_key(frame.error), frame.error)
            return
        if self.diagnostics.faults.active(slot) is not None:
            self.diagnostics.clear(slot)
        if camera == self._cameras[0]:
            self._maybe_infer(self._now())  # a request may be waiting for a new frame

    def _decode_pending(self, _camera: str) -> None:
        """Decoder thread: decode the newest undecoded frame of each camera until none is left."""
        while True:
            with self._lock:
                config = self.config
                if not self._undecoded or config is None:
                    return
                camera = next(iter(self._undecoded))
                frame = self._undecoded.pop(camera)
            try:
                frame.rgb = compressed_to_rgb(frame.msg, f"camera {camera!r}", config.expected_image_size,
                                              config.compressed_limits)
            except InputError as exc:
                frame.error = str(exc)
            self._keep(camera, frame)

    def _on_joint_state(self, msg: JointState) -> None:
        now = self._now()
        self._rates["joint_states"].tick(now)
        mapper = self._mapper
        if mapper is None:
            return
        joints = read_joint_state(mapper, msg, self.diagnostics)
        if joints is not None:
            with self._lock:
                self._joints = joints

    def _make_goal_scorer(self, config: PolicyNodeConfig, meta) -> GoalScorer | None:
        """The scorer of new goals (None: the model records no instructions, every goal is accepted)."""
        if not meta.goals.known:
            self.get_logger().warning("the model records no known instructions (trained before they were "
                                      "recorded): goals are not checked")
            return None
        threshold = meta.goals.min_confidence if config.min_goal_confidence == -1.0 else config.min_goal_confidence
        return GoalScorer(meta.goals.known, threshold, meta.max_goal_tokens)

    def _on_goal(self, msg: String) -> None:
        config = self.config
        try:
            goal = check_goal(msg.data, config.max_goal_bytes if config else 512)
            verdict = self._judge(goal)
        except InputError as exc:
            goal, verdict = None, GoalVerdict(str(msg.data)[:200], False, -1.0, "", "", str(exc))
        if goal and not verdict.accepted:  # logged by diagnostics, once per cause
            with self._lock:
                self._refused = goal
            goal = None
        elif goal is not None:
            with self._lock:
                self._refused = ""  # a later goal replaces the refused one: nothing left to accept
        self._apply_goal(goal, verdict)

    def _judge(self, goal: str) -> GoalVerdict:
        if not goal:
            return GoalVerdict("", False, -1.0, "", "", "empty goal: stopped")
        scorer = self._goal_scorer
        if scorer is None:
            return GoalVerdict(goal, True, 1.0, "", "", "not checked: the model records no known instructions")
        return scorer.verdict(goal)

    def _apply_goal(self, goal: str | None, verdict: GoalVerdict, overridden: bool = False) -> None:
        """Make ``goal`` current (None: refused, '' = stop), report the verdict, stop the arm when needed."""
        with self._lock:
            changed = goal != self._goal
            self._goal = goal or ""
            self._goal_epoch += 1
            self._verdict = {**verdict.to_dict(), "checked": self._goal_scorer is not None,
                             "overridden": overridden}
            status = json.dumps(self._verdict)
        self._goal_status_pub.publish(String(data=status))
        if goal is None:
            self.diagnostics.report("goal", cause_key(verdict.reason), f"{verdict.reason}; holding")
            self._publish_stop()
        elif not goal:
            self.diagnostics.report("goal", "empty goal", "empty goal: stopped", level="warn")
            self._publish_stop()
        else:
            self.diagnostics.clear("goal")
            if changed:  # throttled: a goal flood must not flood the log (/diagnostics shows the current goal)
                self.get_logger().info(f"goal: {goal[:200]!r}", throttle_duration_sec=1.0)

    def _on_accept_goal(self, request, response):
        with self._lock:
            goal, self._refused = self._refused, ""
        if not goal:
            response.success, response.message = False, "no refused goal to accept"
            return response
        verdict = dataclasses.replace(self._judge(goal), accepted=True, reason="accepted by the operator")
        self.get_logger().warning(f"goal accepted by the operator (~/accept_goal): {goal[:200]!r}")
        self._apply_goal(goal, verdict, overridden=True)
        response.success, response.message = True, f"accepted: {goal[:200]}"
        return response

    def _on_request(self, msg: Header) -> None:
        now = self._now()
        with self._lock:
            self._request = (msg.frame_id, now)
        self._counts["requests"] += 1
        self._maybe_infer(now)

    # -- inference -------------------------------------------------------------------------------------------
    def _maybe_infer(self, now: float) -> None:
        self._poll_joint_state()
        with self._lock:
            config, request = self.config, self._request
            if not self._active or self._stopped or not self._goal or config is None or request is None:
                return
            if now - request[1] > config.request_timeout:
                return  # the executor stopped asking
            if request[0] == self._served[0] and now - self._served[1] < config.request_timeout:
                return  # answered; asked again after request_timeout only if that chunk never arrived
            frames = {c: self._frames.get(c) for c in self._cameras}
            joints, goal, epoch = self._joints, self._goal, self._goal_epoch
        if self._worker.busy:
            return
        if any(f is not None and f.error for f in frames.values()):
            return  # reported when the frame arrived (or failed to decode)
        if not self.diagnostics.faults.is_healthy("joint_states"):
            return
        if not self._inputs_fresh(now, frames, joints):
            return
        if frames[self._cameras[0]].used:
            return  # one chunk per observation: wait for the next frame
        job = Job(request[0], frames, joints[0].copy(), goal, epoch, frames[self._cameras[0]].stamp, now)
        if self._worker.submit(job):
            for frame in frames.values():
                frame.used = True

    def _watch_inputs(self) -> None:
        """Input health shows on /diagnostics even while nobody asks for chunks."""
        self._poll_joint_state()
        with self._lock:
            if not self._active:
                return
            frames = {c: self._frames.get(c) for c in self._cameras}
            joints = self._joints
        self._inputs_fresh(self._now(), frames, joints)

    def _inputs_fresh(self, now: float, frames: dict[str, Frame | None], joints) -> bool:
        """Check the stamps of the newest inputs; report new timing causes and clear resolved ones."""
        if self._limits is None:
            return False
        problems = check_freshness(
            now, {c: (f.stamp if f else None) for c, f in frames.items()}, joints[1] if joints else None,
            self._limits,
        )
        for problem in problems:
            self.diagnostics.report(problem.slot, problem.key, problem.message, level="warn")
        bad = {p.slot for p in problems}
        usable = [gate_slot(self.diagnostics, self._recovery, slot, slot not in bad, now)
                  for slot in timing_slots(tuple(frames))]
        return all(usable)

    def _convert(self, camera: str, frame: Frame) -> np.ndarray:
        expected = self.config.expected_image_size if self.config else None
        name = f"camera {camera!r}"
        if frame.compressed:
            if frame.rgb is None:
                raise InputError(f"{name}: compressed frame not decoded")
            return frame.rgb
        return image_to_rgb(frame.msg, name, expected)

    def _infer(self, job: Job) -> None:
        from dream_vla_ros.policy.observation import Observation

        engine, config = self.engine, self.config
        if engine is None or config is None:
            return
        meta = engine.metadata
        t0 = time.perf_counter()
        images = {}
        for camera, frame in job.frames.items():
            try:
                images[camera] = self._convert(camera, frame)
            except InputError as exc:
                frame.error = str(exc)
                self.diagnostics.report(f"camera {camera}", cause_key(str(exc)), str(exc))
                return
        observation = Observation(images=images, proprio=job.proprio, instruction=job.goal, stamp=job.stamp)
        t1 = time.perf_counter()
        self._counts["inferences"] += 1
        cpu = time.thread_time()
        try:
            prediction = engine.infer(observation)
            self._inference_cpu_s += time.thread_time() - cpu
            positions, confined = confine(self._check_prediction(prediction, meta), meta.envelope,
                                          config.envelope_margin)
            first = job.frames[self._cameras[0]].msg.header.stamp  # exact, not via float seconds
            msg = prediction_to_trajectory(positions, self._robot_joints, prediction.dt, first)
        except Exception as exc:  # noqa: BLE001 - any engine failure: log once, publish nothing, stay alive
            self._counts["inference_failures"] += 1
            text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            self.diagnostics.report("engine", cause_key(text), f"inference failed: {text}")
            return
        t2 = time.perf_counter()
        if config.added_delay > 0.0 or config.added_delay_jitter > 0.0:
            self._hold_back(config)
        with self._lock:
            publish = self._active and not self._stopped and job.epoch == self._goal_epoch
        if not publish:
            return
        self._chunk_pub.publish(msg)
        t3 = time.perf_counter()
        published_at = self._now()
        with self._lock:
            self._served = (job.request, published_at)
        self._counts["chunks_published"] += 1
        if confined:
            self._counts["chunks_confined_to_envelope"] += 1
        if self.diagnostics.faults.active("engine") is not None:
            self.diagnostics.clear("engine")
        self._account(job, prediction, (t0, t1, t2, t3), published_at)

    def _hold_back(self, config: PolicyNodeConfig) -> None:
        """The ``added_delay`` test setting: wait added_delay +- added_delay_jitter s of this node's clock."""
        jitter = config.added_delay_jitter
        until = self._now() + max(0.0, config.added_delay + self._delay_rng.uniform(-jitter, jitter))
        while (left := until - self._now()) > 0.0:
            if self._closing.wait(min(left, 0.005)):
                return

    @staticmethod
    def _check_prediction(prediction, meta) -> np.ndarray:
        positions = np.asarray(prediction.positions, dtype=np.float64)
        expected = (meta.chunk_length, len(meta.joint_names))
        if positions.shape != expected:
            raise InputError(f"engine returned a chunk of shape {list(positions.shape)}, expected {list(expected)}")
        if tuple(prediction.joint_names) != meta.joint_names:
            raise InputError(
                f"engine returned joints {list(prediction.joint_names)}, expected {list(meta.joint_names)}"
            )
        if not np.all(np.isfinite(positions)):
            raise InputError("engine returned a chunk with NaN or infinite positions")
        if not (math.isfinite(prediction.dt) and prediction.dt > 0):
            raise InputError(f"engine returned dt {prediction.dt!r}")
        return positions

    def _account(self, job: Job, prediction, marks: tuple[float, ...], published_at: float) -> None:
        t0, t1, t2, t3 = marks
        engine_ms = dict(prediction.timings_ms)
        preprocess = float(engine_ms.get("preprocess", 0.0))
        postprocess = float(engine_ms.get("postprocess", 0.0))
        total = float(engine_ms.get("total", (t2 - t1) * 1e3))
        first = job.frames[self._cameras[0]]
        stages = {
            "transport": (first.received - first.stamp) * 1e3,
            "wait": (job.submitted - first.received) * 1e3,
            "conversion": (t1 - t0) * 1e3,
            "preprocessing": preprocess,
            "engine": max(0.0, total - preprocess - postprocess),
            "postprocessing": postprocess + max(0.0, (t2 - t1) * 1e3 - total),
            "publish": (t3 - t2) * 1e3,
        }
        for stage, ms in stages.items():
            self._record(stage, ms)
        self._last_prediction = (int(prediction.iterations), str(prediction.halt_reason))
        if self._profile is not None:
            record = {"stamp": job.stamp, "request": job.request, "published": published_at,
                      "iterations": int(prediction.iterations), **{f"{k}_ms": v for k, v in stages.items()}}
            self._profile.write(json.dumps(record) + "\n")

    def _on_worker_crash(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.diagnostics.report("engine", cause_key(text), f"inference worker error: {text}")

    # -- stop / resume ---------------------------------------------------------------------------------------
    def _publish_stop(self) -> None:
        with self._lock:
            active = self._active
        if active:
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            self._chunk_pub.publish(msg)

    def _on_stop(self, request, response):
        with self._lock:
            was = self._stopped
            self._stopped = True
            self._goal_epoch += 1
        self._publish_stop()
        if not was:
            self.get_logger().info("stopped (~/stop): no chunks until ~/resume")
        response.success, response.message = True, "stopped"
        return response

    def _on_resume(self, request, response):
        with self._lock:
            active, was, goal = self._active, self._stopped, self._goal
            if active:
                self._stopped = False
        if not active:
            response.success, response.message = False, "not active: configure and activate the node first"
            return response
        if was:
            self.get_logger().info("resumed (~/resume)")
        response.success = True
        response.message = "resumed" if goal else "resumed; waiting for a goal"
        return response

    # -- diagnostics -----------------------------------------------------------------------------------------
    def _goal_values(self) -> dict[str, object]:
        with self._lock:
            verdict = dict(self._verdict)
        keys = ("accepted", "confidence", "nearest_instruction", "overridden")
        return {k: verdict[k] for k in keys if k in verdict}

    def _diagnostic_values(self) -> dict[str, object]:
        now = self._now()
        with self._lock:
            config, active, stopped, goal = self.config, self._active, self._stopped, self._goal
            frames, joints = dict(self._frames), self._joints
        values: dict[str, object] = {
            "state": "active" if active else ("inactive" if config else "unconfigured"),
            "stopped": stopped,
            "goal": goal[:100],
            **{f"goal {k}": v for k, v in self._goal_values().items()},
            "backend": self.engine.name if self.engine else "",
            "model": config.model if config else "",
            **engine_status(self.engine),
            **self._counts,
            "inference cpu_s": self._inference_cpu_s,
        }
        for slot, meter in list(self._rates.items()):
            values[f"{slot} rate_hz"] = meter.value(now)
        for camera, frame in frames.items():
            values[f"camera {camera} age_s"] = now - frame.stamp
        if joints is not None:
            values["joint_states age_s"] = now - joints[1]
        for stage, samples in list(self._timings.items()):
            recent = list(samples)
            if recent:
                values[f"latency {stage} ms (median)"] = float(np.median(recent))
                values[f"latency {stage} ms (last)"] = recent[-1]
        values["iterations k"], values["halting reason"] = self._last_prediction
        return values


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.runtime import run

    return run([PolicyNode], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
