"""Closed-loop evaluation through ROS 2: the simulated arm, the policy node and the chunk executor as separate
processes in a private ROS domain, driven by episode resets and language goals.

Protocol (``dream-vla-ros eval``):

- the graph of a params file (``config/sim_arm.yaml``: ``sim_arm``, ``policy_node``, ``chunk_executor``) is
  started by a :class:`~dream_vla_ros.evaluation.session.RosSession` in its own ``ROS_DOMAIN_ID`` with discovery
  kept on the host, so nothing else on the machine or the network sees it;
- episode ``i`` of every task uses seed ``seed + i`` (default ``seed`` 100000: the demonstrations of
  ``dream-vla-ros collect`` use seeds below ``episodes_per_task * max_attempts``, so evaluation scenes never
  were training scenes) and phrasing ``i`` (cycling) of the chosen split (``train`` or ``heldout``);
- ``--controller-interface`` chooses how the executor commands the arm: ``topic`` (JointTrajectory on
  ``/arm_controller/joint_trajectory``), ``action`` (FollowJointTrajectory goals to the arm's action server)
  or ``servo`` (JointJog velocities to a JointJog integrator that stands in for MoveIt Servo, started as an
  extra process: ``dream_vla_ros/nodes/sim/jog_integrator_node.py``). ``action`` and ``servo`` need
  ``control_msgs`` importable (here: ``eval "$(python test/control_msgs_build.py --exports)"``), and use the
  hand-over protocol around each reset (:mod:`dream_vla_ros.evaluation.episodes`);
- per episode (:func:`~dream_vla_ros.evaluation.episodes.run_policy_episode`): stop, seeded reset, the
  instruction as the goal, until the arm's ``success`` event or its ``truncated`` event (``max_steps`` physics
  steps of 12.5 ms after the controller became active, Meta-World's 500 by default);
- time: every node runs on the simulated arm's ``/clock`` (``use_sim_time``) at a real-time factor the host
  sustains (:mod:`dream_vla_ros.evaluation.pacing`: chosen from measured CPU headroom, lowered and the episode
  run again after a lag event), so a slow or busy host slows the whole loop down instead of corrupting it; the
  policy's latency then counts in simulated time. ``--real-time-factor R`` fixes the factor, and
  ``--real-time-factor 1 --wall-clock`` runs on the wall clock as a robot does (latency costs wall time).
  Every episode records its factor and lag events; a result with lag events says so;
- the policy node's per-chunk profile (``profile_path``) gives the recurrent-core iterations ``k`` and the
  latency of every chunk of the episode (:mod:`dream_vla_ros.evaluation.statistics`).

``--k-sweep`` repeats the evaluation with the recurrent core fixed at k = 1, 2, 4, 8 and K_max iterations
(halting off: ``halting_delta`` 0, ``halting_k_max`` k) and with adaptive halting (the checkpoint's
defaults); each setting restarts the node graph with those policy-node parameters.

``--delay-sweep`` repeats it with each chunk's publication held back by 0, 50, 100, 200 and 300 ms of the
policy node's clock (``added_delay``, plus ``--delay-jitter``): how a slower engine, a loaded computer or a
policy across a network looks to the loop.

``--expert`` checks the ROS 2 path itself: the scripted expert's joint targets are sent as one
``JointTrajectory`` on the arm's controller topic after the seeded reset; the episode succeeds when the arm
reports success. Episodes whose expert itself fails are skipped and counted; the same targets are also
replayed directly into MuJoCo for comparison (:class:`~dream_vla_ros.evaluation.episodes.ExpertEpisodes`).

Results: one JSON-able dict (:func:`~dream_vla_ros.evaluation.statistics.summarize`); the Markdown report is in
:mod:`dream_vla_ros.evaluation.report`, the plots in :mod:`dream_vla_ros.evaluation.plots`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dream_vla_ros.errors import ConfigError, DreamVlaError
from dream_vla_ros.evaluation.config import ADAPTIVE, EvalConfig, Halting, sweep_settings
from dream_vla_ros.evaluation.episodes import ExpertEpisodes, PacedEpisodes
from dream_vla_ros.evaluation.graph import checkpoint_k_max, clock_overrides, policy_overrides
from dream_vla_ros.evaluation.report import episode_line, write_outputs
from dream_vla_ros.evaluation.session import Log, RosSession, stderr_log
from dream_vla_ros.evaluation.statistics import ChunkProfile, EpisodeResult, summarize

EXPERT_GOAL = 0.95  # the ROS replay success an expert check should reach
DELAY_SWEEP_MS = (0.0, 50.0, 100.0, 200.0, 300.0)

# One episode of the plan: (task, seed, phrasing index) -> (its result, text for its progress line), or
# (None, why it was skipped).
Episode = Callable[[str, int, int], tuple[EpisodeResult | None, str]]


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, ``kill``) into KeyboardInterrupt, so sessions stop their node processes
    (they run in their own process groups and would outlive this process otherwise)."""
    import signal

    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_plan(session: RosSession, config: EvalConfig, episode: Episode, log: Log = stderr_log) -> list[EpisodeResult]:
    """Start ``session``, run ``episode`` for every episode of ``config``'s plan with a progress line each, and
    close the session (with the nodes' last output logged when it fails)."""
    plan = config.episode_plan()
    episodes: list[EpisodeResult] = []
    try:
        session.start()
        for n, (task, seed, index) in enumerate(plan, 1):
            result, text = episode(task, seed, index)
            if result is None:
                log(f"[{n}/{len(plan)}] {task} seed {seed}: {text}")
                continue
            episodes.append(result)
            log(episode_line(n, len(plan), result) + text)
    except DreamVlaError:
        if session.processes is not None:
            log(session.outputs())
        raise
    finally:
        session.close()
    return episodes


