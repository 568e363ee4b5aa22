"""Closed-loop evaluation through ROS 2: the simulated arm, the policy node and the chunk executor as separate
processes in a private ROS domain, driven by episode resets and language goals.

Protocol (``dream-vla-ros eval``):

- the graph of a params file (``config/sim_arm.yaml``: ``sim_arm``, ``policy_node``, ``chunk_executor``) is
  started with :mod:`dream_vla_ros.process_group` in its own ``ROS_DOMAIN_ID`` with discovery kept on the
  host, so nothing else on the machine or the network sees it;
- episode ``i`` of every task uses seed ``seed + i`` (default ``seed`` 100000: the demonstrations of
  ``dream-vla-ros collect`` use seeds below ``episodes_per_task * max_attempts``, so evaluation scenes never
  were training scenes) and phrasing ``i`` (cycling) of the chosen split (``train`` or ``heldout``);
- ``--controller-interface`` chooses how the executor commands the arm: ``topic`` (JointTrajectory on
  ``/arm_controller/joint_trajectory``), ``action`` (FollowJointTrajectory goals to the arm's action server)
  or ``servo`` (JointJog velocities to a JointJog integrator that stands in for MoveIt Servo, started as an
  extra process: ``dream_vla_ros/nodes/sim/jog_integrator_node.py``). ``action`` and ``servo`` need
  ``control_msgs`` importable (here: ``eval "$(python test/control_msgs_build.py --exports)"``), and use the
  hand-over protocol around each reset: the executor is paused before ``/sim_arm/reset`` (which switches the
  controller off and on, ending its goal) and activated after it, so it restarts from the new measured state;
- per episode: an empty goal stops the policy, ``/sim_arm/reset`` starts the seeded episode and answers its
  instruction, the instruction is published as the goal, and the episode ends at the arm's ``success`` event
  or its ``truncated`` event (``max_steps`` physics steps of 12.5 ms after the controller became active,
  Meta-World's 500 by default);
- time: every node runs on the simulated arm's ``/clock`` (``use_sim_time``) at a real-time factor the host
  sustains (:mod:`dream_vla_ros.train.pacing`: chosen from measured CPU headroom, lowered and the episode run
  again after a lag event), so a slow or busy host slows the whole loop down instead of corrupting it; the
  policy's latency then counts in simulated time. ``--real-time-factor R`` fixes the factor, and
  ``--real-time-factor 1 --wall-clock`` runs on the wall clock as a robot does (latency costs wall time).
  Every episode records its factor and lag events; a result with lag events says so;
- the policy node's per-chunk profile (``profile_path``) gives the recurrent-core iterations ``k`` and the
  latency of every chunk of the episode: **latency** = chunk publication time - stamp of the camera frame it
  was computed from (transport, waiting, preprocessing, inference, publication); **inference** = the
  engine's own time (preprocessing + network + postprocessing).

``--k-sweep`` repeats the evaluation with the recurrent core fixed at k = 1, 2, 4, 8 and K_max iterations
(halting off: ``halting_delta`` 0, ``halting_k_max`` k) and with adaptive halting (the checkpoint's
defaults); each setting restarts the node graph with those policy-node parameters.

``--delay-sweep`` repeats it with each chunk's publication held back by 0, 50, 100, 200 and 300 ms of the
policy node's clock (``added_delay``, plus ``--delay-jitter``): how a slower engine, a loaded computer or a
policy across a network looks to the loop.

``--expert`` checks the ROS 2 path itself: the scripted expert of each task runs in this process (mocap
control, no rendering), and its joint-position targets are sent as one ``JointTrajectory`` (a point every
12.5 ms, ``header.stamp`` 0) on the arm's controller topic after the seeded reset; the episode succeeds when
the arm reports success. Episodes whose expert itself fails are skipped and counted; the same targets are
also replayed directly into MuJoCo for comparison.

Results: one JSON-able dict (:func:`summarize`); the Markdown report and plots are in
:mod:`dream_vla_ros.train.eval_report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import queue
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.configuration import require
from dream_vla_ros.errors import ConfigError, DreamVlaError
from dream_vla_ros.sim.tasks import MT10, PHRASING_SPLITS
from dream_vla_ros.train.eval_report import centimetres, write_outputs
from dream_vla_ros.train.pacing import LoadMeter, Pacer, PacingConfig, available_cores, host_description

DEFAULT_SEED = 100_000
CONTROLLER_INTERFACES = ("topic", "action", "servo")  # chunk_executor.controller_interface
JOG_INTEGRATOR = "dream_vla_ros.nodes.sim.jog_integrator_node"
EXPERT_GOAL = 0.95
POLICY_READY = "active: answering chunk requests"
POLICY_FAILED = "configure failed"
CONTROL_DT = 0.0125  # the simulated arm's physics step (dream_vla_ros.sim.joint_arm.CONTROL_DT)

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, ``kill``) into KeyboardInterrupt, so sessions stop their node processes
    (they run in their own process groups and would outlive this process otherwise)."""
    import signal

    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@dataclass(frozen=True)
