"""How the chunk executor's windows reach the controllers: one small interface, three strategies.

- :class:`TopicOutput` (``controller_interface: topic``): a ``trajectory_msgs/JointTrajectory`` per controller
  on ``<controller>/joint_trajectory`` (RELIABLE, as the JointTrajectoryController subscribes): at once when
  the plan changes and otherwise every ``topic_period`` (0: every tick); each window reaches far beyond that
  period and ends at rest, so the controller always has the plan ahead. Fire and
  forget: the controller reports nothing back.
- :class:`ActionOutput` (``action``): ``control_msgs/action/FollowJointTrajectory`` goals on
  ``<controller>/follow_joint_trajectory``, the interface MoveIt's controller manager uses. A goal carries the
  window plus the configured path/goal tolerances; one is sent at once when the plan changes (a chunk merged,
  stop, pause, activation, a mode change) and otherwise every ``action.goal_period`` while the arm moves;
  nothing is sent while it holds still (the last goal ended at rest and the controller holds it). Each goal
  replaces the previous one in the controller (which ends that one as preempted: ``INVALID_GOAL``, "Current
  goal cancelled due to new incoming action."). Feedback (``error``) is recorded. A fault is reported when
  the newest goal is rejected, aborted, or ends without success for any reason other than our own next goal
  (another client's goal, a controller switch), or when any goal was aborted for a tolerance violation.
- :class:`ServoOutput` (``servo``): ``control_msgs/msg/JointJog`` velocities on MoveIt Servo's joint command
  topic every tick for the joints of the main ``controller`` (see :mod:`dream_vla_ros.chunking.jog`), so
  Servo's collision checking and singularity handling stay in the loop; joints of other controllers (e.g. a
  gripper) keep the topic interface.

``control_msgs`` is imported only by the action and servo outputs; without it they raise ConfigError saying
what to install.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from dream_vla_ros.chunking import CommandedState, Window
from dream_vla_ros.chunking.jog import jog_velocities
from dream_vla_ros.errors import ConfigError
from dream_vla_ros.nodes import qos
from dream_vla_ros.nodes.conversions import seconds_to_duration, seconds_to_stamp, window_to_trajectory
from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig
from dream_vla_ros.protocol import GOAL_TOLERANCE_VIOLATED, INVALID_GOAL, PATH_TOLERANCE_VIOLATED, RESULT_CODES

# control_msgs/action/FollowJointTrajectory result codes (names for messages).
TOLERANCE_VIOLATIONS = (PATH_TOLERANCE_VIOLATED, GOAL_TOLERANCE_VIOLATED)


def import_control_msgs(interface: str):
    """The control_msgs module, or ConfigError naming what to install."""
    try:
        import control_msgs.action
        import control_msgs.msg
    except ImportError as exc:
        raise ConfigError(
            f"controller_interface: {interface!r} needs the control_msgs package ({exc}); on a robot install "
            "ros-<distro>-control-msgs (rosdep installs it from package.xml); in a venv without ROS build the "
            "test copy: python test/control_msgs_build.py (see its docstring)"
        ) from None
    return control_msgs


@dataclass(frozen=True)
class ControllerFault:
    """Why a controller stopped following the executor (latched by the node until ~/activate or ~/resume).

    kind: ``rejected``, ``aborted``, ``canceled`` or ``preempted``; error_code: the action result's code (None
    for a rejection, which has no result); error_string: the controller's text.
    """

    controller: str
    kind: str
    error_code: int | None
    error_string: str

    def message(self) -> str:
        if self.error_code is None:
            code = "no result"
        else:
            code = f"error_code {self.error_code} {RESULT_CODES.get(self.error_code, '')}".rstrip()
        text = f": {self.error_string}" if self.error_string else ""
        return f"{self.controller}: goal {self.kind} ({code}){text}"

    def as_dict(self) -> dict[str, Any]:
        return {"controller": self.controller, "kind": self.kind, "error_code": self.error_code,
                "error_string": self.error_string}


@dataclass(frozen=True)
class Command:
    """What an output needs per tick: the window, the commanded state it continues, the measured joints."""

    now: float
    window: Window
    state: CommandedState
    plan_version: int  # changes whenever the plan was re-made (chunk merged, stop, resume, pause, reset)
    measured: tuple[np.ndarray, float] | None  # positions in chunking.joint_names order, stamp


class ControllerOutput:
    """Base of the three outputs; the node calls these under its control timer (or its service callbacks)."""

    interface = ""
    _schedule: SendSchedule | None = None  # when windows go out (None: every tick)

    def endpoints(self) -> list[tuple[str, str, bool]]:
        """(controller, endpoint name, connected) per controller endpoint."""
        raise NotImplementedError

    def wants_window(self, now: float, plan_version: int, mode: str) -> bool:
        """Would :meth:`send` send a window at ``now`` (the executor builds windows only for those ticks)?"""
        schedule = self._schedule
        return schedule is None or schedule.due_at(now, plan_version, mode)

    def send(self, command: Command) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Activation: forget what was sent before (the next send starts afresh from the new plan)."""

    def stop(self) -> None:
        """Going silent: whatever happens to goals sent before no longer concerns the executor."""

    def take_faults(self) -> list[ControllerFault]:
        return []

    def settled(self) -> bool:
        """Has the controller answered everything sent (so another program's next command comes after it)?"""
        return True

    def values(self) -> dict[str, object]:
        return {}


