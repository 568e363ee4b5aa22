"""Which goal the policy node acts on (ROS-free): the verdict on each new goal, the ``~/goal_status`` document and
the operator's override of the goal refused last (``~/accept_goal``).

A goal is scored against the instructions the model was trained on (:mod:`dream_vla_ros.policy.goals`); a
model that records none has every goal accepted, unchecked. The ``~/goal_status`` document is the JSON object
``{goal, accepted, confidence, nearest_instruction, nearest_task, reason, checked, overridden}`` of the latest
verdict.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes.conversions import check_goal
from dream_vla_ros.policy.goals import GoalScorer, GoalVerdict

DIAGNOSTIC_KEYS = ("accepted", "confidence", "nearest_instruction", "overridden")  # of the verdict, on /diagnostics


def goal_scorer(meta: Any, min_goal_confidence: float) -> GoalScorer | None:
    """The scorer of new goals for a model's metadata (None: the model records no instructions, so goals are not
    checked). ``min_goal_confidence`` -1 takes the model's measured threshold."""
    if not meta.goals.known:
        return None
    threshold = meta.goals.min_confidence if min_goal_confidence == -1.0 else min_goal_confidence
    return GoalScorer(meta.goals.known, threshold, meta.max_goal_tokens)


class GoalDesk:
    """Verdicts on goals, the goal refused last (what the override accepts) and the latest verdict (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scorer: GoalScorer | None = None
        self._refused = ""
        self._verdict: dict[str, Any] = {}

    def use(self, scorer: GoalScorer | None) -> None:
        """Judge goals with ``scorer`` from now on (None: accept every goal unchecked)."""
        with self._lock:
            self._scorer = scorer

    def judge(self, goal: str) -> GoalVerdict:
        if not goal:
            return GoalVerdict("", False, -1.0, "", "", "empty goal: stopped")
        scorer = self._scorer
        if scorer is None:
            return GoalVerdict(goal, True, 1.0, "", "", "not checked: the model records no known instructions")
        return scorer.verdict(goal)

    def receive(self, text: Any, max_bytes: int) -> tuple[str | None, GoalVerdict]:
        """A goal message's text -> (the goal to act on: None when it is refused or invalid, '' = stop; its verdict).
        A refused goal becomes the one :meth:`accept_refused` accepts; any other valid goal clears that."""
        try:
            goal = check_goal(text, max_bytes)
            verdict = self.judge(goal)
        except InputError as exc:
            return None, GoalVerdict(str(text)[:200], False, -1.0, "", "", str(exc))
        with self._lock:
            if goal and not verdict.accepted:
                self._refused = goal
                return None, verdict
            self._refused = ""  # a later goal replaces the refused one: nothing left to accept
        return goal, verdict

    def accept_refused(self) -> tuple[str, GoalVerdict] | None:
        """The operator's override, once: (the goal refused last, its verdict marked accepted), or None when no
        refused goal is left."""
        with self._lock:
            goal, self._refused = self._refused, ""
        if not goal:
            return None
        return goal, dataclasses.replace(self.judge(goal), accepted=True, reason="accepted by the operator")

    def record(self, verdict: GoalVerdict, overridden: bool = False) -> str:
        """Make ``verdict`` the latest; returns the ``~/goal_status`` document (JSON)."""
        with self._lock:
            self._verdict = {**verdict.to_dict(), "checked": self._scorer is not None, "overridden": overridden}
            return json.dumps(self._verdict)

    def values(self) -> dict[str, object]:
        """The latest verdict's ``goal <key>`` values for /diagnostics."""
        with self._lock:
            verdict = dict(self._verdict)
        return {f"goal {k}": verdict[k] for k in DIAGNOSTIC_KEYS if k in verdict}
