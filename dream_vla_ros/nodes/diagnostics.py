"""``/diagnostics`` for the nodes (diagnostic_updater is not a dependency): one status per cause.

:class:`Diagnostics` wraps a :class:`~dream_vla_ros.nodes.health.FaultTracker`: ``report`` logs a cause the
first time it appears in its slot and publishes at once; ``clear`` logs the recovery once (both through a
:class:`~dream_vla_ros.nodes.health.LogBudget` per slot and cause, so an input flapping between good and
bad, e.g. a goal flood, cannot flood the log: /diagnostics still shows every change); a timer publishes
the whole picture every ``period`` seconds. The array holds a summary status named after the node (level =
worst active cause, values from the node's ``values`` callback: rates, ages, latencies, counters) and one
status per slot ever reported (``<node>: <slot>``: OK once recovered, WARN/ERROR with the cause while active).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes.conversions import JointMapper
from dream_vla_ros.nodes.health import FaultTracker, Level, LogBudget, RecoveryGate, cause_key

_LEVELS = {"warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}
RECOVERING = "; good again, holding until good for"


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class Diagnostics:
    """Cause logging and ``/diagnostics`` publishing for one node."""

    def __init__(
        self,
        node,
        values: Callable[[], dict[str, object]],
        period: float = 1.0,
        hardware_id: str = "",
        callback_group=None,
    ) -> None:
        self.node = node
        self.faults = FaultTracker()
        self.log_budget = LogBudget()
        self._values = values
        self._name = node.get_fully_qualified_name().lstrip("/")
        self._hardware_id = hardware_id or self._name
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._publisher = node.create_publisher(DiagnosticArray, "/diagnostics", qos)
        self._timer = node.create_timer(period, self.publish, callback_group=callback_group)

    def report(self, slot: str, key: str, message: str, level: Level = "error") -> bool:
        """Record a cause; logs it and publishes when it is new for ``slot``. Returns whether it was new."""
        if not self.faults.report(slot, key, message, level):
            return False
        suffix = self.log_budget.take(slot, key)
        # rclpy fixes the severity per call site, hence two calls.
        if suffix is not None and level == "error":
            self.node.get_logger().error(f"{slot}: {message}{suffix}")
        elif suffix is not None:
            self.node.get_logger().warning(f"{slot}: {message}{suffix}")
        self.publish()
        return True

    def clear(self, slot: str) -> None:
        """Mark ``slot`` healthy; logs the recovery once."""
        fault = self.faults.clear(slot)
        if fault is not None:
            self._log_recovery(fault.slot, fault.key)
            self.publish()

    def _log_recovery(self, slot: str, key: str) -> None:
        suffix = self.log_budget.take(slot, f"recovered {key}")
        if suffix is not None:
            self.node.get_logger().info(f"{slot}: recovered ({key}){suffix}")

    def clear_all(self, prefix: str = "") -> None:
        for fault in self.faults.clear_prefix(prefix):
            self._log_recovery(fault.slot, fault.key)
        self.publish()

    def publish(self) -> None:
        active, seen = self.faults.snapshot()
        try:
            values = self._values()
        except Exception as exc:  # noqa: BLE001 - diagnostics must never take the node down
            values = {"values_error": repr(exc)}
        worst = max((_LEVELS[f.level] for f in active.values()), default=DiagnosticStatus.OK)
        summary = "; ".join(f"{f.slot}: {f.message}" for f in active.values()) or "ok"
        values = {**values, "last_error": self.faults.last_error, "active_causes": len(active)}
        statuses = [
            DiagnosticStatus(
                level=worst,
                name=self._name,
                message=summary[:1000],
                hardware_id=self._hardware_id,
                values=[KeyValue(key=k, value=_format(v)) for k, v in values.items()],
            )
        ]
        for slot in sorted(seen):
            fault = active.get(slot)
            statuses.append(
                DiagnosticStatus(
                    level=_LEVELS[fault.level] if fault else DiagnosticStatus.OK,
                    name=f"{self._name}: {slot}",
                    message=fault.message[:1000] if fault else "ok",
                    hardware_id=self._hardware_id,
                    values=[KeyValue(key="cause", value=fault.key), KeyValue(key="count", value=str(fault.count))]
                    if fault
                    else [],
                )
            )
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._publisher.publish(msg)


def read_joint_state(
    mapper: JointMapper, msg: JointState, diagnostics: Diagnostics
) -> tuple[np.ndarray, float] | None:
    """``(positions in model order, stamp seconds)`` of a JointState, or None after reporting why it is unusable
    on ``diagnostics`` (slot ``joint_states``, once per cause); a good message clears that slot."""
    try:
        joints = mapper.read(msg)
    except InputError as exc:
        diagnostics.report("joint_states", cause_key(str(exc)), str(exc))
        return None
    if diagnostics.faults.active("joint_states") is not None:
        diagnostics.clear("joint_states")
    return joints


def gate_slot(diagnostics: Diagnostics, gate: RecoveryGate, slot: str, healthy: bool, now: float) -> bool:
    """Hysteresis for a staleness slot: True when ``slot`` may be used. Its fault (reported by the caller while
    it is bad) is cleared only once ``gate`` says the input has been good for long enough; until then the
    fault stays on /diagnostics, saying how long the input must stay good."""
    fault = diagnostics.faults.active(slot)
    if gate.update(slot, healthy, now):
        if fault is not None:
            diagnostics.clear(slot)
        return True
    if healthy and fault is not None:
        cause = fault.message.split(RECOVERING)[0]  # the cause stays named while the input recovers
        diagnostics.report(slot, fault.key, f"{cause}{RECOVERING} {gate.recovery:g} s without a break "
                           f"({gate.remaining(slot, now):.2f} s to go)", level=fault.level)
    return False
