"""The language side of training: which phrasings a sample may carry, and what a model records about the
instructions it was trained on (its :class:`~dream_vla_ros.policy.config.GoalConfig`).

- **Training phrasings** per task: the dataset's training phrasings plus, for the MT10 tasks, ``paraphrases``
  generated ones (:mod:`dream_vla_ros.sim.paraphrases`: never a held-out phrasing). A sample draws one of the
  dataset's own phrasings with probability :data:`CANONICAL_SHARE`, a generated one otherwise.
- **Known instructions**: the dataset's training phrasings and the first :data:`KNOWN_PER_TASK` generated
  ones per task (plain templates first); the goal scorer compares new goals with them.
- **Default threshold**: chosen between the scores of fresh generated phrasings (another seed than
  training's; for tasks outside MT10, the dataset's own phrasings with politeness, filler, typos and casing)
  and :data:`~dream_vla_ros.policy.goals.CALIBRATION_UNRELATED`; held-out phrasings are never used, they stay
  an evaluation set.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dream_vla_ros.policy.config import GoalConfig
from dream_vla_ros.sim.paraphrases import decorate, paraphrase, phrasing_family
from dream_vla_ros.sim.tasks import TASKS

CANONICAL_SHARE = 0.3
KNOWN_PER_TASK = 30
CALIBRATION_SEED = 7
CALIBRATION_PER_TASK = 40


@dataclass(frozen=True)
class PhrasingPool:
    """Per task: the dataset's own phrasings and the generated ones a training sample may carry."""

    canonical: Mapping[str, Sequence[str]]
    generated: Mapping[str, Sequence[str]]

    def draw(self, task: str, rng) -> str | None:
        """A random phrasing of ``task`` (numpy Generator ``rng``), or None when the task has none."""
        own, extra = self.canonical.get(task, ()), self.generated.get(task, ())
        if extra and (not own or rng.random() >= CANONICAL_SHARE):
            return extra[int(rng.integers(len(extra)))]
        return own[int(rng.integers(len(own)))] if own else None


def phrasing_pool(train_phrasings: Mapping[str, Sequence[str]], paraphrases: int, seed: int = 0) -> PhrasingPool:
    """The pool for a dataset's tasks; ``paraphrases`` generated phrasings per MT10 task (0: none)."""
    generated = {task: phrasing_family(task, paraphrases, seed) for task in train_phrasings
                 if paraphrases and task in TASKS}
    return PhrasingPool({t: list(p) for t, p in train_phrasings.items()}, generated)


def goal_config(train_phrasings: Mapping[str, Sequence[str]], paraphrases: int) -> GoalConfig:
    """Known instructions and a measured default threshold (see the module docstring)."""
    from dream_vla_ros.policy.goals import CALIBRATION_UNRELATED, GoalScorer, choose_threshold

    known: list[tuple[str, str]] = []
    for task, own in train_phrasings.items():
        family = phrasing_family(task, KNOWN_PER_TASK) if paraphrases and task in TASKS else []
        known += [(task, p) for p in dict.fromkeys([*own, *family])]
    if not known:
        return GoalConfig()
    scorer = GoalScorer(known, 0.0)
    rng = random.Random(CALIBRATION_SEED)
    fresh = []
    for task, own in train_phrasings.items():  # MT10 tasks: generated phrasings; others: their own, decorated
        for _ in range(CALIBRATION_PER_TASK if own or task in TASKS else 0):
            fresh.append(paraphrase(task, rng) if task in TASKS else decorate(rng.choice(list(own)), rng))
    accept = [scorer.verdict(g).confidence for g in fresh]
    refuse = [scorer.verdict(g).confidence for g in CALIBRATION_UNRELATED]
    return GoalConfig(known=tuple(known), min_confidence=choose_threshold(accept, refuse))
