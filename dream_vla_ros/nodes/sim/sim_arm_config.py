"""Parameters of the simulated arm node (ROS-free; the node declares one ROS parameter per field, see ``params``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dream_vla_ros.configuration import require

# Parameters that may change while the node runs: they choose the episode the next ``~/reset`` starts.
EPISODE_PARAMETERS = ("task", "seed", "phrasing_split", "phrasing_index")


@dataclass(frozen=True)
class SimArmNodeConfig:
    """Simulated arm node parameters (read at start, except the episode choice).

    task: MT10 task of the next episode (reach, push, pick-place, ...); may change at run time, takes effect
        at the next ~/reset.
    seed: seed of the next episode (object and goal placement); may change at run time.
    phrasing_split: instruction phrasings the ~/reset answer draws from: train or heldout; may change.
    phrasing_index: which phrasing of the split (modulo their number); may change at run time.
    cameras: Meta-World cameras rendered, each to its topic of camera_topics (corner, corner2, corner3, corner4,
        topview, behindGripper, gripperPOV); upright; an image's header.frame_id is its camera's name.
    camera_topics: sensor_msgs/Image rgb8 topic per camera, in the order of cameras (sensor-data QoS).
    width: image width in pixels.
    height: image height in pixels.
    camera_rate: frames per second published by every camera (at most the physics rate, 80 Hz; the
        frames of all cameras are rendered on the physics step at or after each frame time, with one stamp).
    joint_state_rate: joint states per second on joint_states_topic (at most the physics rate, 80 Hz).
    joint_states_topic: sensor_msgs/JointState with names, positions, velocities (sensor-data QoS).
    controller: name of the simulated JointTrajectoryController; it listens on <controller>/joint_trajectory.
    interpolate_from_desired_state: start each new trajectory from the last commanded state instead of the
        measured one (the JTC parameter of Jazzy; Humble's open_loop_control).
    stopped_velocity_tolerance: rad/s (units/s); a FollowJointTrajectory goal succeeds only once every joint is
        slower than this at the end, unless the goal sets or erases its own velocity goal tolerance (the JTC's
        constraints.stopped_velocity_tolerance).
    goal_time: seconds after a goal's end by which its goal tolerances must hold, unless the goal sets
        goal_time_tolerance (the JTC's constraints.goal_time; 0 = no deadline).
    max_steps: physics steps (12.5 ms) after the controller is activated at which the episode is truncated
        (Meta-World's 500); 0 = never.
    reset_pause: seconds the arm is offline at a reset (no joint states, no images, controller ignoring
        trajectories), and again seconds it then runs holding still before the controller accepts
        trajectories; longer than a client's joint-state timeout, so a client holding a commanded state (the
        chunk executor) sees the outage and restarts from the new measured state.
    real_time_factor: simulated seconds per wall-clock second; above 1 only with use_sim_time (the node then
        publishes /clock), never faster than the wall clock otherwise; may change at run time (the pace
        changes at the next physics step).
    max_lag: seconds the simulation may fall behind its schedule before it gives up catching up (counted as
        a lag event; with wall-clock stamps the missed time is skipped, like a controller missing updates).
    diagnostics_period: seconds between /diagnostics messages.
    """

    task: str = "reach"
    seed: int = 0
    phrasing_split: str = "train"
    phrasing_index: int = 0
    cameras: tuple[str, ...] = ("corner",)
    width: int = 128
    height: int = 128
    camera_rate: float = 30.0
    joint_state_rate: float = 80.0
    camera_topics: tuple[str, ...] = ("/camera/image_raw",)
    joint_states_topic: str = "/joint_states"
    controller: str = "arm_controller"
    interpolate_from_desired_state: bool = False
    stopped_velocity_tolerance: float = 0.01
    goal_time: float = 0.0
    max_steps: int = 500
    reset_pause: float = 0.25
    real_time_factor: float = 1.0
    max_lag: float = 0.1
    diagnostics_period: float = 1.0

    def __post_init__(self) -> None:
        from dream_vla_ros.sim.scene import CAMERAS
        from dream_vla_ros.sim.tasks import PHRASING_SPLITS, task_spec

        task_spec(self.task)
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(self.phrasing_split in PHRASING_SPLITS, "phrasing_split",
                f"must be one of {', '.join(PHRASING_SPLITS)}, got {self.phrasing_split!r}")
        require(self.phrasing_index >= 0, "phrasing_index", f"must be >= 0, got {self.phrasing_index}")
        require(len(self.cameras) >= 1, "cameras", "at least one camera is needed")
        for name in self.cameras:
            require(name in CAMERAS, "cameras", f"unknown camera {name!r}; known: {', '.join(CAMERAS)}")
        require(len(set(self.cameras)) == len(self.cameras), "cameras", f"names must not repeat, got {self.cameras}")
        require(len(self.camera_topics) == len(self.cameras), "camera_topics",
                f"one topic per camera: {len(self.camera_topics)} topic(s) for {len(self.cameras)} camera(s)")
        require(all(self.camera_topics), "camera_topics", "topics must be non-empty")
        require(len(set(self.camera_topics)) == len(self.camera_topics), "camera_topics", "topics must not repeat")
        require(16 <= self.width <= 2048, "width", f"must be in [16, 2048] pixels, got {self.width}")
        require(16 <= self.height <= 2048, "height", f"must be in [16, 2048] pixels, got {self.height}")
        for name in ("camera_rate", "joint_state_rate"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0.0, name, f"must be > 0 Hz, got {value}")
        for name in ("joint_states_topic", "controller"):
            require(bool(getattr(self, name)), name, "must be non-empty")
        require(self.max_steps >= 0, "max_steps", f"must be >= 0, got {self.max_steps}")
        require(0.0 <= self.reset_pause <= 10.0, "reset_pause", f"must be in [0, 10] s, got {self.reset_pause}")
        require(math.isfinite(self.real_time_factor) and 0.0 < self.real_time_factor <= 100.0, "real_time_factor",
                f"must be in (0, 100], got {self.real_time_factor}")
        require(self.max_lag > 0.0, "max_lag", f"must be > 0 s, got {self.max_lag}")
        require(self.diagnostics_period > 0.0, "diagnostics_period", "must be > 0 s")
        for name in ("stopped_velocity_tolerance", "goal_time"):
            value = getattr(self, name)
            require(math.isfinite(value) and value >= 0.0, name, f"must be >= 0, got {value}")

    @property
    def trajectory_topic(self) -> str:
        """``<controller>/joint_trajectory`` (relative: it follows the node's namespace, as the JTC's does)."""
        return f"{self.controller}/joint_trajectory"

    @property
    def action_name(self) -> str:
        """``<controller>/follow_joint_trajectory`` (the JTC's action, when control_msgs is available)."""
        return f"{self.controller}/follow_joint_trajectory"
