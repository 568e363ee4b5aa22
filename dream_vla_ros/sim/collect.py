"""Parallel collection of scripted-expert demonstrations on the joint-position arm.

Demonstration k of a task (k = 0 .. episodes_per_task - 1) tries the seeds ``seed + k``,
``seed + k + episodes_per_task``, ``seed + k + 2 * episodes_per_task``, ... until the expert succeeds and
the replay of its joint targets through the joint-position arm succeeds too (at most ``max_attempts``
seeds), so a collection uses seeds below ``seed + episodes_per_task * max_attempts`` and is the same
whatever the number of workers. Its instruction is train phrasing ``k`` (cycling) of the task, so the
phrasings are used evenly.

Each worker process (``spawn`` start method) owns a :class:`JointArm` and hands every kept episode to
``sink(index, record)``: a picklable callable (for example ``DatasetWriter.write_record``) that stores it
and returns a small summary. ``record`` holds ``images`` (camera -> uint8 [T, H, W, 3]), ``proprio`` and
``actions`` (float32 [T, 8]), ``task``, ``instruction``, ``seed`` and ``success``.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dream_vla_ros.configuration import require
from dream_vla_ros.sim.expert import HOLD_STEPS, record_demonstration
from dream_vla_ros.sim.joint_arm import JointArm, SimArmConfig
from dream_vla_ros.sim.tasks import MT10, instruction, task_spec

Sink = Callable[[int, dict[str, Any]], Any]


@dataclass(frozen=True)
class CollectConfig:
    """What to collect.

    tasks: task names; episodes_per_task: kept (successful) demonstrations per task.
    workers: worker processes (1 runs in this process).
    seed: first seed (see the module docstring); max_attempts: seeds tried per demonstration.
    hold_steps: steps recorded after the first success.
    arm: the simulated arm (cameras, image size, gains); its ``task`` and ``seed`` are not used.
    """

    tasks: tuple[str, ...] = MT10
    episodes_per_task: int = 50
    workers: int = 2
    seed: int = 0
    max_attempts: int = 10
    hold_steps: int = HOLD_STEPS
    arm: SimArmConfig = field(default_factory=SimArmConfig)

    def __post_init__(self) -> None:
        require(len(self.tasks) > 0, "tasks", "at least one task is needed")
        for name in self.tasks:
            task_spec(name)
        require(self.episodes_per_task >= 1, "episodes_per_task", f"must be >= 1, got {self.episodes_per_task}")
        require(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(self.max_attempts >= 1, "max_attempts", f"must be >= 1, got {self.max_attempts}")
        require(self.hold_steps >= 0, "hold_steps", f"must be >= 0, got {self.hold_steps}")


@dataclass(frozen=True)
class Job:
    """Demonstration ``demo`` of ``task``, stored as episode ``index``."""

    index: int
    task: str
    demo: int


@dataclass(frozen=True)
class JobResult:
    """What a job produced: ``stored`` is the sink's return value, None when every attempt failed."""

    job: Job
    stored: Any
    seed: int | None
    attempts: int
    expert_failures: int
    replay_failures: int
    frames: int
    seconds: float


def make_jobs(config: CollectConfig) -> list[Job]:
    """All jobs, task after task (a worker keeps few task scenes built; switching task rebuilds a scene)."""
    names = [task_spec(t).name for t in config.tasks]
    return [
        Job(index=i * config.episodes_per_task + k, task=name, demo=k)
        for i, name in enumerate(names)
        for k in range(config.episodes_per_task)
    ]


def job_seeds(config: CollectConfig, job: Job) -> list[int]:
    """The seeds ``job`` tries, in order (see the module docstring)."""
    return [config.seed + job.demo + attempt * config.episodes_per_task for attempt in range(config.max_attempts)]


def run_job(arm: JointArm, config: CollectConfig, job: Job, sink: Sink) -> JobResult:
    """Try seeds for ``job`` until a demonstration replays successfully; store it through ``sink``."""
    start = time.perf_counter()
    expert_failures = replay_failures = 0
    for attempt, seed in enumerate(job_seeds(config, job)):
        demo, replay = record_demonstration(arm, job.task, seed, hold_steps=config.hold_steps)
        if replay is None:
            expert_failures += 1
            continue
        if not replay.success:
            replay_failures += 1
            continue
        record = {
            "images": replay.images,
            "proprio": replay.positions.astype(np.float32),
            "actions": demo.targets.astype(np.float32),
            "task": job.task,
            "instruction": instruction(job.task, job.demo, "train"),
            "seed": seed,
            "success": True,
        }
        stored = sink(job.index, record)
        return JobResult(
            job,
            stored,
            seed,
            attempt + 1,
            expert_failures,
            replay_failures,
            len(demo.targets),
            time.perf_counter() - start,
        )
    return JobResult(
        job, None, None, config.max_attempts, expert_failures, replay_failures, 0, time.perf_counter() - start
    )


_WORKER: dict[str, Any] = {}


def _init_worker(config: CollectConfig, sink: Sink) -> None:
    _WORKER.update(arm=JointArm(config.arm), config=config, sink=sink)


def _run_in_worker(job: Job) -> JobResult:
    return run_job(_WORKER["arm"], _WORKER["config"], job, _WORKER["sink"])


def collect(config: CollectConfig, sink: Sink, progress: bool = True) -> Iterator[JobResult]:
    """Run every job of ``config`` and yield the results as they finish (with a tqdm bar if ``progress``)."""
    from tqdm import tqdm

    jobs = make_jobs(config)
    bar = tqdm(total=len(jobs), unit="demo", disable=not progress, dynamic_ncols=True)
    kept = attempts = 0
    try:
        for result in _results(config, jobs, sink):
            kept += result.stored is not None
            attempts += result.attempts
            bar.set_postfix(task=result.job.task, kept=kept, attempts=attempts, refresh=False)
            bar.update(1)
            yield result
    finally:
        bar.close()


def _results(config: CollectConfig, jobs: list[Job], sink: Sink) -> Iterator[JobResult]:
    if config.workers == 1:
        arm = JointArm(config.arm)
        try:
            for job in jobs:
                yield run_job(arm, config, job, sink)
        finally:
            arm.close()
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(config.workers, len(jobs)), initializer=_init_worker, initargs=(config, sink)) as pool:
        yield from pool.imap_unordered(_run_in_worker, jobs)
