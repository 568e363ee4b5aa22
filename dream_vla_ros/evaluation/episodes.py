"""Episodes on a :class:`~dream_vla_ros.evaluation.session.RosSession`: a policy episode (:func:`run_policy_episode`,
paced by :class:`PacedEpisodes`), the scripted expert's replay through the arm's trajectory topic
(:class:`ExpertEpisodes`), and the timing rules both follow.

- a policy episode: an empty goal stops the policy, ``~/reset`` starts the seeded episode and answers its
  instruction, the instruction is published as the goal, and the episode ends at the arm's ``success`` or
  ``truncated`` event; with the ``action`` and ``servo`` interfaces the executor is paused before the reset
  (which switches the controller off and on, ending its goal) and activated after it, so it restarts from the
  new measured state. The chunks counted are those computed from observations stamped during the episode;
- an expert episode: the scripted expert runs in this process (mocap control, no rendering) and its
  joint-position targets go to the arm as one ``JointTrajectory`` (a point every physics step, ``header.stamp``
  0) after the seeded reset; the same targets are also replayed directly into MuJoCo for comparison;
- waits for the end event count simulated time where the arm runs on ``/clock`` (see
  :meth:`~dream_vla_ros.evaluation.session.RosSession.wait_episode_end`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from dream_vla_ros import protocol
from dream_vla_ros.evaluation.config import EvalConfig
from dream_vla_ros.evaluation.pacing import Pacer, available_cores
from dream_vla_ros.evaluation.session import Log, RosSession, stderr_log
from dream_vla_ros.evaluation.statistics import ChunkProfile, EpisodeResult, chunk_statistics
from dream_vla_ros.sim.joint_arm import CONTROL_DT


def episode_timeout(config: EvalConfig, real_time_factor: float = 1.0) -> float:
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
    """One closed-loop episode: stop, reset, goal, wait for success or truncation, stop (see the module
    docstring)."""
    handover = session.graph.controller_interface != "topic" and bool(session.graph.executor)
    session.set_goal("")
    if handover:
        session.executor_call(protocol.PAUSE)
    event = session.reset(task, seed, config.phrasings, index)
    if handover:
        session.executor_call(protocol.ACTIVATE)
    if on_start is not None:
        on_start(event)
    started = time.monotonic()
    session.set_goal(event["instruction"])
    end = session.wait_episode_end(event["episode"], episode_timeout(config, real_time_factor),
                                   last_step_time(event))
    session.set_goal("")
    k, latency, inference = chunk_statistics(
        profile.between(float(event["stamp"]), float(end["stamp"]) if end else math.inf))
    if end is None:
        return EpisodeResult(task, seed, event["instruction"], False, config.max_steps, time.monotonic() - started,
                             k, latency, inference, note=_no_end_note(session), real_time_factor=real_time_factor)
    return EpisodeResult.ended(task, seed, event["instruction"], end, time.monotonic() - started, k=k,
                               latency_ms=latency, inference_ms=inference)


class PacedEpisodes:
    """Runs episodes on a session at a pace the host sustains (:class:`~dream_vla_ros.evaluation.pacing.Pacer`):
    measures the graph's CPU during each episode, lowers the arm's real-time factor when headroom is short,
    and runs an episode again after a lag event (auto pacing; the discarded runs are kept in ``retries``).
    The CPU meter starts with the first episode, so the runner may be made before the session starts."""

    def __init__(self, session: RosSession, config: EvalConfig, profile: ChunkProfile,
                 log: Log = stderr_log) -> None:
        self.session = session
        self.config = config
        self.profile = profile
        self.log = log
        self.pacer = Pacer(config.pacing, available_cores())
        self.retries: list[dict[str, Any]] = []
        self._meter = None

    def run(self, task: str, seed: int, index: int,
            on_start: Callable[[dict], None] | None = None) -> EpisodeResult:
        meter = self._meter = self._meter or self.session.load_meter()
        attempt = 0
        while True:
            factor = self.pacer.factor

            def started(event: dict, first: bool = attempt == 0) -> None:
                meter.begin()  # the episode itself: a reset's scene build is not the loop's load
                if on_start is not None and first:
                    on_start(event)

            result = run_policy_episode(self.session, self.config, self.profile, task, seed, index,
                                        on_start=started, real_time_factor=factor)
            sample = meter.end(result.steps * CONTROL_DT)
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


class ExpertEpisodes:
    """The scripted expert's episodes through the arm's trajectory topic (see the module docstring); counts
    per task the expert's own failures (those episodes are skipped) and the direct replays that succeed."""

    def __init__(self, session: RosSession, config: EvalConfig) -> None:
        from dream_vla_ros.sim.joint_arm import JointArm, SimArmConfig

        self.session = session
        self.config = config
        self.arm = JointArm(SimArmConfig(task=config.tasks[0]))
        self.expert_failures: Counter[str] = Counter()
        self.direct_successes: Counter[str] = Counter()
        self._publisher = None

    def run(self, task: str, seed: int, index: int) -> tuple[EpisodeResult | None, str]:
        """One episode: its result and the expert's steps (None and why when the expert itself failed)."""
        from dream_vla_ros.sim.expert import replay, run_expert

        session, config = self.session, self.config
        self._publisher = self._publisher or session.trajectory_publisher()
        demo = run_expert(self.arm, task, seed, max_steps=config.max_steps)
        if not demo.success:
            self.expert_failures[task] += 1
            return None, "the scripted expert failed; skipped"
        self.direct_successes[task] += int(replay(self.arm, task, seed, demo.targets).success)
        event = session.reset(task, seed, config.phrasings, index)
        started = time.monotonic()
        self._publisher.publish(expert_trajectory(demo.targets))
        end = session.wait_episode_end(event["episode"], episode_timeout(config, config.pacing.initial_factor),
                                       last_step_time(event))
        wall_s = time.monotonic() - started
        result = EpisodeResult.ended(task, seed, event["instruction"], end, wall_s) if end else EpisodeResult(
            task, seed, event["instruction"], False, config.max_steps, wall_s, note=_no_end_note(session))
        return result, f" (expert {demo.steps_to_success} steps)"

    def close(self) -> None:
        self.arm.close()
