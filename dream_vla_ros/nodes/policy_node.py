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

The node wires ROS to parts that need no ROS node (unit-tested without one): ``policy_frames.py`` (frame checks,
decoding, the newest frame per camera), ``policy_goals.py`` (goal verdicts, the ~/goal_status document, the
override), ``policy_inference.py`` (when to infer: lifecycle, stop, goal, requests, fresh inputs; the checks of
the engine's chunk; the latency account) and ``policy_model.py`` (the parameters checked against the model).
"""

from __future__ import annotations

import dataclasses
import threading
import time
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
from dream_vla_ros.errors import DreamVlaError, InputError
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.conversions import JointMapper
from dream_vla_ros.nodes.diagnostics import Diagnostics, read_joint_state
from dream_vla_ros.nodes.health import RateMeter, cause_key
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig, is_compressed_topic
from dream_vla_ros.nodes.policy_frames import FrameIntake
from dream_vla_ros.nodes.policy_goals import GoalDesk, goal_scorer
from dream_vla_ros.nodes.policy_inference import AddedDelay, InferenceScheduler, Job, LatencyAccount, chunk_message
from dream_vla_ros.nodes.policy_model import joint_mapper, robot_joints
from dream_vla_ros.nodes.polling import PolledInputs, PolledSubscription
from dream_vla_ros.policy.goals import GoalVerdict

NODE_NAME = "policy_node"
ENGINE_BUILD = "engine build"
LIVE_PARAMETERS = ("halting_k_max", "halting_delta")  # applied to the running engine when set


class PolicyNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self, PolicyNodeConfig)
        self._lock = threading.Lock()
        self.config: PolicyNodeConfig | None = None
        self.engine: Any = None
        self._robot_joints: tuple[str, ...] = ()
        self._mapper: JointMapper | None = None
        self._goals = GoalDesk()
        self._joints: tuple[np.ndarray, float] | None = None
        self._inputs: list[Any] = []  # our subscriptions (rclpy.Node owns the name `_subscriptions`)
        self._polled = PolledInputs(self)  # joint states are read when an observation is made (polling.py)
        self._joint_input: PolledSubscription | None = None
        self._joint_rate: RateMeter | None = None
        self._counts = {"requests": 0, "inferences": 0, "chunks_published": 0, "inference_failures": 0,
                        "chunks_confined_to_envelope": 0}
        self._inference_cpu_s = 0.0  # CPU time of the inference thread inside the engine (bench nodes)
        self._latency = LatencyAccount()
        period = float(self.get_parameter("diagnostics_period").value)
        self.diagnostics = Diagnostics(self, self._diagnostic_values, period)
        self._scheduler = InferenceScheduler(self.diagnostics, self._infer, self._on_worker_crash)
        self._intake = FrameIntake(self.diagnostics, self._now, self._on_first_frame, self._on_worker_crash)
        self.create_timer(period, self._watch_inputs)
        self._chunk_pub = self.create_lifecycle_publisher(JointTrajectory, "~/action_chunk", qos.CHUNK)
        self.create_service(Trigger, protocol.STOP, self._on_stop)
        self.create_service(Trigger, protocol.RESUME, self._on_resume)
        self.create_service(Trigger, protocol.ACCEPT_GOAL, self._on_accept_goal)
        self._goal_status_pub = self.create_publisher(String, "~/goal_status", qos.GOAL)
        self._closing = threading.Event()
        self._added_delay = AddedDelay(self._now, self._closing)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def start(self) -> None:
        """Autostart: configure and activate unless ``autostart`` is false."""
        if self.get_parameter("autostart").value:
            self.trigger_configure()
            if self.config is not None:
                self.trigger_activate()

    def close(self) -> None:
        self._closing.set()
        self._intake.close()
        self._scheduler.close()
        self._polled.close()
        self._latency.close_profile()

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
            joints = robot_joints(config, engine.metadata)
            scorer = goal_scorer(engine.metadata, config.min_goal_confidence)
            if scorer is None:
                self.get_logger().warning("the model records no known instructions (trained before they were "
                                          "recorded): goals are not checked")
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
            self.config, self.engine, self._robot_joints = config, engine, joints
            self._goals.use(scorer)
            self._intake.configure(engine.metadata.cameras, config)
            self._mapper = joint_mapper(config, joints, engine.metadata.envelope)
            self._scheduler.configure(config)
            self._joints = None
        if config.profile_path:
            self._latency.open_profile(config.profile_path)
        self._subscribe(config)
        self.get_logger().info(
            f"configured: {engine.name}, cameras {list(self._intake.cameras)} <- {list(config.camera_topics)}, "
            f"joints {list(joints)}"
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

    def _subscribe(self, config: PolicyNodeConfig) -> None:
        for camera, topic in zip(self._intake.cameras, config.camera_topics, strict=True):
            compressed = is_compressed_topic(topic)
            self._inputs.append(self.create_subscription(
                CompressedImage if compressed else Image, topic, self._intake.image_callback(camera, compressed),
                qos.SENSOR,
            ))
        self._joint_rate = RateMeter()
        self._joint_input = self._polled.subscribe(JointState, config.joint_states_topic, qos.SENSOR)
        self._inputs += [
            self.create_subscription(String, config.goal_topic, self._on_goal, qos.GOAL),
            self.create_subscription(String, config.goal_topic, self._on_goal, qos.GOAL_VOLATILE),
            self.create_subscription(Header, config.chunk_request_topic, self._on_request, qos.REQUEST),
        ]

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._scheduler.activate()
        self.get_logger().info("active: answering chunk requests")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._publish_stop()  # the executor holds at once instead of running out its queue
        self._scheduler.deactivate()  # discards a chunk still being computed
        self.get_logger().info("inactive: no chunks")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._scheduler.deactivate(discard=False)
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        self._scheduler.deactivate(discard=False)
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        deadline = time.monotonic() + 10.0
        while self._scheduler.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._joint_input is not None:
            self._polled.unsubscribe(self._joint_input)
            self._joint_input = None
        with self._lock:
            self.config, self.engine, self._mapper = None, None, None
            self._intake.release()
            self._scheduler.release()
            self._joints = None
        self._latency.close_profile()

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
    def _on_first_frame(self) -> None:
        self._maybe_infer(self._now())  # a request may be waiting for a new frame

    def _poll_joint_state(self) -> None:
        """Take the newest joint state, if one arrived since the last look."""
        polled = self._joint_input
        msg = polled.take_newest() if polled is not None else None
        if msg is not None:
            self._on_joint_state(msg)

    def _on_joint_state(self, msg: JointState) -> None:
        now = self._now()
        if self._joint_rate is not None:
            self._joint_rate.tick(now)
        mapper = self._mapper
        if mapper is None:
            return
        joints = read_joint_state(mapper, msg, self.diagnostics)
        if joints is not None:
            with self._lock:
                self._joints = joints

    def _on_goal(self, msg: String) -> None:
        config = self.config
        goal, verdict = self._goals.receive(msg.data, config.max_goal_bytes if config else 512)
        self._apply_goal(goal, verdict)

    def _apply_goal(self, goal: str | None, verdict: GoalVerdict, overridden: bool = False) -> None:
        """Make ``goal`` current (None: refused, '' = stop), report the verdict, stop the arm when needed."""
        changed = self._scheduler.set_goal(goal or "")
        status = self._goals.record(verdict, overridden)
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
        accepted = self._goals.accept_refused()
        if accepted is None:
            response.success, response.message = False, "no refused goal to accept"
            return response
        goal, verdict = accepted
        self.get_logger().warning(f"goal accepted by the operator (~/accept_goal): {goal[:200]!r}")
        self._apply_goal(goal, verdict, overridden=True)
        response.success, response.message = True, f"accepted: {goal[:200]}"
        return response

    def _on_request(self, msg: Header) -> None:
        now = self._now()
        self._scheduler.ask(msg.frame_id, now)
        self._counts["requests"] += 1
        self._maybe_infer(now)

    # -- inference -------------------------------------------------------------------------------------------
    def _maybe_infer(self, now: float) -> None:
        self._poll_joint_state()
        with self._lock:
            joints = self._joints
        self._scheduler.offer(now, self._intake.snapshot(), joints)

    def _watch_inputs(self) -> None:
        """Input health shows on /diagnostics even while nobody asks for chunks."""
        self._poll_joint_state()
        if not self._scheduler.active:
            return
        with self._lock:
            joints = self._joints
        self._scheduler.inputs_fresh(self._now(), self._intake.snapshot(), joints)

    def _infer(self, job: Job) -> None:
        from dream_vla_ros.policy.observation import Observation

        engine, config = self.engine, self.config
        if engine is None or config is None:
            return
        t0 = time.perf_counter()
        images = self._intake.images(job.frames)
        if images is None:
            return
        observation = Observation(images=images, proprio=job.proprio, instruction=job.goal, stamp=job.stamp)
        t1 = time.perf_counter()
        self._counts["inferences"] += 1
        cpu = time.thread_time()
        try:
            prediction = engine.infer(observation)
            self._inference_cpu_s += time.thread_time() - cpu
            first = job.first.msg.header.stamp  # exact, not via float seconds
            msg, confined = chunk_message(prediction, engine.metadata, config.envelope_margin, self._robot_joints,
                                          first)
        except Exception as exc:  # noqa: BLE001 - any engine failure: log once, publish nothing, stay alive
            self._counts["inference_failures"] += 1
            text = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            self.diagnostics.report("engine", cause_key(text), f"inference failed: {text}")
            return
        t2 = time.perf_counter()
        if config.added_delay > 0.0 or config.added_delay_jitter > 0.0:
            self._added_delay.wait(config.added_delay, config.added_delay_jitter)
        if not self._scheduler.wanted(job):
            return
        self._chunk_pub.publish(msg)
        t3 = time.perf_counter()
        published_at = self._now()
        self._scheduler.answered(job, published_at)
        self._counts["chunks_published"] += 1
        if confined:
            self._counts["chunks_confined_to_envelope"] += 1
        if self.diagnostics.faults.active("engine") is not None:
            self.diagnostics.clear("engine")
        self._latency.add(job, prediction, (t0, t1, t2, t3), published_at)

    def _on_worker_crash(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.diagnostics.report("engine", cause_key(text), f"inference worker error: {text}")

    # -- stop / resume ---------------------------------------------------------------------------------------
    def _publish_stop(self) -> None:
        if self._scheduler.active:
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            self._chunk_pub.publish(msg)

    def _on_stop(self, request, response):
        was = self._scheduler.stop()
        self._publish_stop()
        if not was:
            self.get_logger().info("stopped (~/stop): no chunks until ~/resume")
        response.success, response.message = True, "stopped"
        return response

    def _on_resume(self, request, response):
        active, was, goal = self._scheduler.resume()
        if not active:
            response.success, response.message = False, "not active: configure and activate the node first"
            return response
        if was:
            self.get_logger().info("resumed (~/resume)")
        response.success = True
        response.message = "resumed" if goal else "resumed; waiting for a goal"
        return response

    # -- diagnostics -----------------------------------------------------------------------------------------
    def _diagnostic_values(self) -> dict[str, object]:
        now = self._now()
        with self._lock:
            config, joints = self.config, self._joints
        scheduler, frames = self._scheduler, self._intake.newest()
        values: dict[str, object] = {
            "state": "active" if scheduler.active else ("inactive" if config else "unconfigured"),
            "stopped": scheduler.stopped,
            "goal": scheduler.goal[:100],
            **self._goals.values(),
            "backend": self.engine.name if self.engine else "",
            "model": config.model if config else "",
            **engine_status(self.engine),
            **self._intake.counts,
            **self._counts,
            "inference cpu_s": self._inference_cpu_s,
        }
        for slot, meter in [*self._intake.rates.items(), ("joint_states", self._joint_rate)]:
            if meter is not None:
                values[f"{slot} rate_hz"] = meter.value(now)
        for camera, frame in frames.items():
            values[f"camera {camera} age_s"] = now - frame.stamp
        if joints is not None:
            values["joint_states age_s"] = now - joints[1]
        values.update(self._latency.values())
        return values


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.runtime import run

    return run([PolicyNode], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
