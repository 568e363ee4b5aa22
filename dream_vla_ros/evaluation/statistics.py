"""Results of closed-loop episodes and their statistics (ROS-free): :class:`EpisodeResult`, the policy node's
per-chunk profile (:class:`ChunkProfile`), and :func:`summarize`, the JSON layout of ``dream-vla-ros eval``.

Per chunk, from the policy node's profile (``profile_path``): the recurrent-core iterations ``k``;
**latency** = chunk publication time - stamp of the camera frame it was computed from (transport, waiting,
preprocessing, inference, publication); **inference** = the engine's own time (preprocessing + network +
postprocessing).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.evaluation.config import ADAPTIVE, EvalConfig, Halting
from dream_vla_ros.evaluation.pacing import host_description
from dream_vla_ros.protocol import EVENT_SUCCESS


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
        return cls(task, seed, instruction, end["event"] == EVENT_SUCCESS, int(end["steps"]), wall_s,
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