class SendSchedule:
    """When a window goes out: at once when the plan (or its mode) changed since the last one sent, else every
    ``period`` seconds; while the arm holds still only if ``while_holding`` (the last window ended at rest and
    the controller holds it; a topic keeps streaming it so that its listeners see the executor alive, a goal
    would only be preempted). ``period`` 0: every tick."""

    def __init__(self, period: float, while_holding: bool) -> None:
        self.period = period
        self.while_holding = while_holding
        self._last: tuple[int, str, float] | None = None  # plan version, mode, time of the last send

    def due(self, command: Command) -> bool:
        return self.due_at(command.now, command.plan_version, command.window.mode)

    def due_at(self, now: float, plan_version: int, mode: str) -> bool:
        """:meth:`due` before the window is built (from the plan version and mode it will have)."""
        last = self._last
        if self.period <= 0.0 or last is None or last[0] != plan_version or last[1] != mode:
            return True
        if mode == "holding" and not self.while_holding:
            return False
        return now - last[2] >= self.period - 1e-9

    def sent(self, command: Command) -> None:
        self._last = (command.plan_version, command.window.mode, command.now)

    def forget(self) -> None:
        """The next command is due whatever was sent before."""
        self._last = None


class TopicOutput(ControllerOutput):
    """JointTrajectory windows on ``<controller>/joint_trajectory`` (see the module docstring for when)."""

    interface = "topic"

    def __init__(self, node, controllers: dict[str, list[int]], period: float = 0.0) -> None:
        from trajectory_msgs.msg import JointTrajectory

        self._controllers = [
            (controller, columns, node.create_publisher(JointTrajectory, f"{controller}/joint_trajectory",
                                                        qos.CONTROLLER))
            for controller, columns in controllers.items()
        ]
        self.windows_published = 0
        self._schedule = SendSchedule(period, while_holding=True)

    def endpoints(self) -> list[tuple[str, str, bool]]:
        return [(c, p.topic_name, p.get_subscription_count() > 0) for c, _, p in self._controllers]

    def start(self) -> None:
        self._schedule.forget()

    def send(self, command: Command) -> None:
        if not self._schedule.due(command):
            return
        self._schedule.sent(command)
        window = command.window
        stamp = seconds_to_stamp(window.stamp) if window.stamp > 0.0 else None
        for _, columns, publisher in self._controllers:
            publisher.publish(window_to_trajectory(window.joint_names, window.positions, window.velocities,
                                                   window.time_from_start, stamp, columns))
        self.windows_published += 1


@dataclass
class _GoalTrack:
    """Goals of one controller: the newest sent, and what became of them."""

    newest: int = 0
    feedback_error: float = float("nan")  # max |position error| of the latest feedback


