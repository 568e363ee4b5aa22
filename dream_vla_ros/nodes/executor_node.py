"""The chunk executor node: policy chunks -> limit-safe rolling windows for JointTrajectoryControllers.

Interfaces (names relative to the node's namespace; ``~`` = the node's name):

- subscribes ``chunk_topic`` (trajectory_msgs/JointTrajectory from the policy node, reliable, keep last 1):
  header.stamp = observation stamp, point i at (i + 1) * dt, joints by name (exactly chunking.joint_names,
  any order). An empty trajectory means stop: the executor brakes to a hold and accepts only chunks from
  observations taken after it;
- subscribes ``joint_states_topic`` (sensor_msgs/JointState, best effort keep last 1): the measured state
  the executor starts from, and the staleness watchdog;
- publishes ``<controller>/joint_trajectory`` per controller (trajectory_msgs/JointTrajectory, RELIABLE as the
  JTC requires): every control period a short window of positions + velocities that ends at rest (see
  ``dream_vla_ros/chunking/window.py`` for the controller settings it assumes);
- publishes ``~/chunk_request`` (std_msgs/Header, reliable, keep last 1): **the chunk-request mechanism**.
  While the executor wants a chunk (its queue ends within the expected chunk delay plus a margin), it
  publishes a request at once and then every ``request_period`` s: ``header.stamp`` = the executor's time of
  the request, ``header.frame_id`` = ``<session>/<n>`` where ``session`` is random per executor start and
  ``n`` the number of chunk messages received so far. The policy node answers each distinct frame_id with at
  most one chunk, so repeats never cause duplicate inference, and a lost or rejected chunk is asked for
  again (n changes when any chunk message arrives);
- publishes ``/diagnostics``; services ``~/stop`` (brake to a hold, latched) and ``~/resume`` (std_srvs/Trigger).

Holds: on stop (service or empty chunk), on starvation (no chunk in time: braking at the limits), and while a
joint state is missing, invalid, stale or from the future, or a controller topic has no subscriber; control
restarts from the measured state once the cause is gone. Every cause is logged once and shown on /diagnostics.

The control timer runs in its own callback group, so with ``executor_threads`` > 1 a MultiThreadedExecutor
serves it in parallel with the subscriptions; the default single thread measured lower latency and fewer
late ticks in rclpy (``dream-vla-ros bench latency``). The executor core is guarded by one lock.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from dream_vla_ros.chunking import ActionChunk, ChunkExecutor
from dream_vla_ros.chunking import chunk as reject
from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.conversions import (
    JointMapper,
    seconds_to_stamp,
    stamp_to_seconds,
    trajectory_to_chunk,
    window_to_trajectory,
)
from dream_vla_ros.nodes.diagnostics import Diagnostics
from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig
from dream_vla_ros.nodes.health import RateMeter, cause_key
from dream_vla_ros.nodes.inputs import FreshnessLimits, check_freshness

NODE_NAME = "chunk_executor"

# Rejections that mean the chunk itself is bad (errors); the others are timing (warnings).
BAD_CHUNK = {reject.BAD_SHAPE, reject.NOT_FINITE, reject.BAD_DT, reject.BAD_STAMP, reject.UNKNOWN_JOINTS,
             reject.MISSING_JOINTS, reject.DUPLICATE_JOINTS, reject.FROM_FUTURE}
# Rejections that are expected while holding or just after a stop or reset (counted, not logged).
EXPECTED = {reject.STOPPED, reject.PREDATES_RESET, reject.PREDATES_RESUME, reject.NOT_INITIALISED}
JOINT_SLOTS = ("joint_states", "joint_states timing")


class ExecutorNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self, ExecutorNodeConfig)
        self.config = params.read(self, ExecutorNodeConfig)
        config = self.config
        self.joint_names = config.chunking.joint_names
        self.executor_threads = config.executor_threads
        self.core = ChunkExecutor(config.chunking)
        self._lock = threading.Lock()
        self._mapper = JointMapper(self.joint_names)
        self._limits = FreshnessLimits(1.0, config.max_joint_state_age, config.max_future, 1.0)
        self._joints: tuple[np.ndarray, float] | None = None
        self._hard_stop = False
        self._fault_hold = False
        self._session = secrets.token_hex(4)
        self._chunks_seen = 0
        self._last_request: tuple[str, float] | None = None
        self._last_tick: float | None = None
        self._starvations = 0
        self._counts = {"ticks": 0, "missed_ticks": 0, "windows_published": 0, "requests": 0,
                        "chunks_invalid": 0}
        self._merge_ms: list[float] = []
        self._rate = RateMeter()
        self._profile = open(config.profile_path, "a", buffering=1) if config.profile_path else None  # noqa: SIM115

        control_group = MutuallyExclusiveCallbackGroup()
        io_group = MutuallyExclusiveCallbackGroup()
        self.diagnostics = Diagnostics(self, self._diagnostic_values, config.diagnostics_period,
                                       callback_group=io_group)
        self._controllers = []
        for controller, columns in config.controller_columns().items():
            topic = f"{controller}/joint_trajectory"
            self._controllers.append(
                (controller, columns, self.create_publisher(JointTrajectory, topic, qos.CONTROLLER))
            )
        self._request_pub = self.create_publisher(Header, "~/chunk_request", qos.REQUEST)
        chunks = self.create_subscription(JointTrajectory, config.chunk_topic, self._on_chunk, qos.CHUNK,
                                          callback_group=io_group)
        self.create_subscription(JointState, config.joint_states_topic, self._on_joint_state, qos.SENSOR,
                                 callback_group=io_group)
        self.create_service(Trigger, "~/stop", self._on_stop, callback_group=io_group)
        self.create_service(Trigger, "~/resume", self._on_resume, callback_group=io_group)
        self._timer = self.create_timer(config.chunking.control_period, self._on_tick, callback_group=control_group)
        self.get_logger().info(
            f"executing {list(self.joint_names)} at {1.0 / config.chunking.control_period:g} Hz to "
            f"{[c for c, _, _ in self._controllers]}; chunks from {chunks.topic_name}"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def close(self) -> None:
        if self._profile is not None:
            self._profile.close()
            self._profile = None

    # -- inputs ----------------------------------------------------------------------------------------------
    def _on_joint_state(self, msg: JointState) -> None:
        self._rate.tick(self._now())
        try:
            positions = self._mapper.positions(msg)
        except InputError as exc:
            self.diagnostics.report("joint_states", cause_key(str(exc)), str(exc))
            return
        with self._lock:
            self._joints = (positions, stamp_to_seconds(msg.header.stamp))
        if self.diagnostics.faults.active("joint_states") is not None:
            self.diagnostics.clear("joint_states")

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
                self.core.stop(now)
                if not self._hard_stop and not self._fault_hold:
                    self.core.resume(now)  # brake now; accept chunks from observations after this moment
            self.diagnostics.report("chunk", "stop", "stop from the policy (empty chunk): holding", level="warn")
            return
        t0 = time.perf_counter()
        with self._lock:
            result = self.core.add_chunk(
                ActionChunk(self.joint_names, chunk.t0, chunk.dt, chunk.positions, chunk.velocities), now
            )
        merge_ms = (time.perf_counter() - t0) * 1e3
        if not result.accepted and result.reason in EXPECTED:
            return  # counted in the core's stats: normal while holding or right after a stop
        if not result.accepted:
            level = "error" if result.reason in BAD_CHUNK else "warn"
            self.diagnostics.report("chunk", result.reason, f"chunk rejected ({result.reason}): {result.detail}",
                                    level=level)
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
        if not problems and self.diagnostics.faults.active("joint_states timing") is not None:
            self.diagnostics.clear("joint_states timing")
        if self.config.hold_without_controller:
            for controller, _, publisher in self._controllers:
                slot = f"controller {controller}"
                if publisher.get_subscription_count() == 0:
                    self.diagnostics.report(slot, "no subscriber",
                                            f"no subscriber on {publisher.topic_name}: holding", level="warn")
                elif self.diagnostics.faults.active(slot) is not None:
                    self.diagnostics.clear(slot)
        slots = [*JOINT_SLOTS, *(f"controller {c}" for c, _, _ in self._controllers)]
        return not self.diagnostics.faults.is_healthy(*slots)

    def _on_tick(self) -> None:
        now = self._now()
        period = self.config.chunking.control_period
        if self._last_tick is not None and now - self._last_tick > 1.5 * period:
            self._counts["missed_ticks"] += round((now - self._last_tick) / period) - 1
        self._last_tick = now
        self._counts["ticks"] += 1
        hold = self._hold_causes(now)
        reset_error = None
        with self._lock:  # (no diagnostics calls under the lock: publishing reads the core under it)
            joints = self._joints
            if hold and not self._fault_hold:
                self._fault_hold = True
                self.core.stop(now)
            elif not hold and (self._fault_hold or self.core.mode == "idle") and joints is not None:
                try:
                    self.core.reset(now, joints[0])
                except InputError as exc:  # e.g. the arm outside the configured limits: keep holding
                    reset_error = str(exc)
                else:
                    self._fault_hold = False
                    if self._hard_stop:
                        self.core.stop(now)
            window = self.core.tick(now)
            wants = self.core.wants_chunk(now)
            mode, starvations = self.core.mode, self.core.stats.starvation_events
            request_id = f"{self._session}/{self._chunks_seen}"
        if reset_error is not None:
            self.diagnostics.report("reset", cause_key(reset_error), f"{reset_error}: holding")
        elif self.diagnostics.faults.active("reset") is not None and not self._fault_hold:
            self.diagnostics.clear("reset")
        if starvations != self._starvations:
            self._starvations = starvations
            self.diagnostics.report("chunks", "starved", "no chunk arrived in time: braking to a hold", level="warn")
        elif mode == "running" and self.diagnostics.faults.active("chunks") is not None:
            self.diagnostics.clear("chunks")
        if window is not None:
            self._publish_window(window)
        if wants:
            self._request(now, request_id)

    def _publish_window(self, window) -> None:
        stamp = seconds_to_stamp(window.stamp) if window.stamp > 0.0 else None
        for _, columns, publisher in self._controllers:
            msg = window_to_trajectory(window.joint_names, window.positions, window.velocities,
                                       window.time_from_start, stamp, columns)
            publisher.publish(msg)
        self._counts["windows_published"] += 1

    def _request(self, now: float, request_id: str) -> None:
        last = self._last_request
        if last is not None and last[0] == request_id and now - last[1] < self.config.request_period:
            return
        msg = Header(frame_id=request_id)
        msg.stamp = seconds_to_stamp(now)
        self._request_pub.publish(msg)
        self._last_request = (request_id, now)
        self._counts["requests"] += 1

    # -- services --------------------------------------------------------------------------------------------
    def _on_stop(self, request, response):
        now = self._now()
        with self._lock:
            was, self._hard_stop = self._hard_stop, True
            self.core.stop(now)
        if not was:
            self.get_logger().info("stopped (~/stop): holding until ~/resume")
        response.success, response.message = True, "stopped"
        return response

    def _on_resume(self, request, response):
        now = self._now()
        with self._lock:
            was, self._hard_stop = self._hard_stop, False
            if not self._fault_hold:
                self.core.resume(now)
        if was:
            self.get_logger().info("resumed (~/resume)")
        response.success = True
        response.message = "resumed" if not self._fault_hold else "resumed; holding until the fault clears"
        return response

    # -- diagnostics -----------------------------------------------------------------------------------------
    def _diagnostic_values(self) -> dict[str, object]:
        now = self._now()
        with self._lock:
            stats = self.core.stats.as_dict()
            mode, joints = self.core.mode, self._joints
            latency = self.core.latency_estimate
        values: dict[str, object] = {
            "mode": mode,
            "stopped": self._hard_stop,
            "fault_hold": self._fault_hold,
            "joint_states rate_hz": self._rate.value(now),
            "joint_states age_s": (now - joints[1]) if joints else float("nan"),
            "chunk latency estimate_s": latency,
            **self._counts,
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
