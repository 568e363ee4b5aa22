"""A small Python API to hand the arm to the VLA and take it back (in the spirit of nav2_simple_commander).

::

    import rclpy
    from dream_vla_ros.commander import TaskResult, VlaCommander

    rclpy.init()
    node = rclpy.create_node("cell_program")
    vla = VlaCommander(node, success_topic="/task_checker/done")
    ...                                        # MoveIt plans and executes the approach (the VLA is silent)
    outcome = vla.run_goal("insert the peg", timeout=30.0)
    if outcome.result is TaskResult.SUCCEEDED:
        ...                                    # MoveIt takes over again: run_goal returned with the VLA silent

**Hand-over protocol** (the chunk executor's side is in ``dream_vla_ros/nodes/executor_node.py``):

1. While the other program moves the arm, the executor is *paused* (``~/pause``, or ``start_paused: true``)
   or lifecycle-inactive: it publishes nothing on any controller interface and requests no chunks, so the two
   never fight over the controller. ``~/status`` (latched JSON) says ``paused``.
2. :meth:`VlaCommander.run_goal` *takes* the arm once the other program's motion has finished: it brings the
   executor (and, if named, the policy node) to lifecycle-active, calls ``~/activate`` and waits for
   ``~/status`` to say ``active``. The executor restarts from the measured joint state of a fresh joint-state
   message (no jump to where it left off) and holds there; then the instruction goes out on the goal topic
   and the policy's chunks are followed.
3. It ends on success (a ``true`` on ``success_topic`` received after the goal was sent), on the timeout, on
   :meth:`stop`, or on failure (a controller fault, e.g. an aborted FollowJointTrajectory goal, or the executor
   paused by someone else). Whatever the reason it then *gives the arm back*: an empty goal (the policy stops),
   ``~/pause`` (the executor brakes within its limits to rest), and it returns once ``~/status`` says
   ``paused``. The arm is at rest and nothing of the VLA commands it any more.

Spinning: by default the commander spins ``node`` itself while it waits (the node must not be in another
executor). Pass ``spin=False`` when the node is spun elsewhere (e.g. a MultiThreadedExecutor in another
thread); waits then poll. :meth:`stop` may be called from another thread while :meth:`run_goal` waits.

MoveIt Servo (``controller_interface: servo``): Servo itself must be running for the VLA's commands and
paused while another program moves the arm; with ``servo_node`` set the commander does that on take / give
back: Humble ``~/start_servo`` / ``~/stop_servo`` (std_srvs/Trigger), Jazzy ``~/pause_servo``
(std_srvs/SetBool) plus ``~/switch_command_type`` to JOINT_JOG (moveit_msgs, when importable).
"""

from __future__ import annotations

import enum
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from dream_vla_ros import protocol
from dream_vla_ros.errors import DreamVlaError
from dream_vla_ros.ros_calls import call_service, lifecycle_state, wait_for

TRANSITIONS = {"configure": 1, "activate": 3}  # lifecycle_msgs/Transition ids


class TaskResult(enum.Enum):
    SUCCEEDED = "succeeded"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """How a :meth:`VlaCommander.run_goal` ended (truthy only when it succeeded)."""

    result: TaskResult
    detail: str = ""
    duration: float = 0.0
    controller_fault: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return self.result is TaskResult.SUCCEEDED


class CommanderError(DreamVlaError):
    """A service the commander needs did not answer, or refused."""


def _absolute(name: str) -> str:
    return name if name.startswith("/") else f"/{name}"


