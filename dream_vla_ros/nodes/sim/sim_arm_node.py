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
  JTC's semantics (:mod:`dream_vla_ros.sim.controller`): validation like a topic message (an invalid goal, or
  any goal while the controller is inactive during a reset, is **rejected**), preemption of the active goal
  (ABORTED with ``INVALID_GOAL``, "Current goal cancelled due to new incoming action."), feedback
  (``desired``, ``actual``, ``error``) every physics step, path and goal tolerances
  (``PATH_TOLERANCE_VIOLATED``, ``GOAL_TOLERANCE_VIOLATED``), cancel (CANCELED, holding the commanded
  position), and a reset ending the active goal ABORTED ("Current goal cancelled during deactivate
  transition."), like a controller switch;
- publishes ``~/success`` (std_msgs/Bool, reliable, transient local): false at each reset, true once the
  task is solved (Meta-World's success, latched for the episode);
- publishes ``~/episode`` (std_msgs/String, one JSON object per event, reliable, transient local, keep last
  10): ``{"event": "reset", ...}`` when a new episode starts (the controller is active from then on),
  ``{"event": "success", ...}`` at the first successful step and ``{"event": "truncated", ...}`` when
  ``max_steps`` steps passed without success; their fields are listed in :mod:`dream_vla_ros.sim.episode`
  (``lag_events``: the times the simulation fell behind the wall clock during the episode, see Time below);
- service ``~/reset`` (std_srvs/Trigger): starts an episode of the task, seed and phrasing given by the
  parameters ``task``, ``seed``, ``phrasing_split`` and ``phrasing_index`` (set them first, e.g. with
  ``ros2 param set``; they are validated when set). It answers once the new episode runs and the controller
  accepts trajectories; ``message`` is the reset event's JSON object, with the task's language
  ``instruction``. (Trigger + parameters keeps to standard interfaces, so nothing needs building: an
  ament_python package cannot generate a custom service type.)
- publishes ``/diagnostics`` (physics and camera rates, lag events, accepted / rejected trajectories,
  render and step cost) and, with ``use_sim_time``, ``/clock``.

Reset sequence (:mod:`dream_vla_ros.sim.episode`): the arm goes offline for ``reset_pause`` s (no joint
states, no images, trajectories ignored), the scene is reset, then the arm runs holding still for
``reset_pause`` s with the controller still ignoring trajectories, then the controller becomes active holding
the reset pose.

Time (:mod:`dream_vla_ros.sim.pacing`): one simulation thread (:mod:`.sim_arm_loop`) steps the physics at
80 Hz. With wall-clock time (default) it is paced to the wall clock and every stamp is the wall time of the
physics state it describes (never ahead of the wall clock); if it falls more than ``max_lag`` behind
(overloaded machine), it skips the missed time and counts a lag event, like a controller missing updates.
With ``use_sim_time: true`` the node publishes ``/clock`` from the simulation (starting at one physics step)
and stamps with it; ``real_time_factor`` then sets the pace (above 1 runs faster than the wall clock, only
when asked). ``real_time_factor`` may change while the node runs (``ros2 param set``; the pace changes at
the next physics step): a client that measures the host's headroom slows the simulation down instead of
letting it lag. Every end event carries the factor in force. Rendering happens only for camera frames, and
only for cameras whose topic has a subscriber.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dream_vla_ros import protocol
from dream_vla_ros.errors import ConfigError, DreamVlaError
from dream_vla_ros.nodes import params, qos
from dream_vla_ros.nodes.conversions import duration_to_seconds, seconds_to_stamp, stamp_to_seconds
from dream_vla_ros.nodes.diagnostics import Diagnostics
from dream_vla_ros.nodes.health import cause_key
from dream_vla_ros.nodes.polling import PolledInputs
from dream_vla_ros.nodes.sim.sim_arm_config import EPISODE_PARAMETERS, SimArmNodeConfig
from dream_vla_ros.nodes.sim.sim_arm_loop import LoopOutputs, LoopStats, SimulationLoop
from dream_vla_ros.protocol import INVALID_GOAL
from dream_vla_ros.sim.controller import Goal, TrajectoryController
from dream_vla_ros.sim.episode import ResetRequests
from dream_vla_ros.sim.goal_tolerances import ControllerConstraints
from dream_vla_ros.sim.pacing import Pacer
from dream_vla_ros.sim.trajectory_follower import TrajectoryPoint

NODE_NAME = "sim_arm"


def trajectory_points(msg: JointTrajectory) -> list[TrajectoryPoint]:
    """A JointTrajectory's points, for the controller."""
    return [
        TrajectoryPoint(
            duration_to_seconds(p.time_from_start),
            np.asarray(p.positions, dtype=np.float64),
            np.asarray(p.velocities, dtype=np.float64) if len(p.velocities) else None,
        )
        for p in msg.points
    ]


def _tolerances(entries) -> list[tuple[str, float, float]]:
    """control_msgs/JointTolerance entries -> (name, position, velocity)."""
    return [(t.name, float(t.position), float(t.velocity)) for t in entries]


class SimArmNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        from dream_vla_ros.sim.joint_arm import CONTROL_DT, JOINT_NAMES

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
        self._lock = threading.Lock()  # the episode choice and the goals in flight
        self._choice = {name: getattr(config, name) for name in EPISODE_PARAMETERS}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resets = ResetRequests()
        self._stats = LoopStats()
        self._pacer = Pacer(CONTROL_DT, config.max_lag, config.real_time_factor, self.use_sim_time)
        self._controller = TrajectoryController(
            JOINT_NAMES, self.get_logger().warning, config.interpolate_from_desired_state,
            ControllerConstraints(config.stopped_velocity_tolerance, config.goal_time),
        )
        self._goals: dict[bytes, Goal] = {}  # by goal id, from acceptance to execution

        io_group = MutuallyExclusiveCallbackGroup()
        reset_group = MutuallyExclusiveCallbackGroup()
        self._image_pubs = {camera: self.create_publisher(Image, topic, qos.SENSOR)
                            for camera, topic in zip(config.cameras, config.camera_topics, strict=True)}
        self._joint_pub = self.create_publisher(JointState, config.joint_states_topic, qos.JOINT_STATES_OUT)
        self._success_pub = self.create_publisher(Bool, "~/success", qos.LATCHED)
        self._episode_pub = self.create_publisher(String, "~/episode", qos.EVENTS)
        self._clock_pub = None
        if self.use_sim_time:
            from rosgraph_msgs.msg import Clock

            self._clock_type = Clock
            self._clock_pub = self.create_publisher(Clock, "/clock", qos.LATCHED)
        # The controller topic is read by the simulation thread at every physics step, as a controller's update
        # loop reads its command buffer (polling.py: no executor wake-up per message).
        self._polled = PolledInputs(self)
        self._trajectory_input = self._polled.subscribe(JointTrajectory, config.trajectory_topic, qos.CONTROLLER_INPUT)
        self.create_service(Trigger, protocol.RESET, self._on_reset, callback_group=reset_group)
        self.blocking_nodes: list[Node] = []
        self._action_server = self._create_action_server(JOINT_NAMES)
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
        self._resets.post(self._episode_choice())
        self._thread = threading.Thread(target=self._run, name="simulation", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._polled.close()

    def _stopping(self) -> bool:
        return self._stop.is_set() or bool(self._resets.failure) or not self.context.ok()

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
            self._pacer.real_time_factor = float(pace)
        return SetParametersResult(successful=True)

    def _pace_problem(self, value: Any) -> str:
        """Why ``value`` cannot be the real-time factor now ('' if it can)."""
        if not isinstance(value, float) or not math.isfinite(value) or not 0.0 < value <= 100.0:
            return f"real_time_factor must be a float in (0, 100], got {value!r}"
        if value > 1.0 and not self.use_sim_time:
            return "real_time_factor above 1 needs use_sim_time: true"
        return ""

    def _episode_choice(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._choice)

    # -- interfaces ------------------------------------------------------------------------------------------
    def _poll_trajectories(self) -> None:
        for msg in self._trajectory_input.take_all():
            self._controller.submit(list(msg.joint_names), stamp_to_seconds(msg.header.stamp),
                                    trajectory_points(msg))

    def _publish_event(self, event: dict[str, Any]) -> None:
        self._episode_pub.publish(String(data=json.dumps(event)))

    def _publish_clock(self, t: float) -> None:
        self._clock_pub.publish(self._clock_type(clock=seconds_to_stamp(t)))

    def _on_reset(self, request, response):
        # Building a task's scene takes seconds on a loaded machine (docs/performance.md); two pauses follow.
        timeout = 30.0 + 4.0 * self.config.reset_pause / self._pacer.real_time_factor
        event, reason = self._resets.request(self._episode_choice, timeout)
        response.success = event is not None
        response.message = json.dumps(event) if event is not None else reason
        return response

    # -- FollowJointTrajectory -------------------------------------------------------------------------------
    def _create_action_server(self, joint_names: tuple[str, ...]):
        """The action server, or None when control_msgs is not importable (the topic interface remains)."""
        try:
            from control_msgs.action import FollowJointTrajectory
        except ImportError:
            return None
        from rclpy.action import ActionServer, CancelResponse

        self._action_type = FollowJointTrajectory
        self._feedback = FollowJointTrajectory.Feedback(joint_names=list(joint_names))  # simulation thread only
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

    def _on_goal_request(self, goal):
        from rclpy.action import GoalResponse

        trajectory = goal.trajectory
        reason = self._controller.check_goal(
            list(trajectory.joint_names), stamp_to_seconds(trajectory.header.stamp), trajectory_points(trajectory),
            multi_dof=len(goal.multi_dof_trajectory.joint_names) > 0,
        )
        if reason:
            self.diagnostics.report("action", cause_key(reason), f"goal rejected: {reason}", level="warn")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_goal_accepted(self, handle) -> None:
        request = handle.request
        trajectory = request.trajectory
        goal = self._controller.accept(
            list(trajectory.joint_names), stamp_to_seconds(trajectory.header.stamp), trajectory_points(trajectory),
            _tolerances(request.path_tolerance), _tolerances(request.goal_tolerance),
            duration_to_seconds(request.goal_time_tolerance), lambda: handle.is_cancel_requested,
            functools.partial(self._publish_feedback, handle),
        )
        with self._lock:
            self._goals[bytes(handle.goal_id.uuid)] = goal
        handle.execute()

    def _execute_goal(self, handle):
        with self._lock:
            goal = self._goals.pop(bytes(handle.goal_id.uuid), None)
        if goal is None:
            status, code, text = "aborted", INVALID_GOAL, "unknown goal"
        else:
            status, code, text = self._controller.wait(goal, self._stopping)
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
        return self._action_type.Result(error_code=code, error_string=text)

    def _publish_feedback(self, handle, t: float, desired_q: np.ndarray, desired_v: np.ndarray,
                          actual_q: np.ndarray, actual_v: np.ndarray, error_q: np.ndarray,
                          error_v: np.ndarray) -> None:
        feedback = self._feedback
        feedback.header.stamp = seconds_to_stamp(t)
        feedback.desired = JointTrajectoryPoint(positions=desired_q.tolist(), velocities=desired_v.tolist())
        feedback.actual = JointTrajectoryPoint(positions=actual_q.tolist(), velocities=actual_v.tolist())
        feedback.error = JointTrajectoryPoint(positions=error_q.tolist(), velocities=error_v.tolist())
        try:
            handle.publish_feedback(feedback)
        except Exception:  # noqa: BLE001 - the goal ended meanwhile (preempted in another thread)
            return

    # -- simulation thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        outputs = LoopOutputs(
            poll_commands=self._poll_trajectories, images=self._image_pubs, joint_states=self._joint_pub,
            success=self._success_pub, event=self._publish_event,
            clock=self._publish_clock if self._clock_pub is not None else None,
        )
        try:
            SimulationLoop(self.config, outputs, self._controller, self._pacer, self._resets, self._stats,
                           self.get_logger()).run(self._stop)
        except Exception as exc:  # noqa: BLE001 - report any simulation failure, then stop the node
            if self._stop.is_set() or not self.context.ok():  # shutting down: publishers are being destroyed
                return
            message = f"{type(exc).__name__}: {exc}"
            self._resets.fail(message)
            self.diagnostics.report("simulation", cause_key(message), f"simulation failed: {message}")
            self.get_logger().fatal(f"simulation failed: {message}; shutting down")
            import rclpy

            rclpy.try_shutdown(context=self.context)

    # -- diagnostics -----------------------------------------------------------------------------------------
    def _diagnostic_values(self) -> dict[str, object]:
        values = self._stats.values()
        values["lag_events"] = self._pacer.lag_events
        values["real_time_factor"] = self._pacer.real_time_factor
        values.update(self._controller.trajectory_counts())
        if self._action_server is not None:
            values.update(self._controller.goal_counts())
        return values


def main(argv: list[str] | None = None) -> int:
    from dream_vla_ros.nodes.runtime import run

    return run([SimArmNode], argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
