"""Scripted-expert demonstrations recorded **through ROS 2**: the simulation's stand-in for teleoperation.

A robot team records demonstrations as rosbag2 episodes (``dream-vla-ros record``) and builds a dataset from the
bags (``dream-vla-ros dataset build``). This module produces the same bags on the simulated arm, so that path can
be measured against the demonstrations ``dream-vla-ros collect`` writes straight from MuJoCo:

- the sim_arm node (``config/sim_arm.yaml``) and the recorder node (``config/recorder.yaml``) run as processes in
  a private ROS domain;
- demonstration ``k`` of a task tries the same seeds as ``collect`` (:func:`dream_vla_ros.sim.collect.job_seeds`)
  with train phrasing ``k``; the scripted expert runs in this process (mocap control, no rendering) and its
  joint-position targets go to the arm as one JointTrajectory on its controller topic, as a teleoperation tool
  would send them;
- per attempt: seeded reset of the arm, the instruction published on the goal topic and set on the recorder,
  ``~/start``, ``idle`` s of the arm holding still (the dataset builder trims it), the trajectory, and after the
  arm's ``success`` event ``settle`` s more, then ``~/stop`` (kept); a truncated episode is discarded
  (``~/discard``) and the next seed is tried.

Everything the model later learns from went over the wire: camera frames, joint states and the commanded
trajectory as the recorder received them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_vla_ros.configuration import require, write_params_file
from dream_vla_ros.errors import DreamVlaError
from dream_vla_ros.evaluation.session import RECORDER_TRIGGERS, SET_PARAMETERS, RosSession
from dream_vla_ros.sim.collect import CollectConfig, job_seeds, make_jobs

GRAPH_FILE = "record_graph.yaml"


@dataclass(frozen=True)
class RosDemoConfig:
    """What to record and where.

    out: recordings directory (the recorder's ``out_dir``; the node graph's params file is written there too).
    collect: tasks, demonstrations per task, first seed and attempts (as ``dream-vla-ros collect``).
    image_size: square camera image (px); cameras: the sim_arm cameras recorded (``/camera/<name>/image_raw``).
    idle: s recorded before the trajectory starts; settle: s recorded after the success event.
    max_steps: physics steps before an episode is truncated (and discarded).
    domain_id: ROS_DOMAIN_ID of the private graph (None: a random one in 120..229).
    """

    out: str
    collect: CollectConfig = field(default_factory=CollectConfig)
    image_size: int = 96
    cameras: tuple[str, ...] = ("corner",)
    idle: float = 0.2
    settle: float = 0.3
    max_steps: int = 500
    domain_id: int | None = None

    def __post_init__(self) -> None:
        require(bool(self.out), "out", "a recordings directory is needed")
        require(16 <= self.image_size <= 1024, "image_size", f"must be in [16, 1024], got {self.image_size}")
        for name in ("idle", "settle"):
            require(0.0 <= getattr(self, name) <= 10.0, name, f"must be in [0, 10] s, got {getattr(self, name)}")
        require(self.max_steps >= 10, "max_steps", f"must be >= 10, got {self.max_steps}")


def write_graph(config: RosDemoConfig) -> Path:
    """The params file of the graph: sim_arm (config/sim_arm.yaml, resized) and the recorder (config/recorder.yaml)."""
    from dream_vla_ros.configuration import node_section, read_yaml
    from dream_vla_ros.evaluation.graph import camera_wiring
    from dream_vla_ros.paths import config_dir

    first = config.collect.tasks[0]
    sim = node_section(read_yaml(config_dir() / "sim_arm.yaml"), "sim_arm")
    cameras, topics = camera_wiring(config.cameras)
    sim.update(task=first, cameras=cameras, camera_topics=topics, width=config.image_size, height=config.image_size,
               max_steps=config.max_steps)
    recorder = node_section(read_yaml(config_dir() / "recorder.yaml"), "recorder")
    recorder.update(out_dir=str(Path(config.out).resolve()), camera_topics=topics, camera_names=cameras)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    return write_params_file(out / GRAPH_FILE, {"sim_arm": {"ros__parameters": sim},
                                                "recorder": {"ros__parameters": recorder}})


class RecorderClient:
    """The recorder node's services and parameters, called from a :class:`RosSession`'s client node."""

    def __init__(self, session: RosSession) -> None:
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        self.session, self.node_name = session, session.graph.recorder
        self._triggers = {name: session.node.create_client(Trigger, f"{self.node_name}/{name}")
                          for name in RECORDER_TRIGGERS}
        self._parameters = session.node.create_client(SetParameters, f"{self.node_name}/{SET_PARAMETERS}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        for client in (*self._triggers.values(), self._parameters):
            self.session.wait(client.service_is_ready, timeout, f"service {client.srv_name}")

    def label(self, task: str, text: str) -> None:
        """Set the task and instruction of the next episode."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter("task", value=task).to_parameter_msg(),
                                                    Parameter("instruction", value=text).to_parameter_msg()])
        results = self.session.call(self._parameters, request, 10.0).results
        refused = [r.reason for r in results if not r.successful]
        if refused:
            raise DreamVlaError(f"the recorder refused the episode label: {refused}")

    def trigger(self, name: str) -> dict[str, Any]:
        """Call ``~/start``, ``~/stop`` or ``~/discard``; returns the recorder's JSON answer."""
        from std_srvs.srv import Trigger

        answer = self.session.call(self._triggers[name], Trigger.Request(), 30.0)
        if not answer.success:
            raise DreamVlaError(f"{self.node_name}/{name} refused: {answer.message}")
        return json.loads(answer.message)