class ActionOutput(ControllerOutput):
    """FollowJointTrajectory goals per controller (see the module docstring for when goals are sent)."""

    interface = "action"

    def __init__(self, node, controllers: dict[str, list[int]], config: ExecutorNodeConfig, callback_group=None):
        from rclpy.action import ActionClient

        control_msgs = import_control_msgs("action")
        self._action = control_msgs.action.FollowJointTrajectory
        self._tolerance = control_msgs.msg.JointTolerance
        self._config = config.action
        names = config.chunking.joint_names
        self._names = names
        self._path = config.action.per_joint("path_tolerance", len(names))
        self._goal = config.action.per_joint("goal_tolerance", len(names))
        self._lock = threading.Lock()
        self._clients = [
            (controller, columns,
             ActionClient(node, self._action, f"{controller}/follow_joint_trajectory", callback_group=callback_group))
            for controller, columns in controllers.items()
        ]
        self._endpoint_names = {
            controller: node.resolve_topic_name(f"{controller}/follow_joint_trajectory") for controller in controllers
        }
        self._tracks = {controller: _GoalTrack() for controller in controllers}
        self._epoch = 0
        self._faults: list[ControllerFault] = []
        self._schedule = SendSchedule(config.action.goal_period, while_holding=False)
        self._in_flight = 0  # goals sent without an acceptance or rejection yet
        self._counts = {"goals_sent": 0, "goals_accepted": 0, "goals_rejected": 0, "goals_succeeded": 0,
                        "goals_superseded": 0, "goals_failed": 0, "feedback": 0}

    def _tolerances(self, columns: list[int], values: tuple[float, ...]) -> list[Any]:
        out = []
        for c in columns:
            value = values[c]
            if value == 0.0:
                continue  # the controller's default
            erase = value < 0.0
            out.append(self._tolerance(name=self._names[c], position=-1.0 if erase else value,
                                       velocity=-1.0 if erase else 0.0, acceleration=-1.0 if erase else 0.0))
        return out

    def endpoints(self) -> list[tuple[str, str, bool]]:
        return [(c, self._endpoint_names[c], client.server_is_ready()) for c, _, client in self._clients]

    def send(self, command: Command) -> None:
        if not self._schedule.due(command):
            return
        window = command.window
        stamp = seconds_to_stamp(window.stamp) if window.stamp > 0.0 else None
        sent = False
        for controller, columns, client in self._clients:
            if not client.server_is_ready():
                continue
            goal = self._action.Goal()
            goal.trajectory = window_to_trajectory(window.joint_names, window.positions, window.velocities,
                                                   window.time_from_start, stamp, columns)
            goal.path_tolerance = self._tolerances(columns, self._path)
            goal.goal_tolerance = self._tolerances(columns, self._goal)
            goal.goal_time_tolerance = seconds_to_duration(self._config.goal_time_tolerance)
            with self._lock:
                track = self._tracks[controller]
                track.newest += 1
                seq, epoch = track.newest, self._epoch
                self._counts["goals_sent"] += 1
                self._in_flight += 1
            future = client.send_goal_async(goal, feedback_callback=lambda fb, c=controller: self._on_feedback(c, fb))
            future.add_done_callback(lambda f, c=controller, s=seq, e=epoch: self._on_response(c, s, e, f))
            sent = True
        if sent:
            self._schedule.sent(command)

    def _fault(self, epoch: int, fault: ControllerFault) -> None:
        with self._lock:
            if epoch == self._epoch:
                self._faults.append(fault)

    def _on_response(self, controller: str, seq: int, epoch: int, future) -> None:
        with self._lock:
            self._in_flight -= 1
        try:
            handle = future.result()
        except Exception as exc:  # noqa: BLE001 - a failed request is a fault like a rejection
            self._fault(epoch, ControllerFault(controller, "rejected", None, f"send_goal failed: {exc}"))
            return
        if not handle.accepted:
            with self._lock:
                self._counts["goals_rejected"] += 1
                newest = seq == self._tracks[controller].newest
            self._fault(epoch, ControllerFault(controller, "rejected", None,
                                               "the controller rejected the goal" + ("" if newest else
                                                                                     " (an older goal)")))
            return
        with self._lock:
            self._counts["goals_accepted"] += 1
        handle.get_result_async().add_done_callback(lambda f: self._on_result(controller, seq, epoch, f))

    def _on_result(self, controller: str, seq: int, epoch: int, future) -> None:
        from action_msgs.msg import GoalStatus

        try:
            response = future.result()
        except Exception as exc:  # noqa: BLE001
            self._fault(epoch, ControllerFault(controller, "aborted", None, f"get_result failed: {exc}"))
            return
        status, result = response.status, response.result
        code, text = int(result.error_code), str(result.error_string)
        with self._lock:
            newest = seq == self._tracks[controller].newest
            if status == GoalStatus.STATUS_SUCCEEDED:
                self._counts["goals_succeeded"] += 1
                return
            superseded = not newest and code not in TOLERANCE_VIOLATIONS
            self._counts["goals_superseded" if superseded else "goals_failed"] += 1
        if superseded:
            return  # replaced by our own next goal (the controller ends it as preempted)
        if status == GoalStatus.STATUS_ABORTED:
            kind = "preempted" if newest and code == INVALID_GOAL else "aborted"
        else:
            kind = "preempted" if status == GoalStatus.STATUS_CANCELED and code == INVALID_GOAL else "canceled"
        self._fault(epoch, ControllerFault(controller, kind, code, text))

    def _on_feedback(self, controller: str, message) -> None:
        error = message.feedback.error.positions
        value = float(np.max(np.abs(error))) if len(error) else float("nan")
        with self._lock:
            self._tracks[controller].feedback_error = value
            self._counts["feedback"] += 1

    def start(self) -> None:
        with self._lock:
            self._epoch += 1
            self._faults.clear()
        self._schedule.forget()

    def stop(self) -> None:
        self.start()

    def take_faults(self) -> list[ControllerFault]:
        with self._lock:
            faults, self._faults = self._faults, []
        return faults

    def settled(self) -> bool:
        with self._lock:
            return self._in_flight <= 0

    def values(self) -> dict[str, object]:
        with self._lock:
            values: dict[str, object] = dict(self._counts)
            for controller, track in self._tracks.items():
                values[f"{controller} feedback max error"] = track.feedback_error
        return values