class VlaCommander:
    """Run VLA goals on an arm shared with other programs (see the module docstring).

    executor / policy: fully qualified node names of the chunk executor and the policy node (policy "" = leave
    the policy node alone, e.g. it is managed elsewhere). goal_topic: the policy's goal topic.
    success_topic: std_msgs/Bool; a ``true`` published after a goal was sent ends it as SUCCEEDED ("" = none:
    run_goal then ends by timeout or stop). servo_node / servo_api: MoveIt Servo's node name and ``jazzy`` or
    ``humble`` (see the module docstring; "" = the commander leaves Servo alone).
    """

    def __init__(self, node, *, executor: str = "/chunk_executor", policy: str = "/policy_node",
                 goal_topic: str = "/goal", success_topic: str = "", servo_node: str = "", servo_api: str = "jazzy",
                 spin: bool = True, service_timeout: float = 5.0) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        from dream_vla_ros.nodes import qos

        if servo_api not in ("jazzy", "humble"):
            raise ValueError(f"servo_api must be 'jazzy' or 'humble', got {servo_api!r}")
        self.node = node
        self.executor_name, self.policy_name = _absolute(executor), _absolute(policy) if policy else ""
        self.service_timeout = service_timeout
        self._lock = threading.Lock()
        self._status: dict[str, Any] | None = None
        self._success_at: float | None = None
        self._cancel = threading.Event()
        self._running = False
        self._goal_pub = node.create_publisher(String, goal_topic, qos.GOAL)
        node.create_subscription(String, protocol.resolve(self.executor_name, protocol.STATUS_TOPIC), self._on_status,
                                 qos.GOAL)
        if success_topic:
            node.create_subscription(Bool, success_topic, self._on_success,
                                     QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self._trigger = {name: node.create_client(Trigger, protocol.resolve(self.executor_name, name))
                         for name in (protocol.PAUSE, protocol.ACTIVATE)}
        self._lifecycle = {
            who: (node.create_client(GetState, f"{name}/get_state"),
                  node.create_client(ChangeState, f"{name}/change_state"))
            for who, name in (("executor", self.executor_name), ("policy", self.policy_name)) if name
        }
        self._policy_resume = (node.create_client(Trigger, protocol.resolve(self.policy_name, protocol.RESUME))
                               if policy else None)
        self._servo = self._servo_clients(_absolute(servo_node), servo_api) if servo_node else None
        self._executor = None
        if spin:
            from rclpy.executors import SingleThreadedExecutor

            self._executor = SingleThreadedExecutor(context=node.context)
            self._executor.add_node(node)

    # -- state ---------------------------------------------------------------------------------------------
    def _on_status(self, msg) -> None:
        try:
            status = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        with self._lock:
            self._status = status

    def _on_success(self, msg) -> None:
        if msg.data:
            with self._lock:
                self._success_at = time.monotonic()

    def status(self) -> dict[str, Any] | None:
        """The executor's latest ``~/status`` (None before the first)."""
        with self._lock:
            return None if self._status is None else dict(self._status)

    def is_active(self) -> bool:
        """Whether the VLA may be commanding the arm now (the executor is active or still braking to pause)."""
        status = self.status()
        return status is not None and status.get(protocol.STATE) in protocol.COMMANDING

    # -- waiting -------------------------------------------------------------------------------------------
    def _spin(self, seconds: float = 0.02) -> None:
        if self._executor is not None:
            self._executor.spin_once(timeout_sec=seconds)
        else:
            time.sleep(seconds)

    def _wait(self, condition, timeout: float, what: str):
        return wait_for(condition, timeout, what, pause=self._spin, error=CommanderError)

    def _call(self, client, request, timeout: float | None = None):
        timeout = self.service_timeout if timeout is None else timeout
        return call_service(client, request, timeout, pause=self._spin, error=CommanderError)

    def _state_is(self, *states: str) -> bool:
        status = self.status()
        return status is not None and status.get(protocol.STATE) in states

    # -- lifecycle and services ----------------------------------------------------------------------------
    def _bring_up(self, who: str, timeout: float) -> None:
        """Configure and activate a lifecycle node if it is not active yet."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        get_state, change_state = self._lifecycle[who]
        label = lifecycle_state(get_state, self.service_timeout, pause=self._spin, error=CommanderError)
        steps = {"unconfigured": ("configure", "activate"), "inactive": ("activate",)}.get(label, ())
        if label not in ("active", "unconfigured", "inactive"):
            raise CommanderError(f"{get_state.srv_name}: the {who} node is {label!r}")
        for step in steps:
            request = ChangeState.Request(transition=Transition(id=TRANSITIONS[step]))
            if not self._call(change_state, request, timeout).success:
                raise CommanderError(f"{change_state.srv_name}: {step} failed")

    def _trigger_call(self, name: str) -> str:
        from std_srvs.srv import Trigger

        answer = self._call(self._trigger[name], Trigger.Request())
        if not answer.success:
            raise CommanderError(f"{protocol.resolve(self.executor_name, name)}: {answer.message}")
        return answer.message

    def _servo_clients(self, name: str, api: str) -> dict[str, Any]:
        from std_srvs.srv import SetBool, Trigger

        if api == "humble":
            return {"api": api, "start": self.node.create_client(Trigger, f"{name}/start_servo"),
                    "stop": self.node.create_client(Trigger, f"{name}/stop_servo")}
        clients: dict[str, Any] = {"api": api, "pause": self.node.create_client(SetBool, f"{name}/pause_servo")}
        try:
            from moveit_msgs.srv import ServoCommandType
        except ImportError:
            self.node.get_logger().warning("moveit_msgs is not importable: set Servo's command type to JOINT_JOG "
                                           "yourself (~/switch_command_type)")
        else:
            clients["switch"] = (self.node.create_client(ServoCommandType, f"{name}/switch_command_type"),
                                 ServoCommandType)
        return clients

    def _servo_run(self, run: bool) -> None:
        from std_srvs.srv import SetBool, Trigger

        servo = self._servo
        if servo is None:
            return
        if servo["api"] == "humble":
            answer = self._call(servo["start" if run else "stop"], Trigger.Request())
        else:
            if run and "switch" in servo:
                client, kind = servo["switch"]
                self._call(client, kind.Request(command_type=kind.Request.JOINT_JOG))
            answer = self._call(servo["pause"], SetBool.Request(data=not run))
        if not answer.success:
            raise CommanderError(f"MoveIt Servo refused to {'start' if run else 'pause'}: {answer.message}")

    # -- taking and giving back the arm --------------------------------------------------------------------
    def activate(self, timeout: float = 60.0) -> None:
        """Take the arm: nodes lifecycle-active, Servo running, executor ``~/activate``d and ``active``."""
        from std_srvs.srv import Trigger

        if self.policy_name:
            self._bring_up("policy", timeout)
            self._call(self._policy_resume, Trigger.Request())
        self._bring_up("executor", timeout)
        self._servo_run(True)
        self._trigger_call(protocol.ACTIVATE)
        self._wait(lambda: self._state_is(protocol.ACTIVE, protocol.FAULT), self.service_timeout,
                   "the executor to become active")
        status = self.status() or {}
        if status.get(protocol.STOPPED):
            raise CommanderError(f"{self.executor_name} is stopped (~/stop): an operator must ~/resume it")

    def release(self, timeout: float = 5.0) -> None:
        """Give the arm back: empty goal, ``~/pause``, wait until the executor is silent, pause Servo."""
        from std_msgs.msg import String

        self._goal_pub.publish(String(data=""))
        self._trigger_call(protocol.PAUSE)
        self._wait(lambda: self._state_is(*protocol.SILENT), timeout, "the executor to pause")
        self._servo_run(False)

    def stop(self) -> None:
        """End a running :meth:`run_goal` (it returns CANCELED after giving the arm back); when none runs, give
        the arm back now. Thread-safe."""
        with self._lock:
            running = self._running
        self._cancel.set()
        if not running:
            self.release()

    def run_goal(self, instruction: str, timeout: float) -> Outcome:
        """Take the arm, run ``instruction`` until success, timeout, :meth:`stop` or failure, give it back."""
        if not instruction.strip():
            raise ValueError("run_goal: the instruction is empty")
        with self._lock:
            self._running = True
        self._cancel.clear()
        started = time.monotonic()
        release_error = None
        try:
            outcome = self._run(instruction, timeout, started)
        finally:
            try:
                self.release()
            except CommanderError as exc:
                release_error = exc
            with self._lock:
                self._running = False
        if release_error is not None:
            return Outcome(TaskResult.FAILED, f"{outcome.detail}; giving the arm back failed: {release_error}",
                           outcome.duration, outcome.controller_fault)
        return outcome

    def _run(self, instruction: str, timeout: float, started: float) -> Outcome:
        from std_msgs.msg import String

        try:
            self.activate()
        except CommanderError as exc:
            return Outcome(TaskResult.FAILED, f"could not take the arm: {exc}", time.monotonic() - started)
        with self._lock:
            self._success_at = None
        sent = time.monotonic()
        self._goal_pub.publish(String(data=instruction))
        while True:
            self._spin()
            now, status = time.monotonic(), self.status() or {}
            with self._lock:
                success = self._success_at is not None and self._success_at >= sent
            if success:
                return Outcome(TaskResult.SUCCEEDED, "success reported", now - started)
            state = status.get(protocol.STATE)
            if state == protocol.FAULT:
                fault = status.get(protocol.CONTROLLER_FAULT) or {}
                return Outcome(TaskResult.FAILED, f"controller fault: {fault}", now - started, fault)
            if state in (protocol.PAUSED, protocol.PAUSING, protocol.INACTIVE):
                return Outcome(TaskResult.CANCELED, f"the executor was {state} by another program",
                               now - started)
            if self._cancel.is_set():
                return Outcome(TaskResult.CANCELED, "stop() was called", now - started)
            if now - started > timeout:
                return Outcome(TaskResult.TIMED_OUT, f"no success within {timeout:g} s", now - started)

    def destroy(self) -> None:
        """Remove the commander's own executor (the node stays the caller's)."""
        if self._executor is not None:
            self._executor.remove_node(self.node)
            self._executor.shutdown()
            self._executor = None
