"""The simulated arm node: a Meta-World Sawyer that behaves like a robot arm under ros2_control.

Interfaces (names relative to the node's namespace; ``~`` = the node's name, ``sim_arm`` by default):

- publishes one topic per camera of ``cameras`` (``camera_topics``, default ``/camera/image_raw`` for
  ``corner``; sensor_msgs/Image rgb8, frame_id = the camera's name, sensor-data QoS: best effort, keep last 1)
  at ``camera_rate`` (30 Hz), every camera rendered from the physics state at the same stamp;
- publishes ``joint_states_topic`` (``/joint_states``, sensor_msgs/JointState: ``right_j0`` .. ``right_j6``
  in rad and ``gripper`` in -1 open .. +1 closed, positions and velocities; reliable keep last 1, which
  matches best-effort and reliable subscribers alike) at ``joint_state_rate`` (80 Hz, the physics rate);
- subscribes ``<controller>/joint_trajectory`` (``/arm_controller/joint_trajectory``,
  trajectory_msgs/JointTrajectory, RELIABLE like the JointTrajectoryController): every message goes through
  :class:`~dream_vla_ros.sim.trajectory_follower.TrajectoryFollower`, i.e. the JTC semantics of
  Humble/Jazzy/Kilted: hard replacement, ``header.stamp`` 0 = start at the update that receives it,
  ``time_from_start`` relative to the start, rejection (logged once per reason, the previous trajectory
  keeps running) of empty / partial / unknown-joint / non-increasing / non-finite / already-ended
  trajectories, start from the measured state (or the commanded one with
  ``interpolate_from_desired_state``), linear interpolation for positions only, cubic with velocities,
  hold after the last point. The controller is sampled every physics step (80 Hz) at the end time of the
  step, so a trajectory whose points lie on the 12.5 ms grid is reproduced exactly;
- when ``control_msgs`` is importable: the action server ``<controller>/follow_joint_trajectory``
  (control_msgs/action/FollowJointTrajectory, hosted by the helper node ``<name>_action_server``) with the
  JTC's semantics. A goal is validated like a topic
  message (an invalid one, or any goal while the controller is inactive during a reset, is **rejected**); an
  accepted goal preempts the active one (which ends ABORTED with ``INVALID_GOAL``, "Current goal cancelled due
  to new incoming action.") and its trajectory goes through the same follower as the topic's messages. While it
  runs, feedback (``desired``, ``actual``, ``error``) is published every physics step and the tolerances of
  :mod:`dream_vla_ros.sim.goal_tolerances` are checked against whatever trajectory runs: path tolerance before
  the last point (``PATH_TOLERANCE_VIOLATED``: abort, the arm holds where it is), goal tolerance after it
  (success, or ``GOAL_TOLERANCE_VIOLATED`` once ``goal_time_tolerance`` has passed). A cancel request holds the
  commanded position and ends the goal CANCELED; a reset ends the active goal ABORTED (``INVALID_GOAL``,
  "Current goal cancelled during deactivate transition."), like a controller switch. (The JTC ends a
  preempted goal *canceled*; rclpy cannot cancel a goal nobody asked to cancel, so here it is *aborted* with
  the JTC's error code and text.);
- publishes ``~/success`` (std_msgs/Bool, reliable, transient local): false at each reset, true once the
  task is solved (Meta-World's success, latched for the episode);
- publishes ``~/episode`` (std_msgs/String, one JSON object per event, reliable, transient local, keep last
  10): ``{"event": "reset", "episode", "task", "seed", "instruction", "phrasing_split",
  "phrasing_index", "stamp", "max_steps"}`` when a new episode starts (the controller is active from then
  on), ``{"event": "success", "episode", "task", "seed", "steps", "stamp", "lag_events", "goal_distance",
  "closest_goal_distance"}`` at the first successful step and ``{"event": "truncated", ...}`` when
  ``max_steps`` steps passed without success; ``steps`` count physics steps since the controller became
  active, ``lag_events`` the times the simulation fell behind the wall clock during the episode (see Time
  below), ``goal_distance`` / ``closest_goal_distance`` the task's distance to its goal at the end / at its
  closest (m; what Meta-World's success compares, see ``ArmState.goal_distance``);
- service ``~/reset`` (std_srvs/Trigger): starts an episode of the task, seed and phrasing given by the
  parameters ``task``, ``seed``, ``phrasing_split`` and ``phrasing_index`` (set them first, e.g. with
  ``ros2 param set``; they are validated when set). It answers once the new episode runs and the controller
  accepts trajectories; ``message`` is the reset event's JSON object, with the task's language
  ``instruction``. (Trigger + parameters keeps to standard interfaces, so nothing needs building: an
  ament_python package cannot generate a custom service type.)
- publishes ``/diagnostics`` (physics and camera rates, lag events, accepted / rejected trajectories,
  render and step cost) and, with ``use_sim_time``, ``/clock``.

Reset sequence: the arm goes offline for ``reset_pause`` s (no joint states, no images, trajectories
ignored), the scene is reset, then the arm runs holding still for ``reset_pause`` s with the controller still
ignoring trajectories, then the controller becomes active holding the reset pose. A client that holds a
commanded state (the chunk executor) sees the joint states go stale, holds, and restarts from the new
measured state before the controller listens again, as after a real controller switch.

Time: one simulation thread steps the physics at 80 Hz. With wall-clock time (default) it is paced to the
wall clock and every stamp is the wall time of the physics state it describes (never ahead of the wall
clock); if it falls more than ``max_lag`` behind (overloaded machine), it skips the missed time and counts a
lag event, like a controller missing updates. With ``use_sim_time: true`` the node publishes ``/clock`` from
the simulation (starting at one physics step) and stamps with it; ``real_time_factor`` then sets the pace
(above 1 runs faster than the wall clock, only when asked). ``real_time_factor`` may change while the node
runs (``ros2 param set``; the pace changes at the next physics step): a client that measures the host's
headroom slows the simulation down instead of letting it lag. Every end event carries the factor in force.
Rendering happens only for camera frames, and
only for cameras whose topic has a subscriber (about 18 ms per 128 px frame on llvmpipe, against ~0.8 ms per
physics step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from dream_vla_ros import protocol
from dream_vla_ros.errors import ConfigError, DreamVlaError
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.conversions import duration_to_seconds, rgb_to_image, seconds_to_stamp, stamp_to_seconds
from dream_vla_ros.nodes.diagnostics import Diagnostics
from dream_vla_ros.nodes.health import RateMeter, cause_key
from dream_vla_ros.nodes.polling import PolledInputs
from dream_vla_ros.nodes.sim_arm_config import EPISODE_PARAMETERS, SimArmNodeConfig
from dream_vla_ros.sim.goal_tolerances import INVALID_GOAL, ControllerConstraints, GoalMonitor

NODE_NAME = "sim_arm"

EPISODE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
JOINT_STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# The JTC subscribes with the system default QoS: reliable, keep last 10.
TRAJECTORY_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

OFFLINE, SETTLING, ACTIVE = "offline", "settling", "active"


@dataclass
class _ResetRequest:
    """An episode to start, handed from the service callback to the simulation thread."""

    task: str
    seed: int
    phrasing_split: str
    phrasing_index: int
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str = ""


@dataclass
class _Episode:
    number: int
    task: str
    seed: int
    instruction: str
    phrasing_split: str
    phrasing_index: int
    steps: int = 0
    finished: bool = False
    closest: float = math.inf  # the smallest goal distance so far (m)


class _ServerGoal:
    """An accepted FollowJointTrajectory goal: resolved once (by the simulation thread, or by preemption)."""

    def __init__(self, handle: Any, names: list[str], stamp: float, points: list[Any], monitor: GoalMonitor) -> None:
        self.handle, self.names, self.stamp, self.points, self.monitor = handle, names, stamp, points, monitor
        self.done = threading.Event()
        self.outcome: tuple[str, int, str] | None = None
        self._lock = threading.Lock()

    def resolve(self, status: str, code: int, text: str) -> bool:
        with self._lock:
            if self.outcome is not None:
                return False
            self.outcome = (status, code, text)
        self.done.set()
        return True

    @property
    def resolved(self) -> bool:
        return self.outcome is not None


PREEMPTED = "Current goal cancelled due to new incoming action."
DEACTIVATED = "Current goal cancelled during deactivate transition."
NOT_RUNNING = "Can't accept new action goals. Controller is not running."


class SimArmNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self, SimArmNodeConfig)
        self.config = params.read(self, SimArmNodeConfig)
        config = self.config
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)
        if config.real_time_factor > 1.0 and not self.use_sim_time:
            raise ConfigError(
                "real_time_factor: above 1 the simulation runs faster than the wall clock, which needs "
                "use_sim_time: true (the node then publishes /clock)"
            )
        self._lock = threading.Lock()
        self._choice = {name: getattr(config, name) for name in EPISODE_PARAMETERS}
        self.real_time_factor = config.real_time_factor  # live: read by the simulation thread every step
        self._pending: list[tuple[list[str], float, list[Any], _ServerGoal | None]] = []
        self._reset_request: _ResetRequest | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = ""
        self._counts = {"steps": 0, "frames": 0, "joint_states": 0, "lag_events": 0, "trajectories_received": 0,
                        "trajectories_ignored_inactive": 0, "episodes": 0}
        self._status: dict[str, Any] = {"state": OFFLINE}
        self._step_ms: deque[float] = deque(maxlen=200)
        self._render_ms: deque[float] = deque(maxlen=100)
        self._physics_rate = RateMeter()
        self._camera_rate = RateMeter()
        self._follower_counts: dict[str, Any] = {"accepted": 0, "rejected": {}}
        self._sim_time = 0.0
        self._active_goal: _ServerGoal | None = None
        self._goals: dict[bytes, _ServerGoal] = {}
        self._action_counts = {"goals_accepted": 0, "goals_rejected": 0, "goals_succeeded": 0, "goals_aborted": 0,
                               "goals_preempted": 0, "goals_canceled": 0}

        io_group = MutuallyExclusiveCallbackGroup()
        reset_group = MutuallyExclusiveCallbackGroup()
        self._image_pubs = {camera: self.create_publisher(Image, topic, qos.SENSOR)
                            for camera, topic in zip(config.cameras, config.camera_topics, strict=True)}
        self._joint_pub = self.create_publisher(JointState, config.joint_states_topic, JOINT_STATE_QOS)
        self._success_pub = self.create_publisher(Bool, "~/success", LATCHED_QOS)
        self._episode_pub = self.create_publisher(String, "~/episode", EPISODE_QOS)
        self._clock_pub = None
        if self.use_sim_time:
            from rosgraph_msgs.msg import Clock

            self._clock_type = Clock
            self._clock_pub = self.create_publisher(Clock, "/clock", LATCHED_QOS)
        # The controller topic is read by the simulation thread at every physics step, as a controller's update
        # loop reads its command buffer (polling.py: no executor wake-up per message).
        self._polled = PolledInputs(self)
        self._trajectory_input = self._polled.subscribe(JointTrajectory, config.trajectory_topic, TRAJECTORY_QOS)
        self.create_service(Trigger, protocol.RESET, self._on_reset, callback_group=reset_group)
        self.blocking_nodes: list[Node] = []
        self._action_server = self._create_action_server()
        self.diagnostics = Diagnostics(self, self._diagnostic_values, config.diagnostics_period,
                                       callback_group=io_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        clock = "/clock (sim time)" if self.use_sim_time else "the wall clock"
        action = (f" and {self.resolve_topic_name(config.action_name)}" if self._action_server is not None
                  else " (no control_msgs: no follow_joint_trajectory action)")
        cameras = ", ".join(f"{camera} on {self.resolve_topic_name(pub.topic_name)}"
                            for camera, pub in self._image_pubs.items())
        self.get_logger().info(
            f"simulated arm: cameras {cameras} {config.width}x{config.height} at {config.camera_rate:g} Hz, "
            f"joint states at {config.joint_state_rate:g} Hz, "
            f"controller on {self.resolve_topic_name(config.trajectory_topic)}{action}, paced to {clock}"
        )

    # -- lifetime --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the simulation thread (it builds the scene and runs the first episode)."""
        first = _ResetRequest(**self._choice)
        with self._lock:
            self._reset_request = first
        self._thread = threading.Thread(target=self._run, name="simulation", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._polled.close()

    # -- parameters ------------------------------------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        fields = {f.name for f in dataclasses.fields(SimArmNodeConfig)}
        changes = {}
        pace = None
        for parameter in parameters:
            if parameter.name in EPISODE_PARAMETERS:
                changes[parameter.name] = parameter.value
            elif parameter.name == "real_time_factor":
                pace = parameter.value
            elif parameter.name in fields:
                return SetParametersResult(
                    successful=False, reason=f"{parameter.name} is read at start; restart the node to change it"
                )
        if pace is not None:
            reason = self._pace_problem(pace)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if changes:
            with self._lock:
                choice = {**self._choice, **changes}
            try:
                dataclasses.replace(self.config, **choice)
            except (DreamVlaError, TypeError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            with self._lock:
                self._choice = choice
        if pace is not None:
            self.real_time_factor = float(pace)
        return SetParametersResult(successful=True)

    def _pace_problem(self, value: Any) -> str:
        """Why ``value`` cannot be the real-time factor now ('' if it can)."""
        if not isinstance(value, float) or not math.isfinite(value) or not 0.0 < value <= 100.0:
            return f"real_time_factor must be a float in (0, 100], got {value!r}"
        if value > 1.0 and not self.use_sim_time:
            return "real_time_factor above 1 needs use_sim_time: true"
        return ""

    # -- interfaces ------------------------------------------------------------------------------------------
    @staticmethod
    def _points(msg: JointTrajectory) -> list[Any]:
        from dream_vla_ros.sim.trajectory_follower import TrajectoryPoint

        return [
            TrajectoryPoint(
                duration_to_seconds(p.time_from_start),
                np.asarray(p.positions, dtype=np.float64),
                np.asarray(p.velocities, dtype=np.float64) if len(p.velocities) else None,
            )
            for p in msg.points
        ]

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        points = self._points(msg)
        with self._lock:
            self._pending.append((list(msg.joint_names), stamp_to_seconds(msg.header.stamp), points, None))
            self._counts["trajectories_received"] += 1

    # -- FollowJointTrajectory -------------------------------------------------------------------------------
    def _create_action_server(self):
        """The action server, or None when control_msgs is not importable (the topic interface remains)."""
        try:
            from control_msgs.action import FollowJointTrajectory
        except ImportError:
            return None
        from rclpy.action import ActionServer, CancelResponse

        from dream_vla_ros.sim.joint_arm import JOINT_NAMES
        from dream_vla_ros.sim.trajectory_follower import TrajectoryFollower

        self._action_type = FollowJointTrajectory
        self._validator = TrajectoryFollower(JOINT_NAMES)
        self._constraints = ControllerConstraints(self.config.stopped_velocity_tolerance, self.config.goal_time)
        # Goals wait in their execute callbacks (a thread each while they run, briefly two at a preemption), so
        # the server lives on a helper node with its own multi-threaded executor (runtime.run): on this node's
        # executor, next to the 80 Hz subscriptions, a MultiThreadedExecutor starved the simulation thread.
        # (A command-line ``__node:=`` remap applies to every node of the process: the local one keeps this
        # node's own name, which would otherwise duplicate the arm's.)
        name = f"{self.get_name()}_action_server"
        host = Node(name, namespace=self.get_namespace(), context=self.context, start_parameter_services=False,
                    cli_args=["--ros-args", "-r", f"__node:={name}"])
        self.blocking_nodes.append(host)
        return ActionServer(
            host, FollowJointTrajectory, self.config.action_name, execute_callback=self._execute_goal,
            goal_callback=self._on_goal_request, handle_accepted_callback=self._on_goal_accepted,
            cancel_callback=lambda _: CancelResponse.ACCEPT, callback_group=ReentrantCallbackGroup(),
        )

    def _reject_goal(self, reason: str):
        from rclpy.action import GoalResponse

        with self._lock:
            self._action_counts["goals_rejected"] += 1
        self.diagnostics.report("action", cause_key(reason), f"goal rejected: {reason}", level="warn")
        return GoalResponse.REJECT

    def _on_goal_request(self, goal):
        from rclpy.action import GoalResponse

        with self._lock:
            active, now = self._status.get("state") == ACTIVE, self._sim_time
        if not active:
            return self._reject_goal(NOT_RUNNING)
        if len(goal.multi_dof_trajectory.joint_names):
            return self._reject_goal("multi-DOF trajectories are not supported")
        trajectory = goal.trajectory
        reason = self._validator.check(list(trajectory.joint_names), stamp_to_seconds(trajectory.header.stamp),
                                       self._points(trajectory), now)
        if reason:
            return self._reject_goal(reason)
        return GoalResponse.ACCEPT

    def _on_goal_accepted(self, handle) -> None:
        request = handle.request
        trajectory = request.trajectory
        entries = {"path": request.path_tolerance, "goal": request.goal_tolerance}
        tolerances = {k: [(t.name, float(t.position), float(t.velocity)) for t in v] for k, v in entries.items()}
        monitor = GoalMonitor(self._validator.joint_names, tolerances["path"], tolerances["goal"],
                              duration_to_seconds(request.goal_time_tolerance), self._constraints)
        goal = _ServerGoal(handle, list(trajectory.joint_names), stamp_to_seconds(trajectory.header.stamp),
                           self._points(trajectory), monitor)
        with self._lock:
            previous, self._active_goal = self._active_goal, goal
            self._goals[bytes(handle.goal_id.uuid)] = goal
            self._pending.append((goal.names, goal.stamp, goal.points, goal))
            self._action_counts["goals_accepted"] += 1
        if previous is not None and previous.resolve("aborted", INVALID_GOAL, PREEMPTED):
            with self._lock:
                self._action_counts["goals_preempted"] += 1
        handle.execute()

    def _execute_goal(self, handle):
        with self._lock:
            goal = self._goals.get(bytes(handle.goal_id.uuid))
        while goal is not None and not goal.done.wait(0.05):
            if self._stop.is_set() or self._failed or not self.context.ok():
                goal.resolve("aborted", INVALID_GOAL, "the simulated arm is shutting down")
        with self._lock:
            self._goals.pop(bytes(handle.goal_id.uuid), None)
            if self._active_goal is goal:
                self._active_goal = None
        status, code, text = goal.outcome if goal is not None else ("aborted", INVALID_GOAL, "unknown goal")
        try:
            if status == "succeeded":
                handle.succeed()
            elif status == "canceled" and handle.is_cancel_requested:
                handle.canceled()
            else:
                handle.abort()
        except Exception:  # the action server is being destroyed (shutdown): nothing to tell anyone
            if not self._stop.is_set() and self.context.ok():
                raise
        if status != "aborted" or text != PREEMPTED:
            key = {"succeeded": "goals_succeeded", "canceled": "goals_canceled"}.get(status, "goals_aborted")
            with self._lock:
                self._action_counts[key] += 1
        return self._action_type.Result(error_code=code, error_string=text)

    def _on_reset(self, request, response):
        # Building a task's scene takes up to ~2 s on a loaded machine; two pauses follow.
        timeout = 30.0 + 4.0 * self.config.reset_pause / self.real_time_factor
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._failed:
                    response.success, response.message = False, f"simulation failed: {self._failed}"
                    return response
                running = self._reset_request
                if running is None:  # otherwise wait for the reset in progress (e.g. the start-up one) first
                    reset = _ResetRequest(**self._choice)
                    self._reset_request = reset
                    break
            if not running.done.wait(timeout=max(0.0, deadline - time.monotonic())):
                response.success, response.message = False, "an earlier reset did not finish in time"
                return response
        if not reset.done.wait(timeout=timeout):
            response.success, response.message = False, "reset timed out (is the simulation running?)"
            return response
        if reset.error:
            response.success, response.message = False, reset.error
        else:
            response.success, response.message = True, json.dumps(reset.result)
        return response

    # -- simulation thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            _SimulationLoop(self).run()
        except Exception as exc:  # noqa: BLE001 - report any simulation failure, then stop the node
            if self._stop.is_set() or not self.context.ok():  # shutting down: publishers are being destroyed
                return
            message = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._failed = message
                request, self._reset_request = self._reset_request, None
            if request is not None:
                request.error = f"simulation failed: {message}"
                request.done.set()
            self.diagnostics.report("simulation", cause_key(message), f"simulation failed: {message}")
            self.get_logger().fatal(f"simulation failed: {message}; shutting down")
            import rclpy

            rclpy.try_shutdown(context=self.context)

    def _publish_event(self, event: dict[str, Any]) -> None:
        self._episode_pub.publish(String(data=json.dumps(event)))

    # -- diagnostics -----------------------------------------------------------------------------------------
    def _diagnostic_values(self) -> dict[str, object]:
        now = time.monotonic()
        with self._lock:
            values: dict[str, object] = {**self._status, **self._counts}
            follower = dict(self._follower_counts)
            step_ms, render_ms = list(self._step_ms), list(self._render_ms)
        values["real_time_factor"] = self.real_time_factor
        values["physics rate_hz"] = self._physics_rate.value(now)
        values["camera rate_hz"] = self._camera_rate.value(now)
        values["trajectories accepted"] = follower["accepted"]
        for reason, count in follower["rejected"].items():
            values[f"trajectories rejected ({reason})"] = count
        if self._action_server is not None:
            with self._lock:
                values.update(self._action_counts)
        if step_ms:
            values["step ms (median)"] = float(np.median(step_ms))
        if render_ms:
            values["render ms (median)"] = float(np.median(render_ms))
        return values


class _SimulationLoop:
    """The physics loop of :class:`SimArmNode` (runs in its own thread; the only user of MuJoCo)."""

    def __init__(self, node: SimArmNode) -> None:
        from dream_vla_ros.sim.joint_arm import CONTROL_DT, JOINT_NAMES, JointArm, SimArmConfig
        from dream_vla_ros.sim.trajectory_follower import TrajectoryFollower

        self.node = node
        config = node.config
        self.config = config
        self.dt = CONTROL_DT
        self.arm = JointArm(SimArmConfig(
            task=config.task, cameras=config.cameras, width=config.width, height=config.height,
            seed=config.seed, max_steps=1_000_000_000,
        ))
        self.follower = TrajectoryFollower(JOINT_NAMES, config.interpolate_from_desired_state)
        self.state = None
        self.phase = OFFLINE
        self.phase_until = 0.0
        self.episode: _Episode | None = None
        self.reset_request: _ResetRequest | None = None
        self.episode_count = 0
        self.camera_period = max(1.0 / config.camera_rate, self.dt)
        self.joint_period = max(1.0 / config.joint_state_rate, self.dt)
        self.next_frame = 0.0
        self.next_joint_state = 0.0
        self.joint_msg = JointState(name=list(JOINT_NAMES))
        self.logged_rejections: set[str] = set()
        self.lag_events_at_start = 0
        self.goal: _ServerGoal | None = None  # the goal whose trajectory the controller runs (action interface)
        self.feedback = None
        # Pacing: tick k has ROS time time_anchor + (k - k_anchor) * dt and is due at wall time
        # wall_anchor + (k - k_anchor) * dt / real_time_factor.
        self.pace = node.real_time_factor
        self.k = 0
        self.k_anchor = 0
        self.wall_anchor = time.time()
        self.time_anchor = self.dt if node.use_sim_time else self.wall_anchor

    def now(self) -> float:
        return self.time_anchor + (self.k - self.k_anchor) * self.dt

    def reanchor(self) -> None:
        """Restart the pacing schedule at this tick (after a reset's scene build or a lag event)."""
        wall = time.time()
        self.time_anchor = self.now() if self.node.use_sim_time else wall
        self.wall_anchor = wall
        self.k_anchor = self.k

    def run(self) -> None:
        node = self.node
        try:
            while not node._stop.is_set():
                self.tick()
                self.k += 1
                if node.real_time_factor != self.pace:  # changed live: the new pace starts here
                    self.pace = node.real_time_factor
                    self.reanchor()
                due = self.wall_anchor + (self.k - self.k_anchor) * self.dt / self.pace
                wait = due - time.time()
                if wait > 0.0:
                    node._stop.wait(wait)
                elif -wait > self.config.max_lag:
                    with node._lock:
                        node._counts["lag_events"] += 1
                    self.reanchor()
        finally:
            self.arm.close()

    # -- one physics tick -------------------------------------------------------------------------------------
    def tick(self) -> None:
        node = self.node
        for msg in node._trajectory_input.take_all():
            node._on_trajectory(msg)
        with node._lock:
            request = node._reset_request if self.reset_request is None else None
            pending, node._pending = node._pending, []
        if request is not None:
            self.begin_reset(request)
        t = self.now()
        with node._lock:
            node._sim_time = t
        if node._clock_pub is not None:
            node._clock_pub.publish(node._clock_type(clock=seconds_to_stamp(t)))
        if self.phase == OFFLINE:
            self.ignore(pending)
            if t >= self.phase_until:
                self.phase, self.phase_until = SETTLING, t + self.config.reset_pause
                self.next_frame = self.next_joint_state = t
            return
        self.publish_state(t)
        if self.phase == SETTLING:
            self.ignore(pending)
            if t >= self.phase_until:
                self.activate(t)
        else:
            self.receive(pending, t)
        started = time.perf_counter()
        target, target_velocity = self.follower.sample(t + self.dt)
        self.state = self.arm.step(target)
        if self.goal is not None:
            self.monitor_goal(t + self.dt, target, target_velocity)
        step_ms = (time.perf_counter() - started) * 1e3
        node._physics_rate.tick(time.monotonic())
        with node._lock:
            node._step_ms.append(step_ms)
            node._counts["steps"] += 1
        if self.phase == ACTIVE:
            self.check_episode(t + self.dt)

    def begin_reset(self, request: _ResetRequest) -> None:
        from dream_vla_ros.sim.tasks import instruction

        self.reset_request = request
        self.phase = OFFLINE
        with self.node._lock:
            goal, self.node._active_goal = self.node._active_goal, None
        for running in {g for g in (goal, self.goal) if g is not None}:
            running.resolve("aborted", INVALID_GOAL, DEACTIVATED)
        self.goal = None
        self.state = self.arm.reset(request.task, request.seed)
        self.follower.hold(self.arm.joint_targets())
        self.arm.render()  # builds the renderer on the first reset, so the first frame is not late
        self.episode_count += 1
        self.episode = _Episode(
            number=self.episode_count, task=self.arm.task, seed=request.seed,
            instruction=instruction(request.task, request.phrasing_index, request.phrasing_split),
            phrasing_split=request.phrasing_split, phrasing_index=request.phrasing_index,
        )
        self.reanchor()  # the scene build is not a lag event
        self.phase_until = self.now() + self.config.reset_pause
        self.node._success_pub.publish(Bool(data=False))
        with self.node._lock:
            self.node._status = {"state": OFFLINE, "task": self.episode.task, "seed": self.episode.seed,
                                 "episode": self.episode.number}

    def activate(self, t: float) -> None:
        node, episode, request = self.node, self.episode, self.reset_request
        self.phase = ACTIVE
        event = {
            "event": protocol.EVENT_RESET, "episode": episode.number, "task": episode.task, "seed": episode.seed,
            "instruction": episode.instruction, "phrasing_split": episode.phrasing_split,
            "phrasing_index": episode.phrasing_index, "stamp": t, "max_steps": self.config.max_steps,
        }
        with node._lock:
            self.lag_events_at_start = node._counts["lag_events"]
        node._publish_event(event)
        node.get_logger().info(f"episode {episode.number}: {episode.task} seed {episode.seed}: "
                               f"{episode.instruction!r}")
        with node._lock:
            node._counts["episodes"] = episode.number
            node._status["state"] = ACTIVE
            node._reset_request = None
        self.reset_request = None
        request.result = event
        request.done.set()

    def ignore(self, pending: list) -> None:
        if pending:
            with self.node._lock:
                self.node._counts["trajectories_ignored_inactive"] += len(pending)
            for *_, goal in pending:
                if goal is not None:
                    goal.resolve("aborted", INVALID_GOAL, DEACTIVATED)

    def receive(self, pending: list, t: float) -> None:
        if not pending:
            return
        follower, state = self.follower, self.state
        for names, stamp, points, goal in pending:
            if goal is not None and goal.resolved:
                continue  # preempted before it reached the controller
            reason = follower.receive(names, stamp, points, t, state.positions, state.velocities)
            if reason and reason not in self.logged_rejections:
                self.logged_rejections.add(reason)
                self.node.get_logger().warning(f"trajectory rejected: {reason} (the previous one keeps running)")
            if goal is not None:
                if reason:
                    goal.resolve("aborted", INVALID_GOAL, reason)
                else:
                    self.goal = goal
        with self.node._lock:
            self.node._follower_counts = {"accepted": follower.accepted, "rejected": dict(follower.rejected)}

    def monitor_goal(self, t: float, desired_q: np.ndarray, desired_v: np.ndarray) -> None:
        """Feedback and the tolerance checks of the running goal at controller time ``t`` (after the step)."""
        goal, state, follower = self.goal, self.state, self.follower
        if goal.resolved:
            self.goal = None
            return
        if goal.handle.is_cancel_requested:
            follower.hold(follower.sample(t)[0])
            goal.resolve("canceled", 0, "Goal canceled by the client")
            self.goal = None
            return
        self.publish_feedback(goal, desired_q, desired_v, t)
        end = follower.end_time()
        outcome = goal.monitor.update(t, -np.inf if end is None else end, desired_q, desired_v,
                                      state.positions, state.velocities)
        if outcome is None:
            return
        if outcome.status == "aborted":
            follower.hold(state.positions)  # the JTC holds where the arm is
            self.node.get_logger().warning(f"goal aborted: {outcome.error_string}")
        goal.resolve(outcome.status, outcome.error_code, outcome.error_string)
        self.goal = None

    def publish_feedback(self, goal: _ServerGoal, desired_q: np.ndarray, desired_v: np.ndarray, t: float) -> None:
        from trajectory_msgs.msg import JointTrajectoryPoint

        if self.feedback is None:
            self.feedback = self.node._action_type.Feedback(joint_names=list(self.follower.joint_names))
        feedback, state = self.feedback, self.state
        feedback.header.stamp = seconds_to_stamp(t)
        feedback.desired = JointTrajectoryPoint(positions=desired_q.tolist(), velocities=desired_v.tolist())
        feedback.actual = JointTrajectoryPoint(positions=state.positions.tolist(),
                                               velocities=state.velocities.tolist())
        feedback.error = JointTrajectoryPoint(positions=(desired_q - state.positions).tolist(),
                                              velocities=(desired_v - state.velocities).tolist())
        try:
            goal.handle.publish_feedback(feedback)
        except Exception:  # noqa: BLE001 - the goal ended meanwhile (preempted in another thread)
            return

    def publish_state(self, t: float) -> None:
        node, state = self.node, self.state
        stamp = seconds_to_stamp(t)
        if t >= self.next_joint_state - 1e-9:
            self.next_joint_state = max(self.next_joint_state + self.joint_period, t + 0.5 * self.dt)
            msg = self.joint_msg
            msg.header.stamp = stamp
            msg.position = state.positions.tolist()
            msg.velocity = state.velocities.tolist()
            node._joint_pub.publish(msg)
            with node._lock:
                node._counts["joint_states"] += 1
        if t >= self.next_frame - 1e-9:
            self.next_frame = max(self.next_frame + self.camera_period, t + 0.5 * self.dt)
            watched = [(c, pub) for c, pub in node._image_pubs.items() if pub.get_subscription_count() > 0]
            if not watched:
                return  # nobody looks: skip the render (about 70% of the simulation's CPU time)
            started = time.perf_counter()
            for camera, publisher in watched:
                publisher.publish(rgb_to_image(self.arm.render(camera), "rgb8", stamp, camera))
            render_ms = (time.perf_counter() - started) * 1e3
            node._camera_rate.tick(time.monotonic())
            with node._lock:
                node._render_ms.append(render_ms)
                node._counts["frames"] += 1

    def check_episode(self, t: float) -> None:
        episode, state = self.episode, self.state
        if episode is None or episode.finished:
            return
        episode.steps += 1
        episode.closest = min(episode.closest, state.goal_distance)
        kind = None
        if state.success:
            kind = protocol.EVENT_SUCCESS
            self.node._success_pub.publish(Bool(data=True))
        elif self.config.max_steps and episode.steps >= self.config.max_steps:
            kind = protocol.EVENT_TRUNCATED
        if kind is None:
            return
        episode.finished = True
        with self.node._lock:
            lag_events = self.node._counts["lag_events"] - self.lag_events_at_start
        self.node._publish_event({
            "event": kind, "episode": episode.number, "task": episode.task, "seed": episode.seed,
            "steps": episode.steps, "stamp": t, "lag_events": lag_events, "real_time_factor": self.pace,
            "goal_distance": round(state.goal_distance, 4), "closest_goal_distance": round(episode.closest, 4),
        })


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.runtime import run

    return run([SimArmNode], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
