"""What a closed-loop evaluation runs: :class:`EvalConfig` and the policy node's halting settings (ROS-free)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dream_vla_ros.configuration import require
from dream_vla_ros.evaluation.pacing import PacingConfig
from dream_vla_ros.nodes.executor_config import CONTROLLER_INTERFACES
from dream_vla_ros.sim.tasks import MT10, PHRASING_SPLITS

# Episode i of every task uses seed DEFAULT_SEED + i: `collect` uses seeds below episodes * attempts, so
# evaluation scenes never were training scenes.
DEFAULT_SEED = 100_000


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


def sweep_settings(k_max: int) -> list[Halting]:
    """Fixed k = 1, 2, 4, 8, K_max (those <= K_max, no repeats) and adaptive halting, in that order."""
    ks = sorted({k for k in (1, 2, 4, 8) if k <= k_max} | {k_max})
    return [fixed_k(k) for k in ks] + [ADAPTIVE]


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    model: model directory or shipped model name (unused with ``expert``).
    tasks: task names; episodes: episodes per task; seed: seed of episode 0 (episode i uses seed + i).
    phrasings: instruction split, train or heldout.
    controller_interface: how the executor commands the arm: ``topic`` (JointTrajectory on
        /<controller>/joint_trajectory), ``action`` (FollowJointTrajectory) or ``servo`` (JointJog through a
        Servo stand-in); see :mod:`dream_vla_ros.evaluation.runner`.
    config: params file (name under config/ or a path) describing the graph.
    max_steps: physics steps per episode (12.5 ms each) after the controller is active.
    threads: CPU threads of the policy node's backend. device: where it runs (cpu, cuda).
    expert: replay the scripted expert's joint targets through the arm's trajectory topic instead.
    domain_id: ROS_DOMAIN_ID of the private graph (None: a random one in 120..229).
    pacing: the clock and real-time factor (see :mod:`dream_vla_ros.evaluation.pacing`).
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

    def episode_plan(self) -> list[tuple[str, int, int]]:
        """(task, seed, phrasing index) of every episode, task by task (one scene build per task)."""
        return [(task, self.seed + i, i) for task in self.tasks for i in range(self.episodes)]
