"""Parameters of the chunk executor node (ROS-free; one ROS parameter per leaf field, see ``params``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from dream_vla_ros.chunking import ExecutorConfig
from dream_vla_ros.configuration import require

CONTROLLER_INTERFACES = ("topic", "action", "servo")


@dataclass(frozen=True)
class ActionOutputConfig:
    """The FollowJointTrajectory output (``controller_interface: action``).

    goal_period: seconds between goals while the arm moves; a changed plan (new chunk, stop, pause,
        activation) sends one at once, and nothing is sent while holding still. Must be shorter than a
        window, so a goal always arrives before the previous one has run out.
    path_tolerance: position tolerance while moving per joint of chunking.joint_names (or one value for all),
        rad or m: the controller aborts the goal (PATH_TOLERANCE_VIOLATED) beyond it. 0 = the controller's
        default (``constraints.<joint>.trajectory``), -1 = none for this goal (e.g. a gripper that closes on
        an object never reaches its command).
    goal_tolerance: position tolerance at the end of a goal, per joint or one value (0 = the controller's
        ``constraints.<joint>.goal``, -1 = none).
    goal_time_tolerance: seconds after a goal's end by which the joints must be within goal_tolerance, else
        GOAL_TOLERANCE_VIOLATED (0 = the controller's ``constraints.goal_time``).
    """

    goal_period: float = 0.1
    path_tolerance: tuple[float, ...] = (0.0,)
    goal_tolerance: tuple[float, ...] = (0.0,)
    goal_time_tolerance: float = 0.0

    def __post_init__(self) -> None:
        require(math.isfinite(self.goal_period) and self.goal_period > 0.0, "action.goal_period",
                f"must be > 0 s, got {self.goal_period}")
        for name in ("path_tolerance", "goal_tolerance"):
            values = getattr(self, name)
            require(len(values) > 0, f"action.{name}", "needs one value per joint, or one value for all")
            require(all(math.isfinite(v) and (v >= 0.0 or v == -1.0) for v in values), f"action.{name}",
                    f"each value must be >= 0 (0 = controller default) or -1 (none), got {values}")
        require(math.isfinite(self.goal_time_tolerance) and self.goal_time_tolerance >= 0.0,
                "action.goal_time_tolerance", f"must be >= 0 s, got {self.goal_time_tolerance}")

    def per_joint(self, name: str, n_joints: int) -> tuple[float, ...]:
        values = getattr(self, name)
        return tuple(values) * n_joints if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class ServoOutputConfig:
    """The MoveIt Servo output (``controller_interface: servo``): control_msgs/JointJog velocities.

    command_topic: Servo's joint command topic (Humble and Jazzy: ``<servo node>/delta_joint_cmds``).
    position_gain: 1/s; each command adds gain * (planned - measured position) to the planned velocity, so the
        arm does not drift from the plan when Servo integrates at another rate or slows down (0 = feed-forward
        only). The sum is kept within the velocity and acceleration limits.
    """

    command_topic: str = "/servo_node/delta_joint_cmds"
    position_gain: float = 2.0

    def __post_init__(self) -> None:
        require(bool(self.command_topic), "servo.command_topic", "must be non-empty")
        require(math.isfinite(self.position_gain) and 0.0 <= self.position_gain <= 100.0, "servo.position_gain",
                f"must be in [0, 100] 1/s, got {self.position_gain}")


@dataclass(frozen=True)
class ExecutorNodeConfig:
    """Chunk executor node parameters (read at start).

    chunking: the executor core (chunking.joint_names, chunking.limits.*, chunking.control_period in s,
        chunking.merge.*, chunking.window.*; see dream_vla_ros/chunking/executor.py). The chunk's joints
        must be exactly chunking.joint_names; the gripper is one of them.
    controller: controller that receives every joint not listed in joint_controllers; windows go to
        <controller>/joint_trajectory (reliable QoS) or its follow_joint_trajectory action.
    joint_controllers: per joint of chunking.joint_names, the controller that drives it (e.g. the arm
        joints to arm_controller, the gripper to gripper_controller); empty = all joints to controller.
    controller_interface: how the windows reach the controllers: ``topic`` (JointTrajectory on
        <controller>/joint_trajectory, fire and forget), ``action`` (control_msgs FollowJointTrajectory goals
        on <controller>/follow_joint_trajectory with the tolerances of ``action``: the interface MoveIt's
        controller manager uses; an aborted or rejected goal makes the executor hold and report), or ``servo``
        (control_msgs/JointJog velocities to MoveIt Servo for the joints of ``controller``; joints of other
        controllers keep the topic). ``action`` and ``servo`` need the control_msgs package.
    action: the FollowJointTrajectory output (see ActionOutputConfig).
    servo: the MoveIt Servo output (see ServoOutputConfig).
    autostart: configure and activate the (lifecycle) node at start; false: wait for ~/change_state.
    start_paused: start paused (publishing nothing) until ~/activate: for programs that hand the arm over.
    chunk_topic: trajectory_msgs/JointTrajectory chunks from the policy node (an empty one means stop).
    joint_states_topic: sensor_msgs/JointState of the robot (sensor-data QoS).
    max_joint_state_age: seconds; older joint states make the executor brake to a hold.
    max_future: seconds a joint state stamp may lie ahead of this node's clock.
    joint_fault_margin: rad (gripper: its units); a joint state further than this outside
        chunking.limits.position_min/max is a sensor fault: the executor brakes to a hold and says so.
    input_recovery_time: seconds the joint states must stay fresh without a break after a staleness hold
        before the executor moves again (hysteresis: a stream that keeps crossing max_joint_state_age holds
        the arm instead of moving it in bursts).
    request_period: seconds between repeated chunk requests while the executor wants a chunk.
    topic_period: seconds between windows on the topic interface while the plan is unchanged; a changed plan
        (new chunk, stop, reset, activation, a mode change) goes at once; 0 = a window every control tick.
        Must be shorter than a window.
    hold_without_controller: brake to a hold while a controller has no subscriber (topic, servo) or its
        action server is not available (action).
    diagnostics_period: seconds between /diagnostics messages (also published at once on a new cause).
    executor_threads: threads of the process's ROS executor for chunks, services and lifecycle transitions: 1 =
        single-threaded (lowest latency in rclpy), 2 or more = multi-threaded. The control loop has its own
        thread either way.
    profile_path: file to append one JSON line of timings per chunk to (empty = off; for benchmarks).
    """

    chunking: ExecutorConfig
    controller: str = "arm_controller"
    joint_controllers: tuple[str, ...] = ()
    controller_interface: Literal["topic", "action", "servo"] = "topic"
    action: ActionOutputConfig = field(default_factory=ActionOutputConfig)
    servo: ServoOutputConfig = field(default_factory=ServoOutputConfig)
    autostart: bool = True
    start_paused: bool = False
    chunk_topic: str = "policy_node/action_chunk"
    joint_states_topic: str = "joint_states"
    max_joint_state_age: float = 0.1
    max_future: float = 0.05
    joint_fault_margin: float = 0.2
    input_recovery_time: float = 0.25
    request_period: float = 0.05
    topic_period: float = 0.05
    hold_without_controller: bool = True
    diagnostics_period: float = 1.0
    executor_threads: int = 1
    profile_path: str = ""

    def __post_init__(self) -> None:
        require(bool(self.controller), "controller", "must be non-empty")
        names = self.chunking.joint_names
        require(
            not self.joint_controllers or len(self.joint_controllers) == len(names),
            "joint_controllers",
            f"needs one controller per joint of chunking.joint_names ({len(names)}), got {len(self.joint_controllers)}",
        )
        require(all(self.joint_controllers), "joint_controllers", "controller names must be non-empty")
        for name in ("max_joint_state_age", "request_period", "diagnostics_period"):
            require(getattr(self, name) > 0.0, name, f"must be > 0 s, got {getattr(self, name)}")
        require(self.max_future >= 0.0, "max_future", f"must be >= 0 s, got {self.max_future}")
        require(math.isfinite(self.joint_fault_margin) and self.joint_fault_margin >= 0.0, "joint_fault_margin",
                f"must be >= 0, got {self.joint_fault_margin}")
        require(math.isfinite(self.input_recovery_time) and self.input_recovery_time >= 0.0, "input_recovery_time",
                f"must be >= 0 s, got {self.input_recovery_time}")
        require(1 <= self.executor_threads <= 16, "executor_threads",
                f"must be in [1, 16], got {self.executor_threads}")
        for name in ("path_tolerance", "goal_tolerance"):
            values = getattr(self.action, name)
            require(len(values) in (1, len(names)), f"action.{name}",
                    f"needs 1 value or one per joint of chunking.joint_names ({len(names)}), got {len(values)}")
        window = self.chunking.window
        span = window.points * window.spacing_ticks * self.chunking.control_period
        require(0.0 <= self.topic_period < span, "topic_period",
                f"must be in [0, {span:g}) s (shorter than a window), got {self.topic_period:g} s")
        require(self.action.goal_period < span, "action.goal_period",
                f"must be shorter than a window ({span:g} s = chunking.window.points * spacing_ticks * "
                f"control_period), got {self.action.goal_period:g} s")

    def controller_columns(self) -> dict[str, list[int]]:
        """Controller name -> indices of the joints (columns of chunking.joint_names) it drives, in order."""
        owners = self.joint_controllers or (self.controller,) * len(self.chunking.joint_names)
        out: dict[str, list[int]] = {}
        for index, owner in enumerate(owners):
            out.setdefault(owner, []).append(index)
        return out