class ServoOutput(ControllerOutput):
    """JointJog velocities to MoveIt Servo for the main controller's joints; other controllers by topic."""

    interface = "servo"

    def __init__(self, node, controllers: dict[str, list[int]], config: ExecutorNodeConfig) -> None:
        control_msgs = import_control_msgs("servo")
        self._jog_type = control_msgs.msg.JointJog
        self._columns = controllers.get(config.controller, [])
        if not self._columns:
            raise ConfigError(f"controller_interface: servo drives the joints of controller {config.controller!r}, "
                              "but joint_controllers gives it none")
        self._names = [config.chunking.joint_names[c] for c in self._columns]
        limits = config.chunking.limits.resolve(len(config.chunking.joint_names))
        self._vmax = limits.max_velocity[self._columns]
        self._amax = limits.max_acceleration[self._columns]
        self._period = config.chunking.control_period
        self._gain = config.servo.position_gain
        self._publisher = node.create_publisher(self._jog_type, config.servo.command_topic, qos.CONTROLLER)
        others = {c: cols for c, cols in controllers.items() if c != config.controller}
        self._topic = TopicOutput(node, others, config.topic_period) if others else None
        self._previous: np.ndarray | None = None
        self._clock = lambda: node.get_clock().now().nanoseconds * 1e-9
        self.commands_published = 0
        self._speed = float("nan")

    def endpoints(self) -> list[tuple[str, str, bool]]:
        jog = [("servo", self._publisher.topic_name, self._publisher.get_subscription_count() > 0)]
        return jog + (self._topic.endpoints() if self._topic is not None else [])

    def send(self, command: Command) -> None:
        window, state, cols = command.window, command.state, self._columns
        measured, measured_time = (None, None) if command.measured is None else command.measured
        velocity = jog_velocities(
            state.positions[cols], state.velocities[cols], state.time, window.positions[0, cols],
            window.start_time + float(window.time_from_start[0]), self._vmax, self._amax, self._period,
            measured=None if measured is None else measured[cols], measured_time=measured_time, gain=self._gain,
            previous=self._previous,
        )
        self._previous = velocity
        msg = self._jog_type(joint_names=self._names, velocities=velocity.tolist(), duration=self._period)
        msg.header.stamp = seconds_to_stamp(command.now)
        self._publisher.publish(msg)
        self.commands_published += 1
        self._speed = float(np.max(np.abs(velocity)))
        if self._topic is not None:
            self._topic.send(command)

    def start(self) -> None:
        self._previous = None
        if self._topic is not None:
            self._topic.start()

    def stop(self) -> None:
        """One zero-velocity command if anything was sent (Servo would repeat the last velocity until its
        incoming_command_timeout); after a pause the last command is already within a * period of zero."""
        if self._previous is not None:
            msg = self._jog_type(joint_names=self._names, velocities=[0.0] * len(self._names), duration=self._period)
            msg.header.stamp = seconds_to_stamp(self._clock())
            self._publisher.publish(msg)
        self._previous = None

    def values(self) -> dict[str, object]:
        values: dict[str, object] = {"jog_commands": self.commands_published, "jog max speed": self._speed}
        if self._topic is not None:
            values["windows_published"] = self._topic.windows_published
        return values


def make_output(node, config: ExecutorNodeConfig, callback_group=None) -> ControllerOutput:
    """The output of ``config.controller_interface`` (ConfigError when control_msgs is needed and missing)."""
    controllers = config.controller_columns()
    if config.controller_interface == "action":
        return ActionOutput(node, controllers, config, callback_group)
    if config.controller_interface == "servo":
        return ServoOutput(node, controllers, config)
    return TopicOutput(node, controllers, config.topic_period)


__all__ = ["ActionOutput", "Command", "ControllerFault", "ControllerOutput", "SendSchedule",
           "ServoOutput", "TopicOutput", "import_control_msgs", "make_output"]
