"""Parameters of the chunk executor node (ROS-free; one ROS parameter per leaf field, see ``params``)."""

from __future__ import annotations

from dataclasses import dataclass

from dream_vla_ros.chunking import ExecutorConfig
from dream_vla_ros.configuration import require


@dataclass(frozen=True)
class ExecutorNodeConfig:
    """Chunk executor node parameters (read at start).

    chunking: the executor core (chunking.joint_names, chunking.limits.*, chunking.control_period in s,
        chunking.merge.*, chunking.window.*; see dream_vla_ros/chunking/executor.py). The chunk's joints
        must be exactly chunking.joint_names; the gripper is one of them.
    controller: controller that receives every joint not listed in joint_controllers; windows go to
        <controller>/joint_trajectory (reliable QoS).
    joint_controllers: per joint of chunking.joint_names, the controller that drives it (e.g. the arm
        joints to arm_controller, the gripper to gripper_controller); empty = all joints to controller.
    chunk_topic: trajectory_msgs/JointTrajectory chunks from the policy node (an empty one means stop).
    joint_states_topic: sensor_msgs/JointState of the robot (sensor-data QoS).
    max_joint_state_age: seconds; older joint states make the executor brake to a hold.
    max_future: seconds a joint state stamp may lie ahead of this node's clock.
    request_period: seconds between repeated chunk requests while the executor wants a chunk.
    hold_without_controller: brake to a hold while a controller topic has no subscriber.
    diagnostics_period: seconds between /diagnostics messages (also published at once on a new cause).
    executor_threads: threads of the process's ROS executor: 1 = single-threaded (lowest latency in rclpy),
        2 or more = multi-threaded (the control timer's callback group runs beside the subscriptions).
    profile_path: file to append one JSON line of timings per chunk to (empty = off; for benchmarks).
    """

    chunking: ExecutorConfig
    controller: str = "arm_controller"
    joint_controllers: tuple[str, ...] = ()
    chunk_topic: str = "policy_node/action_chunk"
    joint_states_topic: str = "joint_states"
    max_joint_state_age: float = 0.1
    max_future: float = 0.05
    request_period: float = 0.05
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
        require(1 <= self.executor_threads <= 16, "executor_threads",
                f"must be in [1, 16], got {self.executor_threads}")

    def controller_columns(self) -> dict[str, list[int]]:
        """Controller name -> indices of the joints (columns of chunking.joint_names) it drives, in order."""
        owners = self.joint_controllers or (self.controller,) * len(self.chunking.joint_names)
        out: dict[str, list[int]] = {}
        for index, owner in enumerate(owners):
            out.setdefault(owner, []).append(index)
        return out
