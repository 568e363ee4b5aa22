"""The ROS 2 client of an evaluation: a node graph started as processes in a private domain, and an in-process
client node that drives the simulated arm, publishes goals and calls the nodes' services.

- the graph is the one of a params file (:mod:`dream_vla_ros.bringup`, with overrides), started with
  :mod:`dream_vla_ros.process_group` in its own ``ROS_DOMAIN_ID`` with discovery kept on the host; with the
  ``servo`` controller interface a JointJog integrator stands in for MoveIt Servo as one more process;
- names and topics come from the nodes' config classes (:class:`~dream_vla_ros.evaluation.graph.GraphEndpoints`);
- the session is up once the arm's ``~/reset`` and ``~/set_parameters`` services answer and every lifecycle node
  that starts itself says ``active`` on its ``~/get_state``;
- every wait polls (:mod:`dream_vla_ros.ros_calls`) and fails at once, with the process's last output, when a
  node process has exited.

The names of the nodes' interfaces and the event kinds this client relies on are the constants below.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dream_vla_ros import protocol
from dream_vla_ros.errors import ConfigError, DreamVlaError
from dream_vla_ros.evaluation.graph import GraphEndpoints
from dream_vla_ros.evaluation.pacing import LoadMeter
from dream_vla_ros.ros_calls import call_service, lifecycle_state, wait_for

T = TypeVar("T")

# -- the nodes' interfaces used here (relative to each node's name) --------------------------------------------
SIM_EPISODE = "episode"  # sim_arm ~/episode (std_msgs/String, one JSON event each)
SET_PARAMETERS = "set_parameters"  # the ROS parameter service of every node
EXECUTOR_HANDOVER = (protocol.PAUSE, protocol.ACTIVATE)  # chunk_executor hand-over services (std_srvs/Trigger)
GOAL_STATUS = "goal_status"  # policy_node ~/goal_status (std_msgs/String, JSON verdicts)
GET_STATE = "get_state"  # lifecycle_msgs/srv/GetState of a lifecycle node
STATE_ACTIVE = "active"  # the lifecycle state of a node that is up
RECORDER_TRIGGERS = ("start", "stop", "discard")  # recorder services (std_srvs/Trigger; JSON answers)
CLOCK_TOPIC = "/clock"  # the simulated arm's clock (with use_sim_time)
JOG_INTEGRATOR = "dream_vla_ros.nodes.sim.jog_integrator_node"  # the MoveIt Servo stand-in

Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    """The default progress log: one line on stderr."""
    print(line, file=sys.stderr, flush=True)


class RosSession:
    """A node graph (processes in a private domain) plus an in-process client that drives the simulated arm.

    Usage::

        with RosSession("sim_arm", overrides={...}) as session:
            event = session.reset("push", seed=100000)       # the reset event, with the instruction
            session.set_goal(event["instruction"])
            end = session.wait_episode_end(event["episode"], timeout=20.0)
    """

    def __init__(
        self,
        config: str | Path = "sim_arm",
        *,
        overrides: dict[str, dict[str, Any]] | None = None,
        only: tuple[str, ...] = (),
        domain_id: int | None = None,
        echo: Any = None,
        log: Log = stderr_log,
    ) -> None:
        from dream_vla_ros.bringup import describe

        self.bringup = describe(config, overrides=overrides, only=only)
        self.graph = GraphEndpoints.of(self.bringup)
        self.domain_id = random.randrange(120, 230) if domain_id is None else domain_id
        self.log = log
        self._echo = echo
        self.processes = None
        self._context = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._verdicts: queue.Queue[dict[str, Any]] = queue.Queue()
        self._frame_sink: Callable[[Any], None] | None = None
        self._frame_sub = None
        self._spinner: threading.Thread | None = None
        self._sim_time: float | None = None
        self.wait_failure = ""  # why the last wait_episode_end gave up

    @property
    def environment(self) -> dict[str, str]:
        """The environment of a process in the session's domain."""
        return {"ROS_DOMAIN_ID": str(self.domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                **self.bringup.environment}

    # -- lifetime --------------------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> RosSession:
        import rclpy
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from dream_vla_ros.nodes import qos
        from dream_vla_ros.nodes.polling import PolledInputs
        from dream_vla_ros.process_group import ProcessGroup, node_argv, start_bringup

        graph = self.graph
        deadline = time.monotonic() + timeout
        for key, value in self.environment.items():
            if key != "ROS_DOMAIN_ID":
                os.environ.setdefault(key, value)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        if graph.controller_interface != "topic" and importlib.util.find_spec("control_msgs") is None:
            raise ConfigError(
                f"controller_interface {graph.controller_interface!r} needs control_msgs: on a robot install "
                "ros-<distro>-control-msgs; in this venv build the test copy and export its paths: "
                'eval "$(python test/control_msgs_build.py --exports)"'
            )
        self.processes = ProcessGroup(echo=self._echo)
        start_bringup(self.processes, self.bringup, self.environment)
        if graph.controller_interface == "servo":  # the MoveIt Servo stand-in between executor and arm
            self.start_process("servo_node", node_argv(JOG_INTEGRATOR, [
                "--ros-args", "-p", f"command_topic:={graph.jog_topic}", "-p",
                f"output_topic:={graph.trajectory_topic}", "-p", f"joint_states_topic:={graph.joint_states_topic}"]))
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=self.domain_id)
        self.node = rclpy.create_node(f"dream_vla_eval_{os.getpid()}", context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._goal_pub = self.node.create_publisher(String, graph.goal_topic, qos.GOAL)
        self.node.create_subscription(String, f"{graph.sim}/{SIM_EPISODE}", self._on_event, qos.EVENTS)
        if graph.policy:
            self.node.create_subscription(String, f"{graph.policy}/{GOAL_STATUS}", self._on_verdict, qos.GOAL)
        self._reset_client = self.node.create_client(Trigger, protocol.resolve(graph.sim, protocol.RESET))
        self._executor_clients = {name: self.node.create_client(Trigger, protocol.resolve(graph.executor, name))
                                  for name in EXECUTOR_HANDOVER} if graph.executor else {}
        self._params_client = self.node.create_client(SetParameters, f"{graph.sim}/{SET_PARAMETERS}")
        polled = PolledInputs(self.node, "polled")  # read when asked: no executor wake-ups at 80 Hz
        self._clock = polled.subscribe(Clock, CLOCK_TOPIC, QoSProfile(depth=1))
        self._joint_states = polled.subscribe(JointState, graph.joint_states_topic, qos.SENSOR)
        self._positions: np.ndarray | None = None
        self._spinner = threading.Thread(target=self._spin, name="eval-client", daemon=True)
        self._spinner.start()
        for client in (self._reset_client, self._params_client):
            self.wait(client.service_is_ready, _left(deadline), f"service {client.srv_name}")
        for process, name in graph.lifecycle:
            self._wait_active(process, name, deadline)
        return self

    def _wait_active(self, process: str, name: str, deadline: float) -> None:
        """Wait for the lifecycle node ``name`` (process ``process``) to answer its ``~/get_state`` after its
        autostart (it answers once configure and activate have run) and require ``active``."""
        from lifecycle_msgs.srv import GetState

        client = self.node.create_client(GetState, f"{name}/{GET_STATE}")
        label = lifecycle_state(client, _left(deadline), check=self.check_alive, error=DreamVlaError)
        if label != STATE_ACTIVE:
            raise DreamVlaError(f"{name} is {label!r} after its autostart, not {STATE_ACTIVE!r} (its configure or "
                                f"activate failed); its last output:\n{self._tail(process)}")

    def start_process(self, name: str, argv: list[str]) -> None:
        """Start one more process in the session's domain (stopped with the graph)."""
        self.processes.start(name, argv, self.environment)

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException, Exception):  # the client ends with the session
            self._executor.spin()

    def close(self) -> dict[str, int | None]:
        import rclpy

        codes: dict[str, int | None] = {}
        if self.processes is not None:
            codes = self.processes.stop(timeout=5.0)
        if self._context is not None:
            self._executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
            rclpy.shutdown(context=self._context)
            self._context = None
        if self._spinner is not None:
            self._spinner.join(timeout=2.0)
        return codes

    def __enter__(self) -> RosSession:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health and waiting ----------------------------------------------------------------------------------
    def check_alive(self) -> None:
        """Raise DreamVlaError, with its last output, when a process of the session has exited."""
        for name, proc in self.processes.processes.items():
            if not proc.running:
                raise DreamVlaError(f"{name} exited with {proc.popen.poll()}; its last output:\n{self._tail(name)}")

    def _tail(self, name: str, lines: int = 25) -> str:
        return "\n".join(self.processes.output(name).splitlines()[-lines:])

    def wait(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        """Poll ``condition`` (the client spins in its own thread) while every process runs."""
        return wait_for(condition, timeout, what, check=self.check_alive, error=DreamVlaError)

    def call(self, client: Any, request: Any, timeout: float) -> Any:
        """Call a service from the client node and return its response (DreamVlaError on timeout)."""
        return call_service(client, request, timeout, check=self.check_alive, error=DreamVlaError)

    def outputs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {name} ---\n{self._tail(name, lines)}" for name in self.processes.processes)

    # -- driving the arm -------------------------------------------------------------------------------------
    def _on_event(self, msg) -> None:
        with contextlib.suppress(json.JSONDecodeError):
            self._events.put(json.loads(msg.data))

    def set_goal(self, text: str) -> None:
        from std_msgs.msg import String

        self._goal_pub.publish(String(data=text))

    def _on_verdict(self, msg) -> None:
        with contextlib.suppress(json.JSONDecodeError):
            self._verdicts.put(json.loads(msg.data))

    def judge_goal(self, text: str, timeout: float = 10.0) -> dict[str, Any]:
        """Publish ``text`` as the goal and return the policy node's verdict on it (its ``~/goal_status``)."""
        self.set_goal(text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                verdict = self._verdicts.get(timeout=0.05)
            except queue.Empty:
                self.check_alive()
                continue
            if verdict.get("goal") == text[:200]:
                return verdict
        raise DreamVlaError(f"no verdict on the goal {text[:60]!r} within {timeout:.0f} s "
                            f"({self.graph.policy}/{GOAL_STATUS})")

    def _set_sim_parameters(self, values: dict[str, Any]) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        response = self.call(self._params_client, request, 10.0)
        for name, result in zip(values, response.results, strict=True):
            if not result.successful:
                raise ConfigError(f"sim_arm rejected {name}={values[name]!r}: {result.reason}")

    def reset(self, task: str, seed: int, split: str = "train", index: int = 0, timeout: float = 60.0) -> dict:
        """Start a seeded episode on the arm; returns its reset event (with ``instruction`` and ``episode``)."""
        from std_srvs.srv import Trigger

        self._set_sim_parameters({"task": task, "seed": int(seed), "phrasing_split": split,
                                  "phrasing_index": int(index)})
        answer = self.call(self._reset_client, Trigger.Request(), timeout)
        if not answer.success:
            raise DreamVlaError(f"{protocol.resolve(self.graph.sim, protocol.RESET)} failed: {answer.message}")
        return json.loads(answer.message)

    def set_real_time_factor(self, factor: float) -> None:
        """Change the simulated arm's pace live (its ``real_time_factor`` parameter)."""
        self._set_sim_parameters({"real_time_factor": float(factor)})

    def load_meter(self) -> LoadMeter:
        """A CPU meter over the graph's processes and this client (the simulated arm measured alone too)."""
        pids = [proc.popen.pid for proc in self.processes.processes.values()]
        sim = self.processes.processes.get("sim_arm")
        return LoadMeter([*pids, os.getpid()], sim.popen.pid if sim is not None else None)

    def executor_call(self, service: str, timeout: float = 10.0) -> str:
        """Call the chunk executor's ``protocol.PAUSE`` or ``protocol.ACTIVATE`` (the hand-over services);
        returns the answer."""
        from std_srvs.srv import Trigger

        answer = self.call(self._executor_clients[service], Trigger.Request(), timeout)
        if not answer.success:
            raise DreamVlaError(f"{protocol.resolve(self.graph.executor, service)} failed: {answer.message}")
        return answer.message

    def joint_positions(self) -> np.ndarray | None:
        """The arm's newest joint positions (its ``joint_states_topic``), or None before the first."""
        msg = self._joint_states.take_newest()
        if msg is not None:
            self._positions = np.array(msg.position, dtype=np.float64)
        return self._positions

    def sim_time(self) -> float | None:
        """The newest ``/clock`` time (seconds), or None while the arm runs on the wall clock."""
        msg = self._clock.take_newest()
        if msg is not None:
            self._sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9
        return self._sim_time

    def wait_episode_end(self, episode: int, timeout: float, last_step: float | None = None) -> dict[str, Any] | None:
        """The ``success`` or ``truncated`` event of ``episode``, or None (the cause in :attr:`wait_failure`).

        Without ``last_step`` the wait ends after ``timeout`` wall seconds. With it (the simulated time of the
        episode's last step: its start stamp + ``max_steps`` physics steps) and the arm on ``/clock``,
        ``timeout`` counts only wall seconds in which the simulated clock stood still, or that passed after
        the clock went beyond ``last_step``: a slow host slows the simulation down, it does not cut the
        episode short. On the wall clock ``timeout`` is a plain timeout either way."""
        self.wait_failure = ""
        now = time.monotonic()
        deadline = now + timeout
        clock = self.sim_time() if last_step is not None else None
        while True:
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                self.check_alive()
                event = None
            if event is not None:
                ended = event.get("event") in (protocol.EVENT_SUCCESS, protocol.EVENT_TRUNCATED)
                if event.get("episode") == episode and ended:
                    return event
                continue
            now = time.monotonic()
            if clock is not None and (t := self.sim_time()) != clock:
                clock = t
                if t <= last_step:  # the simulation moves and the episode is not over yet
                    deadline = now + timeout
            if now >= deadline:
                if clock is None:
                    self.wait_failure = f"no end event within {timeout:.0f} s"
                elif clock <= last_step:
                    self.wait_failure = f"no end event: the simulated clock stood still for {timeout:.0f} s"
                else:
                    self.wait_failure = f"no end event {timeout:.0f} s after the episode's last step"
                return None

    def trajectory_publisher(self):
        """A reliable publisher on the arm's controller topic, once the arm's subscription is matched."""
        from trajectory_msgs.msg import JointTrajectory

        from dream_vla_ros.nodes import qos

        topic = self.graph.trajectory_topic
        publisher = self.node.create_publisher(JointTrajectory, topic, qos.CONTROLLER)
        self.wait(lambda: publisher.get_subscription_count() > 0, 30.0, f"a subscriber on {topic}")
        return publisher

    def record_frames(self, sink: Callable[[Any], None] | None) -> None:
        """Send every camera frame to ``sink`` (None stops); subscribes on first use."""
        if sink is not None and self._frame_sub is None:
            from sensor_msgs.msg import Image

            from dream_vla_ros.nodes import qos

            self._frame_sub = self.node.create_subscription(Image, self.graph.camera_topic, self._on_frame,
                                                            qos.SENSOR)
        self._frame_sink = sink

    def _on_frame(self, msg) -> None:
        sink = self._frame_sink
        if sink is not None:
            sink(msg)


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (0 when it has passed)."""
    return max(0.0, deadline - time.monotonic())