def record_expert_demos(config: RosDemoConfig, log: Any = print, progress: bool = True) -> dict[str, Any]:
    """Record the demonstrations of ``config`` (see the module docstring); returns a summary."""
    from tqdm import tqdm

    from dream_vla_ros.evaluation.episodes import expert_trajectory, last_step_time
    from dream_vla_ros.sim.expert import run_expert
    from dream_vla_ros.sim.joint_arm import CONTROL_DT, JointArm, SimArmConfig

    jobs = make_jobs(config.collect)
    arm = JointArm(SimArmConfig(task=config.collect.tasks[0]))
    session = RosSession(write_graph(config), domain_id=config.domain_id, log=log)
    counts: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []
    started = time.monotonic()
    bar = tqdm(total=len(jobs), unit="demo", disable=not progress, dynamic_ncols=True)
    try:
        session.start()
        recorder = RecorderClient(session)
        recorder.wait_ready()
        publisher = session.trajectory_publisher()
        for job in jobs:
            for seed in job_seeds(config.collect, job):
                counts["attempts"] += 1
                demo = run_expert(arm, job.task, seed, max_steps=config.max_steps,
                                  hold_steps=config.collect.hold_steps)
                if not demo.success:
                    counts["expert_failures"] += 1
                    continue
                event = session.reset(job.task, seed, "train", job.demo)
                session.set_goal(event["instruction"])
                recorder.label(job.task, event["instruction"])
                recorder.trigger("start")
                time.sleep(config.idle)
                publisher.publish(expert_trajectory(demo.targets))
                end = session.wait_episode_end(event["episode"], config.max_steps * CONTROL_DT + 30.0,
                                               last_step_time(event))
                if end is None or end["event"] != "success":
                    recorder.trigger("discard")
                    counts["replay_failures"] += 1
                    continue
                time.sleep(config.settle)
                stop = recorder.trigger("stop")
                kept.append({"task": job.task, "seed": seed, "instruction": event["instruction"],
                             "episode": stop["path"], "steps": int(end["steps"]), "counts": stop.get("counts", {})})
                break
            else:
                counts["missing"] += 1
            bar.set_postfix(task=job.task, kept=len(kept), attempts=counts["attempts"], refresh=False)
            bar.update(1)
        session.check_alive()
    finally:
        bar.close()
        codes = session.close()
        arm.close()
    if codes.get("recorder") != 0:
        raise DreamVlaError(f"the recorder exited with {codes['recorder']}: its last episode may be incomplete")
    return {"out": str(Path(config.out)), "kept": len(kept), "jobs": len(jobs), **counts,
            "seconds": time.monotonic() - started, "episodes": kept}