class Halting:
    """A policy-node halting setting: ``k_max`` 0 and ``delta`` < 0 keep the checkpoint's defaults."""

    label: str = "adaptive"
    k_max: int = 0
    delta: float = -1.0

    def overrides(self) -> dict[str, Any]:
        return {"halting_k_max": self.k_max, "halting_delta": self.delta}


ADAPTIVE = Halting()


def fixed_k(k: int) -> Halting:
    """Exactly ``k`` core iterations per chunk (halting off)."""
    return Halting(label=f"k={k}", k_max=k, delta=0.0)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    model: model directory or shipped model name (unused with ``expert``).
    tasks: task names; episodes: episodes per task; seed: seed of episode 0 (episode i uses seed + i).
    phrasings: instruction split, train or heldout.
    controller_interface: how the executor commands the arm: ``topic`` (JointTrajectory on
        /<controller>/joint_trajectory), ``action`` (FollowJointTrajectory) or ``servo`` (JointJog through a
        Servo stand-in); see the module docstring.
    config: params file (name under config/ or a path) describing the graph.
    max_steps: physics steps per episode (12.5 ms each) after the controller is active.
    threads: CPU threads of the policy node's backend. device: where it runs (cpu, cuda).
    expert: replay the scripted expert's joint targets through the arm's trajectory topic instead.
    domain_id: ROS_DOMAIN_ID of the private graph (None: a random one in 120..229).
    pacing: the clock and real-time factor (see :mod:`dream_vla_ros.train.pacing`).
    added_delay / added_delay_jitter: seconds each chunk is held back (the policy node's test setting).
    """

    model: str = ""
    tasks: tuple[str, ...] = MT10
    episodes: int = 20
    seed: int = DEFAULT_SEED
    phrasings: str = "train"
    controller_interface: str = "topic"
    config: str = "sim_arm"
    max_steps: int = 500
    threads: int = 1
    device: str = "cpu"
    expert: bool = False
    domain_id: int | None = None
    pacing: PacingConfig = field(default_factory=PacingConfig)
    added_delay: float = 0.0
    added_delay_jitter: float = 0.0

    def __post_init__(self) -> None:
        require(len(self.tasks) >= 1, "tasks", "at least one task is needed")
        require(self.episodes >= 1, "episodes", f"must be >= 1, got {self.episodes}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(self.phrasings in PHRASING_SPLITS, "phrasings", f"must be one of {', '.join(PHRASING_SPLITS)}")
        require(self.controller_interface in CONTROLLER_INTERFACES, "controller_interface",
                f"must be one of {', '.join(CONTROLLER_INTERFACES)}, got {self.controller_interface!r}")
        require(not self.expert or self.controller_interface == "topic", "controller_interface",
                "the expert replay sends its targets on the arm's trajectory topic; use topic")
        require(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        require(self.expert or bool(self.model), "model", "a model directory is needed (or use the expert mode)")
        require(self.domain_id is None or 0 <= self.domain_id <= 232, "domain_id", "must be in [0, 232]")
        for name in ("added_delay", "added_delay_jitter"):
            value = getattr(self, name)
            require(math.isfinite(value) and 0.0 <= value <= 10.0, name, f"must be in [0, 10] s, got {value}")


@dataclass
class EpisodeResult:
    """One evaluated episode (``steps``: physics steps until success or truncation; ``goal_distance`` /
    ``closest_goal_distance``: the task's distance to its goal at the end / at its closest, m, see
    ``sim.joint_arm.ArmState``)."""

    task: str
    seed: int
    instruction: str
    success: bool
    steps: int
    wall_s: float
    k: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    lag_events: int = 0
    note: str = ""
    goal_distance: float | None = None
    closest_goal_distance: float | None = None
    real_time_factor: float = 1.0

    @classmethod
    def ended(cls, task: str, seed: int, instruction: str, end: dict[str, Any], wall_s: float,
              **chunks: list) -> EpisodeResult:
        """The result of an episode from its ``success`` / ``truncated`` event."""
        return cls(task, seed, instruction, end["event"] == "success", int(end["steps"]), wall_s,
                   lag_events=int(end.get("lag_events", 0)), goal_distance=end.get("goal_distance"),
                   closest_goal_distance=end.get("closest_goal_distance"),
                   real_time_factor=float(end.get("real_time_factor", 1.0)), **chunks)

    @property
    def k_mean(self) -> float | None:
        return _mean(self.k)

    @property
    def latency_ms_median(self) -> float | None:
        return _median(self.latency_ms)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["chunks"] = len(self.k)
        out["k_mean"] = self.k_mean
        out["latency_ms_median"] = self.latency_ms_median
        for key in ("k", "latency_ms", "inference_ms"):
            out.pop(key)
        return out


# -- statistics (pure) ---------------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def _quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if len(values) else None


def _histogram(values: Sequence[int]) -> dict[str, int]:
    return {str(k): n for k, n in sorted(Counter(int(v) for v in values).items())}


def _group(episodes: Sequence[EpisodeResult]) -> dict[str, Any]:
    k = [v for e in episodes for v in e.k]
    latency = [v for e in episodes for v in e.latency_ms]
    inference = [v for e in episodes for v in e.inference_ms]
    successes = [e for e in episodes if e.success]
    failures = [e for e in episodes if not e.success]
    return {
        "success_rate": len(successes) / len(episodes) if episodes else None,
        "episodes": len(episodes),
        "successes": len(successes),
        "steps_mean": _mean([e.steps for e in episodes]),
        "steps_to_success_mean": _mean([e.steps for e in successes]),
        "failed_goal_distance_median": _median([e.goal_distance for e in failures if e.goal_distance is not None]),
        "failed_closest_goal_distance_median": _median(
            [e.closest_goal_distance for e in failures if e.closest_goal_distance is not None]),
        "k_mean": _mean(k),
        "k_histogram": _histogram(k),
        "latency_ms_median": _median(latency),
        "latency_ms_mean": _mean(latency),
        "latency_ms_p90": _quantile(latency, 0.9),
        "inference_ms_median": _median(inference),
        "inference_ms_mean": _mean(inference),
        "chunks": len(k),
    }


def summarize(episodes: Sequence[EpisodeResult], config: EvalConfig, halting: Halting = ADAPTIVE,
              **extra: Any) -> dict[str, Any]:
    """Per-task and overall statistics of ``episodes`` in the JSON layout of ``dream-vla-ros eval --json``."""
    tasks = {task: _group([e for e in episodes if e.task == task]) for task in config.tasks}
    rates = [t["success_rate"] for t in tasks.values() if t["success_rate"] is not None]
    overall = _group(episodes)
    return {
        "mode": "expert" if config.expert else "policy",
        "model": config.model,
        "controller_interface": config.controller_interface,
        "phrasings": config.phrasings,
        "seed": config.seed,
        "seeds": [config.seed, config.seed + config.episodes - 1],
        "episodes_per_task": config.episodes,
        "max_steps": config.max_steps,
        "halting": dataclasses.asdict(halting),
        "tasks": tasks,
        "mean_success": float(np.mean(rates)) if rates else None,
        "k_mean": overall["k_mean"],
        "k_histogram": overall["k_histogram"],
        "latency_ms_median": overall["latency_ms_median"],
        "latency_ms_mean": overall["latency_ms_mean"],
        "latency_ms_p90": overall["latency_ms_p90"],
        "inference_ms_median": overall["inference_ms_median"],
        "inference_ms_mean": overall["inference_ms_mean"],
        "steps_mean": overall["steps_mean"],
        "pacing": config.pacing.mode,
        "real_time_factor": min((e.real_time_factor for e in episodes), default=config.pacing.initial_factor),
        "real_time_factors": sorted({e.real_time_factor for e in episodes}, reverse=True),
        "lag_events": sum(e.lag_events for e in episodes),
        "episodes_with_lag": sum(e.lag_events > 0 for e in episodes),
        "added_delay_ms": 1e3 * config.added_delay,
        "added_delay_jitter_ms": 1e3 * config.added_delay_jitter,
        "host": host_description(),
        **extra,
        "episodes": [e.as_dict() for e in episodes],
    }


# -- the policy node's chunk profile -------------------------------------------------------------------------
class ChunkProfile:
    """Reads the JSON lines the policy node appends per chunk (``profile_path``), incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._records: list[dict[str, Any]] = []

    def _read(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open() as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind("\n") + 1]
        self._offset += len(complete.encode())
        for line in complete.splitlines():
            try:
                self._records.append(json.loads(line))
            except json.JSONDecodeError:
                continue

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        """Records of chunks computed from observations stamped in [start, end] (and drop older ones)."""
        self._read()
        chosen = [r for r in self._records if start <= float(r.get("stamp", -1.0)) <= end]
        self._records = [r for r in self._records if float(r.get("stamp", -1.0)) > end]
        return chosen


def chunk_statistics(records: Sequence[dict[str, Any]]) -> tuple[list[int], list[float], list[float]]:
    """(iterations k, latency ms, inference ms) per chunk record."""
    k = [int(r["iterations"]) for r in records if "iterations" in r]
    latency = [(float(r["published"]) - float(r["stamp"])) * 1e3 for r in records if "published" in r]
    inference = [
        sum(float(r.get(f"{stage}_ms", 0.0)) for stage in ("preprocessing", "engine", "postprocessing"))
        for r in records
    ]
    return k, latency, inference


# -- the ROS 2 side ------------------------------------------------------------------------------------------
def _topic(value: str, default: str) -> str:
    value = value or default
    return value if value.startswith("/") else f"/{value}"


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
        log: Log = _stderr,
    ) -> None:
        from dream_vla_ros.bringup import describe
        from dream_vla_ros.configuration import node_section, read_yaml

        self.bringup = describe(config, overrides=overrides, only=only)
        self.domain_id = random.randrange(120, 230) if domain_id is None else domain_id
        self.log = log
        self._echo = echo
        names = {n.executable: n for n in self.bringup.nodes}
        if "sim_arm" not in names:
            raise ConfigError(f"{self.bringup.config_file}: the graph has no sim_arm node")
        sim = names["sim_arm"]
        prefix = f"/{sim.namespace.strip('/')}" if sim.namespace else ""
        self.sim_name = f"{prefix}/{sim.name}"
        data = read_yaml(self.bringup.config_file)
        sim_values = {**node_section(data, "sim_arm", str(self.bringup.config_file)), **sim.parameters}
        controller = _topic(str(sim_values.get("controller", "arm_controller")), "arm_controller")
        self.trajectory_topic = f"{prefix}{controller}/joint_trajectory"
        self.camera_topic = str(next(iter(sim_values.get("camera_topics", ["/camera/image_raw"]))))
        self.has_policy = "policy_node" in names
        goal = "/goal"
        if self.has_policy:
            policy = names["policy_node"]
            policy_ns = f"/{policy.namespace.strip('/')}" if policy.namespace else ""
            self.goal_status_topic = f"{policy_ns}/{policy.name}/goal_status"
            policy_values = {**node_section(data, "policy_node", str(self.bringup.config_file)), **policy.parameters}
            goal = _topic(str(policy_values.get("goal_topic", "goal")), "goal")
        self.goal_topic = goal
        self.executor_name = ""
        self.controller_interface = "topic"
        if "chunk_executor" in names:
            executor = names["chunk_executor"]
            values = {**node_section(data, "chunk_executor", str(self.bringup.config_file)), **executor.parameters}
            ns = f"/{executor.namespace.strip('/')}" if executor.namespace else ""
            self.executor_name = f"{ns}/{executor.name}"
            self.controller_interface = str(values.get("controller_interface", "topic"))
            servo = values.get("servo") if isinstance(values.get("servo"), dict) else {}
            self.jog_topic = str(values.get("servo.command_topic", servo.get("command_topic",
                                                                                "/servo_node/delta_joint_cmds")))
        self.joint_states_topic = str(sim_values.get("joint_states_topic", "/joint_states"))
        self.processes = None
        self._context = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._verdicts: queue.Queue[dict[str, Any]] = queue.Queue()
        self._frame_sink: Callable[[Any], None] | None = None
        self._frame_sub = None
        self._spinner: threading.Thread | None = None
        self._sim_time: float | None = None
        self.wait_failure = ""  # why the last wait_episode_end gave up

    # -- lifetime --------------------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> RosSession:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String

        from dream_vla_ros.nodes import qos
        from dream_vla_ros.process_group import ProcessGroup, start_bringup

        env = {"ROS_DOMAIN_ID": str(self.domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
               **self.bringup.environment}
        for key, value in env.items():
            if key != "ROS_DOMAIN_ID":
                os.environ.setdefault(key, value)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        if self.controller_interface != "topic" and importlib.util.find_spec("control_msgs") is None:
            raise ConfigError(
                f"controller_interface {self.controller_interface!r} needs control_msgs: on a robot install "
                "ros-<distro>-control-msgs; in this venv build the test copy and export its paths: "
                'eval "$(python test/control_msgs_build.py --exports)"'
            )
        self.processes = ProcessGroup(echo=self._echo)
        start_bringup(self.processes, self.bringup, env)
        if self.controller_interface == "servo":  # the MoveIt Servo stand-in between executor and arm
            from dream_vla_ros.process_group import node_argv

            args = ["--ros-args", "-p", f"command_topic:={self.jog_topic}", "-p",
                    f"output_topic:={self.trajectory_topic}", "-p", f"joint_states_topic:={self.joint_states_topic}"]
            self.processes.start("servo_node", node_argv(JOG_INTEGRATOR, args), {**self.bringup.environment, **env})
        self._context = rclpy.Context()
        rclpy.init(context=self._context, domain_id=self.domain_id)
        self.node = rclpy.create_node(f"dream_vla_eval_{os.getpid()}", context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._goal_pub = self.node.create_publisher(String, self.goal_topic, qos.GOAL)
        self.node.create_subscription(String, f"{self.sim_name}/episode", self._on_event, qos.EVENTS)
        if self.has_policy:
            self.node.create_subscription(String, self.goal_status_topic, self._on_verdict, qos.GOAL)
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        self._reset_client = self.node.create_client(Trigger, f"{self.sim_name}/reset")
        self._executor_clients = {
            name: self.node.create_client(Trigger, f"{self.executor_name}/{name}") for name in ("pause", "activate")
        } if self.executor_name else {}
        self._params_client = self.node.create_client(SetParameters, f"{self.sim_name}/set_parameters")
        from rclpy.qos import QoSProfile
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState

        from dream_vla_ros.nodes.polling import PolledInputs

        polled = PolledInputs(self.node, "polled")  # read when asked: no executor wake-ups at 80 Hz
        self._clock = polled.subscribe(Clock, "/clock", QoSProfile(depth=1))
        self._joint_states = polled.subscribe(JointState, self.joint_states_topic, qos.SENSOR)
        self._positions: np.ndarray | None = None
        self._spinner = threading.Thread(target=self._spin, name="eval-client", daemon=True)
        self._spinner.start()
        deadline = time.monotonic() + timeout
        self._wait(self._reset_client.service_is_ready, deadline, f"service {self.sim_name}/reset")
        self._wait(self._params_client.service_is_ready, deadline, f"service {self.sim_name}/set_parameters")
        if self.has_policy:
            self._wait(self._policy_ready, deadline, "the policy node to become active")
        return self

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

    # -- health ----------------------------------------------------------------------------------------------
    def _check_alive(self) -> None:
        for name, proc in self.processes.processes.items():
            if not proc.running:
                raise DreamVlaError(f"{name} exited with {proc.popen.poll()}; its last output:\n"
                                    + "\n".join(self.processes.output(name).splitlines()[-25:]))

    def _policy_ready(self) -> bool:
        output = self.processes.output("policy_node")
        if POLICY_FAILED in output:
            line = next(ln for ln in output.splitlines() if POLICY_FAILED in ln)
            raise DreamVlaError(f"the policy node could not load the model: {line.strip()}")
        return POLICY_READY in output

    def _wait(self, condition: Callable[[], Any], deadline: float, what: str) -> Any:
        while True:
            value = condition()
            if value:
                return value
            self._check_alive()
            if time.monotonic() > deadline:
                raise DreamVlaError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def outputs(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {name} ---\n" + "\n".join(self.processes.output(name).splitlines()[-lines:])
            for name in self.processes.processes
        )

    # -- driving the arm -------------------------------------------------------------------------------------
    def _on_event(self, msg) -> None:
        with contextlib.suppress(json.JSONDecodeError):
            self._events.put(json.loads(msg.data))

    def _call(self, client, request, timeout: float, what: str):
        future = client.call_async(request)
        self._wait(future.done, time.monotonic() + timeout, what)
        return future.result()

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
                self._check_alive()
                continue
            if verdict.get("goal") == text[:200]:
                return verdict
        raise DreamVlaError(f"no verdict on the goal {text[:60]!r} within {timeout:.0f} s ({self.goal_status_topic})")

    def _set_sim_parameters(self, values: dict[str, Any]) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        response = self._call(self._params_client, request, 10.0, "the arm's set_parameters")
        for name, result in zip(values, response.results, strict=True):
            if not result.successful:
                raise ConfigError(f"sim_arm rejected {name}={values[name]!r}: {result.reason}")

    def reset(self, task: str, seed: int, split: str = "train", index: int = 0, timeout: float = 60.0) -> dict:
        """Start a seeded episode on the arm; returns its reset event (with ``instruction`` and ``episode``)."""
        from std_srvs.srv import Trigger

        self._set_sim_parameters({"task": task, "seed": int(seed), "phrasing_split": split,
                                  "phrasing_index": int(index)})
        answer = self._call(self._reset_client, Trigger.Request(), timeout, f"{self.sim_name}/reset")
        if not answer.success:
            raise DreamVlaError(f"{self.sim_name}/reset failed: {answer.message}")
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
        """Call the chunk executor's ``~/pause`` or ``~/activate`` (the hand-over services); returns the answer."""
        from std_srvs.srv import Trigger

        client = self._executor_clients[service]
        self._wait(client.service_is_ready, time.monotonic() + timeout, f"{self.executor_name}/{service}")
        answer = self._call(client, Trigger.Request(), timeout, f"{self.executor_name}/{service}")
        if not answer.success:
            raise DreamVlaError(f"{self.executor_name}/{service} failed: {answer.message}")
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
                self._check_alive()
                event = None
            if event is not None:
                if event.get("episode") == episode and event.get("event") in ("success", "truncated"):
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

        publisher = self.node.create_publisher(JointTrajectory, self.trajectory_topic, qos.CONTROLLER)
        self._wait(lambda: publisher.get_subscription_count() > 0, time.monotonic() + 30.0,
                   f"a subscriber on {self.trajectory_topic}")
        return publisher

    def record_frames(self, sink: Callable[[Any], None] | None) -> None:
        """Send every camera frame to ``sink`` (None stops); subscribes on first use."""
        if sink is not None and self._frame_sub is None:
            from sensor_msgs.msg import Image

            from dream_vla_ros.nodes import qos

            self._frame_sub = self.node.create_subscription(Image, self.camera_topic, self._on_frame, qos.SENSOR)
        self._frame_sink = sink

    def _on_frame(self, msg) -> None:
        sink = self._frame_sink
        if sink is not None:
            sink(msg)


# -- runners -------------------------------------------------------------------------------------------------
def _episode_plan(config: EvalConfig) -> list[tuple[str, int, int]]:
    """(task, seed, phrasing index) of every episode, task by task (one scene build per task)."""
    return [(task, config.seed + i, i) for task in config.tasks for i in range(config.episodes)]


def _episode_timeout(config: EvalConfig, real_time_factor: float = 1.0) -> float:
    """Wall seconds to wait for an episode's end event at ``real_time_factor`` (on ``/clock``: seconds of a
    simulation standing still, see :meth:`RosSession.wait_episode_end`)."""
    return config.max_steps * CONTROL_DT * 2.0 / min(real_time_factor, 1.0) + 15.0


def last_step_time(start_event: dict[str, Any]) -> float | None:
    """The arm's clock time of an episode's last step (its start stamp + ``max_steps`` physics steps), or None
    when the episode has no step limit."""
    max_steps = int(start_event.get("max_steps") or 0)
    return float(start_event["stamp"]) + max_steps * CONTROL_DT if max_steps > 0 else None


def _no_end_note(session: RosSession) -> str:
    return session.wait_failure or "no end event"


def run_policy_episode(session: RosSession, config: EvalConfig, profile: ChunkProfile, task: str, seed: int,
                       index: int, on_start: Callable[[dict], None] | None = None,
                       real_time_factor: float = 1.0) -> EpisodeResult:
    """One closed-loop episode: stop, reset, goal, wait for success or truncation, stop (with the action and
    servo interfaces: pause the executor before the reset and activate it after, see the module docstring).
    The chunks counted are those computed from observations stamped during the episode (the arm's clock)."""
    handover = session.controller_interface != "topic" and bool(session.executor_name)
    session.set_goal("")
    if handover:
        session.executor_call("pause")
    event = session.reset(task, seed, config.phrasings, index)
    if handover:
        session.executor_call("activate")
    if on_start is not None:
        on_start(event)
    started = time.monotonic()
    session.set_goal(event["instruction"])
    end = session.wait_episode_end(event["episode"], _episode_timeout(config, real_time_factor),
                                   last_step_time(event))
    session.set_goal("")
    k, latency, inference = chunk_statistics(
        profile.between(float(event["stamp"]), float(end["stamp"]) if end else math.inf))
    if end is None:
        return EpisodeResult(task, seed, event["instruction"], False, config.max_steps, time.monotonic() - started,
                             k, latency, inference, note=_no_end_note(session), real_time_factor=real_time_factor)
    return EpisodeResult.ended(task, seed, event["instruction"], end, time.monotonic() - started, k=k,
                               latency_ms=latency, inference_ms=inference)


def _checkpoint_model(model: str | Path) -> dict[str, Any]:
    """The ``model`` section of a checkpoint's config.json (no torch)."""
    from dream_vla_ros.paths import resolve_model
    from dream_vla_ros.policy.config import read_checkpoint_config

    return dict(read_checkpoint_config(resolve_model(model)).get("model", {}))


def checkpoint_cameras(model: str | Path) -> tuple[str, ...]:
    """The cameras a checkpoint reads, in its token order (``vision.cameras`` in its config.json)."""
    return tuple(_checkpoint_model(model).get("vision", {}).get("cameras", ()))


def camera_wiring(cameras: Sequence[str]) -> tuple[list[str], list[str]]:
    """Simulated-arm cameras and their topics (``/camera/<name>/image_raw``) for a model reading ``cameras``."""
    from dream_vla_ros.sim.joint_arm import CAMERAS

    unknown = [c for c in cameras if c not in CAMERAS]
    if not cameras or unknown:
        raise ConfigError(f"model: it reads cameras {list(cameras)}; the simulated arm has {', '.join(CAMERAS)}")
    return list(cameras), [f"/camera/{name}/image_raw" for name in cameras]


def policy_overrides(config: EvalConfig, halting: Halting, profile_path: Path) -> dict[str, dict[str, Any]]:
    """Node parameters of an evaluation graph: the model, its halting, and the arm's cameras wired to it."""
    cameras, topics = camera_wiring(checkpoint_cameras(config.model))
    overrides = {
        "policy_node": {"model": str(config.model), "device": config.device, "threads": config.threads,
                        "profile_path": str(profile_path), "camera_topics": topics, **halting.overrides(),
                        "added_delay": config.added_delay, "added_delay_jitter": config.added_delay_jitter},
        "sim_arm": {"task": config.tasks[0], "max_steps": config.max_steps, "phrasing_split": config.phrasings,
                    "cameras": cameras, "camera_topics": topics},
        "chunk_executor": {},
    }
    if config.controller_interface != "topic":
        overrides["chunk_executor"]["controller_interface"] = config.controller_interface
    return clock_overrides(config.pacing, overrides)


def clock_overrides(pacing: PacingConfig, overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``overrides`` with every node on the arm's /clock (unless wall-clock) and the arm's first pace."""
    sim_time = not pacing.wall_clock
    out = {node: {**values, "use_sim_time": sim_time} for node, values in overrides.items()}
    out["sim_arm"] = {**out.get("sim_arm", {"use_sim_time": sim_time}), "real_time_factor": pacing.initial_factor}
    return out


class PacedEpisodes:
    """Runs episodes on a session at a pace the host sustains (:class:`~dream_vla_ros.train.pacing.Pacer`):
    measures the graph's CPU during each episode, lowers the arm's real-time factor when headroom is short,
    and runs an episode again after a lag event (auto pacing; the discarded runs are kept in ``retries``)."""

    def __init__(self, session: RosSession, config: EvalConfig, profile: ChunkProfile, log: Log = _stderr) -> None:
        self.session = session
        self.config = config
        self.profile = profile
        self.log = log
        self.pacer = Pacer(config.pacing, available_cores())
        self.retries: list[dict[str, Any]] = []
        self._meter = session.load_meter()

    def run(self, task: str, seed: int, index: int,
            on_start: Callable[[dict], None] | None = None) -> EpisodeResult:
        attempt = 0
        while True:
            factor = self.pacer.factor

            def started(event: dict, first: bool = attempt == 0) -> None:
                self._meter.begin()  # the episode itself: a reset's scene build is not the loop's load
                if on_start is not None and first:
                    on_start(event)

            result = run_policy_episode(self.session, self.config, self.profile, task, seed, index,
                                        on_start=started, real_time_factor=factor)
            sample = self._meter.end(result.steps * CONTROL_DT)
            decision = self.pacer.after_episode(sample, result.lag_events, attempt)
            if decision.reason:
                self.log(f"pace: {task} seed {seed}: {decision.reason}")
            if decision.factor != factor:
                self.session.set_real_time_factor(decision.factor)
            if not decision.retry:
                return result
            self.retries.append({"task": task, "seed": seed, "real_time_factor": factor,
                                 "lag_events": result.lag_events, "success": result.success})
            attempt += 1


def _episode_line(n: int, total: int, result: EpisodeResult) -> str:
    if result.success:
        outcome = f"success in {result.steps} steps"
    elif result.goal_distance is not None and result.closest_goal_distance is not None:
        outcome = (f"failed ({result.steps} steps, {centimetres(result.goal_distance)} cm from the goal, "
                   f"closest {centimetres(result.closest_goal_distance)} cm)")
    else:
        outcome = f"failed ({result.steps} steps)"
    k = f", k {result.k_mean:.1f}" if result.k else ""
    latency = f", {result.latency_ms_median:.0f} ms" if result.latency_ms else ""
    notes = [result.note] if result.note else []
    if result.lag_events:
        notes.append(f"{result.lag_events} lag event(s): does not count")
    note = "".join(f" [{text}]" for text in notes)
    pace = f", real-time factor {result.real_time_factor:g}" if result.real_time_factor != 1.0 else ""
    return f"[{n}/{total}] {result.task} seed {result.seed}: {outcome}{k}{latency}{pace}{note}"


def evaluate_policy(config: EvalConfig, halting: Halting, work_dir: Path, log: Log = _stderr,
                    echo: Any = None) -> dict[str, Any]:
    """Closed-loop evaluation of ``config.model`` with one halting setting; returns :func:`summarize`'s dict."""
    from dream_vla_ros.paths import resolve_model

    model = resolve_model(config.model)
    if not (model / "config.json").is_file():
        raise ConfigError(f"model: {model} is not a model directory (no config.json)")
    config = dataclasses.replace(config, model=str(model))
    work_dir.mkdir(parents=True, exist_ok=True)
    profile_path = work_dir / f"policy_profile_{halting.label.replace('=', '')}.jsonl"
    profile_path.unlink(missing_ok=True)
    plan = _episode_plan(config)
    episodes: list[EpisodeResult] = []
    started = time.monotonic()
    log(f"evaluating {model} ({halting.label}) on {len(config.tasks)} task(s) x {config.episodes} episode(s), "
        f"{config.phrasings} phrasings, seeds {config.seed}..{config.seed + config.episodes - 1}")
    session = RosSession(config.config, overrides=policy_overrides(config, halting, profile_path),
                         domain_id=config.domain_id, echo=echo, log=log)
    runner = None
    try:
        session.start()
        runner = PacedEpisodes(session, config, ChunkProfile(profile_path), log)
        for n, (task, seed, index) in enumerate(plan, 1):
            result = runner.run(task, seed, index)
            episodes.append(result)
            log(_episode_line(n, len(plan), result))
    except DreamVlaError:
        if session.processes is not None:
            log(session.outputs())
        raise
    finally:
        session.close()
    return summarize(episodes, config, halting, wall_s=time.monotonic() - started,
                     lag_retries=runner.retries if runner else [])


def checkpoint_k_max(model: str | Path) -> int:
    """The checkpoint's default cap on core iterations (``halting.k_max`` in its config.json)."""
    return int(_checkpoint_model(model).get("halting", {}).get("k_max", 12))


def sweep_settings(k_max: int) -> list[Halting]:
    """Fixed k = 1, 2, 4, 8, K_max (those <= K_max, no repeats) and adaptive halting, in that order."""
    ks = sorted({k for k in (1, 2, 4, 8) if k <= k_max} | {k_max})
    return [fixed_k(k) for k in ks] + [ADAPTIVE]


def evaluate_k_sweep(config: EvalConfig, work_dir: Path, log: Log = _stderr, echo: Any = None) -> dict[str, Any]:
    """:func:`evaluate_policy` for every setting of :func:`sweep_settings`; the adaptive result on top, with
    a ``k_sweep`` list of every setting's summary."""
    rows, adaptive = [], None
    for halting in sweep_settings(checkpoint_k_max(config.model)):
        result = evaluate_policy(config, halting, work_dir, log, echo)
        rows.append({
            "label": halting.label, "k_max": halting.k_max, "delta": halting.delta,
            "mean_success": result["mean_success"], "k_mean": result["k_mean"],
            "latency_ms_median": result["latency_ms_median"], "latency_ms_mean": result["latency_ms_mean"],
            "inference_ms_median": result["inference_ms_median"], "inference_ms_mean": result["inference_ms_mean"],
            "real_time_factors": result["real_time_factors"], "lag_events": result["lag_events"],
            "tasks": {t: v["success_rate"] for t, v in result["tasks"].items()},
        })
        if halting == ADAPTIVE:
            adaptive = result
    adaptive["k_sweep"] = rows
    return adaptive


DELAY_SWEEP_MS = (0.0, 50.0, 100.0, 200.0, 300.0)


def evaluate_delay_sweep(config: EvalConfig, work_dir: Path, delays_ms: Sequence[float] = DELAY_SWEEP_MS,
                         log: Log = _stderr, echo: Any = None) -> dict[str, Any]:
    """:func:`evaluate_policy` with each chunk held back by every delay of ``delays_ms`` (the policy node's
    ``added_delay``, jitter from ``config``); the first setting's result on top, with a ``delay_sweep`` list."""
    rows, first = [], None
    for delay_ms in delays_ms:
        setting = dataclasses.replace(config, added_delay=delay_ms / 1e3)
        log(f"delay sweep: +{delay_ms:g} ms")
        setting_dir = work_dir / f"delay_{delay_ms:g}ms"
        result = evaluate_policy(setting, ADAPTIVE, setting_dir, log, echo)
        write_outputs(result, setting_dir)  # each setting's own results, as it ends
        rows.append({
            "added_delay_ms": delay_ms, "mean_success": result["mean_success"],
            "latency_ms_median": result["latency_ms_median"], "k_mean": result["k_mean"],
            "inference_ms_median": result["inference_ms_median"], "real_time_factors": result["real_time_factors"],
            "lag_events": result["lag_events"], "episodes_with_lag": result["episodes_with_lag"],
            "tasks": {t: v["success_rate"] for t, v in result["tasks"].items()},
        })
        first = first or result
    first["delay_sweep"] = rows
    first["lag_events"] = sum(r["lag_events"] for r in rows)
    first["episodes_with_lag"] = sum(r["episodes_with_lag"] for r in rows)
    return first


def expert_trajectory(targets: np.ndarray):
    """The expert's joint targets [T, 8] as one JointTrajectory: a point every physics step, ``header.stamp`` 0
    (start on receipt), as a teleoperation tool would stream them."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from dream_vla_ros.nodes.conversions import seconds_to_duration
    from dream_vla_ros.sim.joint_arm import JOINT_NAMES

    msg = JointTrajectory(joint_names=list(JOINT_NAMES))
    msg.points = [JointTrajectoryPoint(positions=row, time_from_start=seconds_to_duration((i + 1) * CONTROL_DT))
                  for i, row in enumerate(np.asarray(targets, dtype=float).tolist())]
    return msg


def evaluate_expert(config: EvalConfig, log: Log = _stderr, echo: Any = None) -> dict[str, Any]:
    """Replay the scripted expert's joint targets through the arm's trajectory topic (see the module doc)."""
    import dream_vla_ros.sim  # noqa: F401 - sets MUJOCO_GL before mujoco loads
    from dream_vla_ros.sim.expert import replay, run_expert
    from dream_vla_ros.sim.joint_arm import JointArm, SimArmConfig

    plan = _episode_plan(config)
    episodes: list[EpisodeResult] = []
    expert_failures: Counter[str] = Counter()
    direct: Counter[str] = Counter()
    started = time.monotonic()
    arm = JointArm(SimArmConfig(task=config.tasks[0]))
    overrides = clock_overrides(config.pacing, {"sim_arm": {"task": config.tasks[0], "max_steps": config.max_steps,
                                                            "phrasing_split": config.phrasings}})
    session = RosSession(config.config, overrides=overrides, only=("sim_arm",), domain_id=config.domain_id,
                         echo=echo, log=log)
    try:
        session.start()
        publisher = session.trajectory_publisher()
        for n, (task, seed, index) in enumerate(plan, 1):
            demo = run_expert(arm, task, seed, max_steps=config.max_steps)
            if not demo.success:
                expert_failures[task] += 1
                log(f"[{n}/{len(plan)}] {task} seed {seed}: the scripted expert failed; skipped")
                continue
            direct[task] += int(replay(arm, task, seed, demo.targets).success)
            event = session.reset(task, seed, config.phrasings, index)
            started_episode = time.monotonic()
            publisher.publish(expert_trajectory(demo.targets))
            end = session.wait_episode_end(event["episode"], _episode_timeout(config, config.pacing.initial_factor),
                                           last_step_time(event))
            wall_s = time.monotonic() - started_episode
            result = EpisodeResult.ended(task, seed, event["instruction"], end, wall_s) if end else EpisodeResult(
                task, seed, event["instruction"], False, config.max_steps, wall_s, note=_no_end_note(session))
            episodes.append(result)
            log(_episode_line(n, len(plan), result) + f" (expert {demo.steps_to_success} steps)")
    except DreamVlaError:
        if session.processes is not None:
            log(session.outputs())
        raise
    finally:
        session.close()
        arm.close()
    summary = summarize(episodes, config, wall_s=time.monotonic() - started)
    for task, stats in summary["tasks"].items():
        stats["expert_failures"] = expert_failures[task]
        stats["direct_replay_success_rate"] = direct[task] / stats["episodes"] if stats["episodes"] else None
    replayed = len(episodes)
    summary["replay_success"] = sum(e.success for e in episodes) / replayed if replayed else None
    summary["replayed_episodes"] = replayed
    summary["expert_failures"] = sum(expert_failures.values())
    summary["goal"] = EXPERT_GOAL
    return summary
