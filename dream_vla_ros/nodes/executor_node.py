"""The chunk executor node: policy chunks -> limit-safe rolling windows for JointTrajectoryControllers.

Interfaces (names relative to the node's namespace; ``~`` = the node's name):

- subscribes ``chunk_topic`` (trajectory_msgs/JointTrajectory from the policy node, reliable, keep last 1):
  header.stamp = observation stamp, point i at (i + 1) * dt, joints by name (exactly chunking.joint_names,
  any order). An empty trajectory means stop: the executor brakes to a hold and accepts only chunks from
  observations taken after it;
- reads ``joint_states_topic`` (sensor_msgs/JointState, best effort keep last 1): the measured state the
  executor starts from, and the staleness watchdog; the newest sample is taken at each control tick (a polled
  subscription on the helper node ``<name>_inputs``, see ``polling.py``), so a 500 Hz stream costs no
  executor wake-ups;
- commands the controllers through ``controller_interface`` (see ``controller_outputs.py``): ``topic``
  publishes ``<controller>/joint_trajectory`` per controller (trajectory_msgs/JointTrajectory, RELIABLE as the
  JTC requires): every control period a short window of positions + velocities that ends at rest (see
  ``dream_vla_ros/chunking/window.py`` for the controller settings it assumes); ``action`` sends the same
  windows as control_msgs/action/FollowJointTrajectory goals to ``<controller>/follow_joint_trajectory``;
  ``servo`` streams control_msgs/msg/JointJog velocities to MoveIt Servo (``servo.command_topic``);
- publishes ``~/chunk_request`` (std_msgs/Header, reliable, keep last 1): **the chunk-request mechanism**.
  While the executor wants a chunk (its queue ends within the expected chunk delay plus a margin), it
  publishes a request at once and then every ``request_period`` s: ``header.stamp`` = the executor's time of
  the request, ``header.frame_id`` = ``<session>/<n>`` where ``session`` is random per executor start and
  ``n`` the number of chunk messages received so far. The policy node answers each distinct frame_id with at
  most one chunk, so repeats never cause duplicate inference, and a lost or rejected chunk is asked for
  again (n changes when any chunk message arrives);
- publishes ``~/status`` (std_msgs/String, reliable + transient local, keep last 1; on every change): one JSON
  object ``{"state", "mode", "stopped", "fault_hold", "controller_interface", "controller_fault", "stamp"}``;
  ``state`` is ``inactive`` (lifecycle not active), ``paused``, ``pausing``, ``fault`` (a controller fault is
  latched) or ``active``; ``controller_fault`` is null or ``{"controller", "kind", "error_code",
  "error_string"}``;
- publishes ``/diagnostics``; services ``~/stop`` (brake to a hold, latched) and ``~/resume``, ``~/pause`` and
  ``~/activate`` (std_srvs/Trigger), and the lifecycle services (``~/change_state``, ``~/get_state``, ...).

Hand-over (a MoveIt program, or any other, shares the controller with the executor; see docs/moveit.md):
the executor publishes **nothing** on any controller interface, and requests no chunks, while it is
inactive (lifecycle), paused or holding a controller fault. ``~/pause`` brakes within the limits to rest,
then goes silent (``~/status`` says ``paused``); a lifecycle *deactivate* goes silent at once (the last window
sent already ends at rest within the limits; with Servo, Servo's own command timeout halts the arm, so pause
first). ``~/activate`` (or a lifecycle *activate*) takes the arm: the executor restarts from the **measured**
joint state of a fresh joint-state message (never from where it left off, which the other program may have
moved the arm away from), holds there, and follows chunks from observations taken after that moment.
``~/activate`` also clears a latched controller fault; it does not clear ``~/stop`` (an operator's stop is
cleared by ``~/resume`` only).

Holds: on stop (service or empty chunk), on starvation (no chunk in time: braking at the limits; chunks are
followed again once they cover ``chunking.starvation_recovery`` s ahead), and while a joint state is missing,
invalid (docs/input_validation.md: e.g. outside the limits by more than ``joint_fault_margin``), stale or
from the future, or a controller endpoint is missing (no subscriber, no action server); control restarts from
the measured state once the cause is gone (after a staleness hold: once the joint states have been fresh for
``input_recovery_time`` s). Every cause is logged once (throttled) and shown on /diagnostics. A controller
fault (action: a goal rejected, aborted, or preempted by another client or a controller switch) makes the
executor silent at once, the controller holding the arm, and reports the controller's error code and string
on ``~/status`` and /diagnostics until ``~/activate`` or ``~/resume``.

Lifecycle: with ``autostart`` (default) the node configures and activates itself; ``start_paused`` keeps it
silent until ``~/activate``. Parameters are read at construction.

The control loop runs on a thread of its own, every ``chunking.control_period`` of the node's clock (wall or
simulated time; ``polling.ClockTicker``), not as an executor timer: an rclpy executor wake-up costs more CPU
than the tick itself. The executor (``executor_threads``: 1 = single-threaded, more = a MultiThreadedExecutor)
serves chunks, services and lifecycle transitions meanwhile. The executor core and the supervisor
(``dream_vla_ros/chunking/supervisor.py``: the hand-over, stop, fault and hold decisions above, pure) are
guarded by one lock; the node converts messages, does what the supervisor decides, and publishes.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from dream_vla_ros import protocol
from dream_vla_ros.chunking import ActionChunk, ChunkExecutor
from dream_vla_ros.chunking import chunk as reject
from dream_vla_ros.chunking.executor import HOLDING, RUNNING
from dream_vla_ros.chunking.supervisor import CoreCall, Decision, OutputCall, Step, Supervisor
from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.controller_outputs import Command, ControllerFault, make_output
from dream_vla_ros.nodes.conversions import (
    JointMapper,
    seconds_to_stamp,
    trajectory_to_chunk,
)
from dream_vla_ros.nodes.diagnostics import Diagnostics, gate_slot, read_joint_state
from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig
from dream_vla_ros.nodes.health import RateMeter, RecoveryGate, cause_key
from dream_vla_ros.nodes.inputs import FreshnessLimits, check_freshness
from dream_vla_ros.nodes.joint_state_cdr import read_joint_state_cdr
from dream_vla_ros.nodes.polling import ClockTicker, PolledInputs

NODE_NAME = "chunk_executor"

# Rejections that mean the chunk itself is bad (errors); the others are timing (warnings).
BAD_CHUNK = {reject.BAD_SHAPE, reject.NOT_FINITE, reject.BAD_DT, reject.BAD_STAMP, reject.UNKNOWN_JOINTS,
             reject.MISSING_JOINTS, reject.DUPLICATE_JOINTS, reject.FROM_FUTURE}
# Rejections that are expected while holding or just after a stop or reset (counted, not logged).
EXPECTED = {reject.STOPPED, reject.PREDATES_RESET, reject.PREDATES_RESUME, reject.NOT_INITIALISED}
JOINT_SLOTS = ("joint_states", "joint_states timing")
FAULT_SLOT = "controller fault"
# ~/status: the latest state for late joiners (a program waiting for "paused" before it plans).
STATUS_QOS = qos.GOAL


class ExecutorNode(LifecycleNode):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self, ExecutorNodeConfig)
        self.config = params.read(self, ExecutorNodeConfig)
        config = self.config
        self.joint_names = config.chunking.joint_names
        self.executor_threads = config.executor_threads
        self.core = ChunkExecutor(config.chunking)
        self._supervisor: Supervisor[ControllerFault] = Supervisor(config.start_paused)
        self._lock = threading.Lock()
        limits = config.chunking.limits.resolve(len(self.joint_names))
        margin = config.joint_fault_margin
        self._mapper = JointMapper(self.joint_names, bounds=(limits.position_min - margin,
                                                             limits.position_max + margin))
        self._recovery = RecoveryGate(config.input_recovery_time)
        self._limits = FreshnessLimits(1.0, config.max_joint_state_age, config.max_future, 1.0)
        self._joints: tuple[np.ndarray, float] | None = None
        self._plan_version = 0
        self._status: tuple | None = None
        self._session = secrets.token_hex(4)
        self._chunks_seen = 0
        self._last_request: tuple[str, float] | None = None
        self._last_tick: float | None = None
        self._starvations = 0
        self._counts = {"ticks": 0, "missed_ticks": 0, "windows_published": 0, "requests": 0,
                        "chunks_invalid": 0, "activations": 0, "pauses": 0, "controller_faults": 0}
        self._merge_ms: list[float] = []
        self._rate = RateMeter()
        self._profile = open(config.profile_path, "a", buffering=1) if config.profile_path else None  # noqa: SIM115

        io_group = MutuallyExclusiveCallbackGroup()
        self.diagnostics = Diagnostics(self, self._diagnostic_values, config.diagnostics_period,
                                       callback_group=io_group)
        self._output = make_output(self, config, callback_group=io_group)
        self._controller_slots = {c: f"controller {c}" for c, _, _ in self._output.endpoints()}
        self._hold_slots = (*JOINT_SLOTS, *self._controller_slots.values())  # a hold while any is unhealthy
        self._request_pub = self.create_publisher(Header, "~/chunk_request", qos.REQUEST)
        self._status_pub = self.create_publisher(String, protocol.STATUS_TOPIC, STATUS_QOS)
        chunks = self.create_subscription(JointTrajectory, config.chunk_topic, self._on_chunk, qos.CHUNK,
                                          callback_group=io_group)
        self._polled = PolledInputs(self)
        # taken as CDR bytes and read without building a message (joint_state_cdr.py)
        self._joint_input = self._polled.subscribe(JointState, config.joint_states_topic, qos.SENSOR, raw=True)
        supervisor = self._supervisor
        for name, event, counter in ((protocol.STOP, supervisor.stop, ""), (protocol.RESUME, supervisor.resume, ""),
                                     (protocol.PAUSE, supervisor.pause, "pauses"),
                                     (protocol.ACTIVATE, supervisor.activate, "activations")):
            self.create_service(Trigger, name, self._service(event, counter), callback_group=io_group)
        self._ticker = ClockTicker(self, config.chunking.control_period, self._on_tick, self._on_tick_error)
        endpoints = [name for _, name, _ in self._output.endpoints()]
        self.get_logger().info(
            f"executing {list(self.joint_names)} at {1.0 / config.chunking.control_period:g} Hz through "
            f"{config.controller_interface} {endpoints}; chunks from {chunks.topic_name}"
            + ("; paused until ~/activate" if config.start_paused else "")
        )
        self._publish_status(self._now())
        self._ticker.start()

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def start(self) -> None:
        """Autostart: configure and activate unless ``autostart`` is false."""
        if self.config.autostart:
            self.trigger_configure()
            self.trigger_activate()

    def close(self) -> None:
        self._ticker.close()
        self._polled.close()
        if self._profile is not None:
            self._profile.close()
            self._profile = None

    def _on_tick_error(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.diagnostics.report("control loop", cause_key(text), f"control tick failed: {text}")

    # -- lifecycle -------------------------------------------------------------------------------------------
    def on_activate(self, state) -> TransitionCallbackReturn:
        self._apply(self._supervisor.lifecycle_activate)
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._apply(self._supervisor.lifecycle_deactivate)
        return super().on_deactivate(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._apply(self._supervisor.lifecycle_deactivate)
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        self._apply(self._supervisor.lifecycle_deactivate)
        return TransitionCallbackReturn.SUCCESS

    def _apply(self, event: Callable[[], Decision], counter: str = "") -> Decision:
        """Run a control-plane event of the supervisor and carry out its decision (``counter`` counts successes)."""
        now = self._now()
        with self._lock:
            decision = event()
            if decision.core is CoreCall.STOP:
                self.core.stop(now)
            elif decision.core is CoreCall.RESUME:
                self.core.resume(now)
            if decision.replan:
                self._plan_version += 1
        if counter and decision.success:
            self._counts[counter] += 1
        self._carry_out(decision, now)
        return decision

    def _carry_out(self, decision: Decision, now: float) -> None:
        """The part of a decision outside the lock: outputs, diagnostics, log, ~/status."""
        if decision.outputs is OutputCall.START:
            self._output.start()
        elif decision.outputs is OutputCall.STOP:
            self._output.stop()
        if decision.fault_cleared:
            self.diagnostics.clear(FAULT_SLOT)
        if decision.log:
            self.get_logger().info(decision.log)
        if decision.publish:
            self._publish_status(now)

    def _service(self, event: Callable[[], Decision], counter: str) -> Callable:
        def serve(request, response):
            decision = self._apply(event, counter)
            response.success, response.message = decision.success, decision.message
            return response

        return serve

    # -- inputs ----------------------------------------------------------------------------------------------
    def _on_joint_state(self, data: bytes) -> None:
        self._rate.tick(self._now())
        try:
            msg = read_joint_state_cdr(data, JointState)
        except InputError as exc:
            self.diagnostics.report("joint_states", cause_key(str(exc)), str(exc))
            return
        joints = read_joint_state(self._mapper, msg, self.diagnostics)
        if joints is not None:
            with self._lock:
                self._joints = joints

    def _on_chunk(self, msg: JointTrajectory) -> None:
        now = self._now()
        with self._lock:
            self._chunks_seen += 1
        try:
            chunk = trajectory_to_chunk(msg, self.joint_names)
        except InputError as exc:
            self._counts["chunks_invalid"] += 1
            self.diagnostics.report("chunk", cause_key(str(exc)), f"chunk rejected: {exc}")
            return
        if chunk is None:
            with self._lock:
                self._plan_version += 1
                self.core.stop(now)
                if self._supervisor.core_may_resume:
                    self.core.resume(now)  # brake now; accept chunks from observations after this moment
            self.diagnostics.report("chunk", "stop", "stop from the policy (empty chunk): holding", level="warn")
            return
        t0 = time.perf_counter()
        with self._lock:
            result = self.core.add_chunk(
                ActionChunk(self.joint_names, chunk.t0, chunk.dt, chunk.positions, chunk.velocities), now
            )
            if result.accepted:
                self._plan_version += 1
        merge_ms = (time.perf_counter() - t0) * 1e3
        if not result.accepted:
            if result.reason not in EXPECTED:  # (those are counted in the core's stats, not reported)
                level = "error" if result.reason in BAD_CHUNK else "warn"
                self.diagnostics.report("chunk", result.reason,
                                        f"chunk rejected ({result.reason}): {result.detail}", level=level)
            return
        self._merge_ms.append(merge_ms)
        del self._merge_ms[:-100]
        if self.diagnostics.faults.active("chunk") is not None:
            self.diagnostics.clear("chunk")
        if self._profile is not None:
            record = {"stamp": chunk.t0, "received": now, "merge_ms": merge_ms, "delay_ms": result.delay * 1e3,
                      "dropped_points": result.dropped_points, "ticks": self._counts["ticks"],
                      "missed_ticks": self._counts["missed_ticks"]}
            self._profile.write(json.dumps(record) + "\n")

    # -- control loop ----------------------------------------------------------------------------------------
    def _hold_causes(self, now: float) -> bool:
        """Update the watchdog causes; True while the executor must hold."""
        with self._lock:
            joints = self._joints
        problems = check_freshness(now, {}, joints[1] if joints else None, self._limits)
        for problem in problems:
            self.diagnostics.report(problem.slot, problem.key, f"{problem.message}: holding", level="warn")
        gate_slot(self.diagnostics, self._recovery, "joint_states timing", not problems, now)
        if self.config.hold_without_controller:
            for controller, endpoint, connected in self._output.endpoints():
                slot = self._controller_slots[controller]
                if not connected:
                    what = "action server" if self._output.interface == "action" else "subscriber"
                    self.diagnostics.report(slot, f"no {what}", f"no {what} on {endpoint}: holding", level="warn")
                elif self.diagnostics.faults.active(slot) is not None:
                    self.diagnostics.clear(slot)
        return not self.diagnostics.faults.is_healthy(*self._hold_slots)

    def _on_tick(self) -> None:
        msg = self._joint_input.take_newest()
        if msg is not None:
            self._on_joint_state(msg)
        now = self._now()
        period = self.config.chunking.control_period
        if self._last_tick is not None and now - self._last_tick > 1.5 * period:
            self._counts["missed_ticks"] += round((now - self._last_tick) / period) - 1
        self._last_tick = now
        self._counts["ticks"] += 1
        supervisor = self._supervisor
        faults = self._output.take_faults()
        with self._lock:
            latched = bool(faults) and supervisor.controller_fault(faults[0])
            if latched:
                self.core.stop(now)
            controlling = supervisor.controlling
        if latched:
            self._report_fault(now, faults[0])
            return
        if not controlling:
            self._publish_status(now)
            return
        hold = self._hold_causes(now)
        reset_error = window = command = None
        with self._lock:  # (no diagnostics calls under the lock: publishing reads the core under it)
            joints = self._joints
            step = supervisor.tick(hold, joints is not None)
            if step is Step.HOLD:
                self.core.stop(now)
                self._plan_version += 1
            elif step is Step.RESET:
                try:
                    self.core.reset(now, joints[0])
                except InputError as exc:  # e.g. the arm outside the configured limits: keep holding
                    reset_error = str(exc)
                else:
                    self._plan_version += 1
                    if supervisor.reset_succeeded():
                        self.core.stop(now)
            if supervisor.synced:  # never send from a commanded state the measured arm may have left
                self.core.advance(now)
                if self._output.wants_window(now, self._plan_version, self.core.mode):
                    window = self.core.window(now)  # built only for the ticks that send one
            wants = self.core.wants_chunk(now) and supervisor.may_request
            mode, starvations = self.core.mode, self.core.stats.starvation_events
            request_id = f"{self._session}/{self._chunks_seen}"
            if window is not None:
                command = Command(now, window, self.core.state, self._plan_version, joints)
            braked = supervisor.braked(mode == HOLDING)
            held = supervisor.held
        if reset_error is not None:
            self.diagnostics.report("reset", cause_key(reset_error), f"{reset_error}: holding")
        elif self.diagnostics.faults.active("reset") is not None and not held:
            self.diagnostics.clear("reset")
        if starvations != self._starvations:
            self._starvations = starvations
            self.diagnostics.report("chunks", "starved", "no chunk arrived in time: braking to a hold", level="warn")
        elif mode == RUNNING and self.diagnostics.faults.active("chunks") is not None:
            self.diagnostics.clear("chunks")
        if braked:  # at rest: the last window sent already ends here; nothing more to send
            settled = self._output.settled()
            with self._lock:
                done = supervisor.settle(now, settled)
            if done is not None:
                self._carry_out(done, now)
            return
        if command is not None:
            self._output.send(command)
            self._counts["windows_published"] += 1
        if wants:
            self._request(now, request_id)
        self._publish_status(now)

    def _report_fault(self, now: float, fault: ControllerFault) -> None:
        """A controller stopped following (latched): go silent (the controller holds the arm) and report."""
        self._output.stop()
        self._counts["controller_faults"] += 1
        self.diagnostics.report(FAULT_SLOT, f"{fault.kind} {fault.error_code}",
                                f"{fault.message()}: holding, publishing nothing until ~/activate or ~/resume")
        self._publish_status(now)

    def _publish_status(self, now: float) -> None:
        supervisor = self._supervisor
        with self._lock:
            key = (supervisor.state, self.core.mode, supervisor.stopped, supervisor.held, supervisor.fault)
        if key == self._status:
            return
        self._status = key
        state, mode, stopped, held, fault = key
        document = {protocol.STATE: state.value, protocol.MODE: mode, protocol.STOPPED: stopped,
                    protocol.FAULT_HOLD: held, protocol.CONTROLLER_INTERFACE: self.config.controller_interface,
                    protocol.CONTROLLER_FAULT: fault.as_dict() if fault is not None else None, protocol.STAMP: now}
        self._status_pub.publish(String(data=json.dumps(document)))

    def _request(self, now: float, request_id: str) -> None:
        last = self._last_request
        if last is not None and last[0] == request_id and now - last[1] < self.config.request_period:
            return
        msg = Header(frame_id=request_id)
        msg.stamp = seconds_to_stamp(now)
        self._request_pub.publish(msg)
        self._last_request = (request_id, now)
        self._counts["requests"] += 1

    # -- diagnostics -----------------------------------------------------------------------------------------
    def _diagnostic_values(self) -> dict[str, object]:
        now = self._now()
        supervisor = self._supervisor
        with self._lock:
            stats = self.core.stats.as_dict()
            mode, joints = self.core.mode, self._joints
            latency = self.core.latency_estimate
            state, stopped, held = supervisor.state, supervisor.stopped, supervisor.held
        values: dict[str, object] = {
            "state": state.value,
            "controller_interface": self.config.controller_interface,
            "mode": mode,
            "stopped": stopped,
            "fault_hold": held,
            "joint_states rate_hz": self._rate.value(now),
            "joint_states age_s": (now - joints[1]) if joints else float("nan"),
            "chunk latency estimate_s": latency,
            "tick lateness p99_ms": self._ticker.lateness.quantile(0.99),
            **self._counts,
            **self._output.values(),
        }
        for key, value in stats.items():
            if isinstance(value, dict):
                values.update({f"{key} {k}": v for k, v in value.items()})
            else:
                values[key] = value
        merges = list(self._merge_ms)
        if merges:
            values["merge ms (median)"] = float(np.median(merges))
        return values


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.runtime import run

    return run([ExecutorNode], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
