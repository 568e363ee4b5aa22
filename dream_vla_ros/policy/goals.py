"""Goal understanding: how well a new goal matches the instructions a model was trained on (numpy only).

A goal's words are compared with each known instruction's in WordLlama's token-embedding space (the table
is centred on its mean and each row normalised). The score of a goal against one known instruction is the
**coverage** of that instruction: the mean, over its tokens, of the best cosine similarity with any token of
the goal; the goal's confidence is the best coverage over every known instruction, which also names the
nearest one. Politeness, filler and reordering cost nothing (they add goal tokens, and coverage looks for the
instruction's words in the goal); synonyms score by their pretrained similarity; a goal about something else
("make me a coffee") covers no instruction well. The same scorer serves every checkpoint kind (byte-token
models too), so it needs the ``wordllama`` files but not the model.

Measured on the shipped models' instructions: see ``models/metaworld_mt10_wordllama/MODEL_CARD.md`` (the ROC
of ``min_confidence``) and :data:`CALIBRATION_UNRELATED`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.tokenizer import MAX_GOAL_BYTES, normalize_instruction

# Goals no MT10 model should act on, used to choose the default threshold when a model is trained (the tests
# use a different list).
CALIBRATION_UNRELATED = (
    "make me a sandwich", "bring me a cup of tea", "vacuum the living room", "iron my shirt",
    "set the table for dinner", "what is your name", "how is the weather", "good night",
    "thanks, that is all", "qwerty uiop", "xkcd zzz blorp", "ferme la fenêtre", "cierra el cajón",
    "schließe die Schublade", "mach das Fenster auf", "open the garage", "turn off the oven",
    "paint the wall", "plant a tree", "repair the bicycle", "go to sleep", "start the car",
    "read me a story", "send a message to bob", "clap your hands", "jump", "run away", "laugh",
    "count to ten", "switch on the tv",
)


@dataclass(frozen=True)
class GoalVerdict:
    """Whether a goal is understood: ``confidence`` (best coverage of a known instruction, -1..1), the
    nearest known instruction and its task, and, when refused, why."""

    goal: str
    accepted: bool
    confidence: float
    nearest_instruction: str
    nearest_task: str
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class GoalScorer:
    """Scores goals against ``known`` (task, instruction) pairs; see the module docstring. ``max_tokens``: a
    goal of more tokens is refused (0: no limit). With no known instructions every goal is accepted."""

    def __init__(self, known: Sequence[tuple[str, str]], min_confidence: float, max_tokens: int = 0,
                 table: np.ndarray | None = None) -> None:
        from dream_vla_ros.policy import wordllama

        if table is None:
            table = wordllama.embedding_table()
        self._token_ids = wordllama.token_ids
        self.min_confidence = float(min_confidence)
        self.max_tokens = int(max_tokens)
        self.known = tuple((str(t), str(i)) for t, i in known)
        self._table = table  # fp16, shared with the model's copy; rows are centred and normalised when used
        self._mean = sum(table[i:i + 4096].astype(np.float32).sum(axis=0) for i in range(0, len(table), 4096))
        self._mean = (self._mean / len(table)).astype(np.float32)
        vectors = [self._vectors(instruction) for _, instruction in self.known]
        self._known_rows = np.concatenate(vectors) if vectors else np.zeros((0, table.shape[1]), np.float32)
        self._owner = np.repeat(np.arange(len(vectors)), [len(v) for v in vectors])
        self._sizes = np.array([len(v) for v in vectors], dtype=np.float32)

    def _vectors(self, text: str) -> np.ndarray:
        return self._rows_of(self._token_ids(normalize_instruction(text)))

    def _rows_of(self, ids: Sequence[int]) -> np.ndarray:
        rows = self._table[list(ids)].astype(np.float32) - self._mean
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)

    def coverage(self, goal: str) -> np.ndarray:
        """Coverage of every known instruction by ``goal`` [len(known)]."""
        return self._coverage(self._vectors(goal))

    def _coverage(self, words: np.ndarray) -> np.ndarray:
        if not len(words) or not len(self.known):
            return np.full(len(self.known), -1.0, np.float32)
        best = (self._known_rows @ words.T).max(axis=1)  # per known token: its best match in the goal
        return np.bincount(self._owner, weights=best, minlength=len(self.known)) / self._sizes

    def verdict(self, goal: str, min_confidence: float | None = None) -> GoalVerdict:
        """Accept or refuse ``goal`` at ``min_confidence`` (default: the scorer's)."""
        threshold = self.min_confidence if min_confidence is None else float(min_confidence)
        try:
            canonical = normalize_instruction(goal)
        except InputError as exc:
            return GoalVerdict(str(goal), False, -1.0, "", "", str(exc))
        size = len(canonical.encode("utf-8"))
        if size > MAX_GOAL_BYTES:
            return GoalVerdict(goal, False, -1.0, "", "",
                               f"goal too long: {size} bytes, at most {MAX_GOAL_BYTES} are understood")
        ids = self._token_ids(canonical)  # tokenised once: counted, then scored
        if self.max_tokens and len(ids) > self.max_tokens:
            return GoalVerdict(goal, False, -1.0, "", "",
                               f"goal too long: {len(ids)} tokens, this model reads at most {self.max_tokens}")
        if not self.known:
            return GoalVerdict(goal, True, 1.0, "", "", "")
        scores = self._coverage(self._rows_of(ids))
        best = int(np.argmax(scores))
        confidence = round(float(scores[best]), 4)
        task, nearest = self.known[best]
        if confidence >= threshold:
            return GoalVerdict(goal, True, confidence, nearest, task)
        return GoalVerdict(goal, False, confidence, nearest, task,
                           f"goal {canonical[:60]!r} not understood: closest known {nearest!r}, "
                           f"{confidence:.2f} < {threshold:.2f}")


def choose_threshold(accept: Sequence[float], refuse: Sequence[float], min_accept: float = 0.99) -> float:
    """The threshold that refuses the most of ``refuse`` while accepting at least ``min_accept`` of
    ``accept``; of the equally good ones, the middle one (the widest margin on both sides)."""
    a, r = np.asarray(accept, dtype=np.float64), np.asarray(refuse, dtype=np.float64)
    scores = np.unique(np.concatenate([a, r]))
    candidates = np.concatenate([[scores[0] - 1e-3], (scores[1:] + scores[:-1]) / 2.0])
    allowed = [t for t in candidates if np.mean(a >= t) >= min_accept] or [candidates[0]]
    refused = np.array([np.mean(r < t) for t in allowed])
    best = [t for t, q in zip(allowed, refused, strict=True) if q == refused.max()]
    return float(best[len(best) // 2])


def roc(accept: Sequence[float], refuse: Sequence[float], thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Accept rate of ``accept`` scores and refuse rate of ``refuse`` scores at each threshold."""
    a, r = np.asarray(accept), np.asarray(refuse)
    return [{"threshold": float(t), "accepted": float(np.mean(a >= t)), "refused": float(np.mean(r < t))}
            for t in thresholds]