def evaluate_policy(config: EvalConfig, halting: Halting, work_dir: Path, log: Log = stderr_log,
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
    started = time.monotonic()
    log(f"evaluating {model} ({halting.label}) on {len(config.tasks)} task(s) x {config.episodes} episode(s), "
        f"{config.phrasings} phrasings, seeds {config.seed}..{config.seed + config.episodes - 1}")
    session = RosSession(config.config, overrides=policy_overrides(config, halting, profile_path),
                         domain_id=config.domain_id, echo=echo, log=log)
    runner = PacedEpisodes(session, config, ChunkProfile(profile_path), log)
    episodes = run_plan(session, config, lambda task, seed, index: (runner.run(task, seed, index), ""), log)
    return summarize(episodes, config, halting, wall_s=time.monotonic() - started, lag_retries=runner.retries)


def evaluate_expert(config: EvalConfig, log: Log = stderr_log, echo: Any = None) -> dict[str, Any]:
    """Replay the scripted expert's joint targets through the arm's trajectory topic (see the module doc)."""
    started = time.monotonic()
    overrides = clock_overrides(config.pacing, {"sim_arm": {"task": config.tasks[0], "max_steps": config.max_steps,
                                                            "phrasing_split": config.phrasings}})
    session = RosSession(config.config, overrides=overrides, only=("sim_arm",), domain_id=config.domain_id,
                         echo=echo, log=log)
    expert = ExpertEpisodes(session, config)
    try:
        episodes = run_plan(session, config, expert.run, log)
    finally:
        expert.close()
    summary = summarize(episodes, config, wall_s=time.monotonic() - started)
    for task, stats in summary["tasks"].items():
        stats["expert_failures"] = expert.expert_failures[task]
        stats["direct_replay_success_rate"] = (expert.direct_successes[task] / stats["episodes"]
                                               if stats["episodes"] else None)
    replayed = len(episodes)
    summary["replay_success"] = sum(e.success for e in episodes) / replayed if replayed else None
    summary["replayed_episodes"] = replayed
    summary["expert_failures"] = sum(expert.expert_failures.values())
    summary["goal"] = EXPERT_GOAL
    return summary


def evaluate_k_sweep(config: EvalConfig, work_dir: Path, log: Log = stderr_log, echo: Any = None) -> dict[str, Any]:
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


def evaluate_delay_sweep(config: EvalConfig, work_dir: Path, delays_ms: Sequence[float] = DELAY_SWEEP_MS,
                         log: Log = stderr_log, echo: Any = None) -> dict[str, Any]:
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
