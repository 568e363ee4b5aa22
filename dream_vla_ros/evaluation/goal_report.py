"""How a model's goal threshold trades accepting task phrasings against refusing unrelated goals: the ROC
table (Markdown) and plot behind ``dream-vla-ros goal-check --roc`` and the model card."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dream_vla_ros.policy.goals import CALIBRATION_UNRELATED, GoalScorer, roc
from dream_vla_ros.sim.paraphrases import paraphrase
from dream_vla_ros.sim.tasks import TASKS

FRESH_SEED = 99  # not the training (0) or calibration (7) seed of the generated phrasings
FRESH_PER_TASK = 50


def goal_sets(scorer: GoalScorer, unrelated: Sequence[str] = ()) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(goals to accept, goals to refuse) by name: the known tasks' training, held-out and fresh generated
    phrasings; the calibration list and ``unrelated``."""
    tasks = sorted({task for task, _ in scorer.known if task in TASKS})
    rng = random.Random(FRESH_SEED)
    accept = {
        "training phrasings": [p for t in tasks for p in TASKS[t].train],
        "held-out phrasings": [p for t in tasks for p in TASKS[t].heldout],
        "fresh generated phrasings": [paraphrase(t, rng) for t in tasks for _ in range(FRESH_PER_TASK)],
    }
    refuse = {"calibration unrelated goals": list(CALIBRATION_UNRELATED)}
    if unrelated:
        refuse["other unrelated goals"] = list(unrelated)
    return {k: v for k, v in accept.items() if v}, refuse


def roc_report(scorer: GoalScorer, accept: Mapping[str, Sequence[str]], refuse: Mapping[str, Sequence[str]],
               out_png: Path | None = None) -> str:
    """A Markdown table of accept / refuse rates per set at thresholds around the scorer's, and (with
    ``out_png``) the ROC curve of all accept sets against all refuse sets with the default marked."""
    scores = {name: [scorer.verdict(g).confidence for g in goals] for name, goals in {**accept, **refuse}.items()}
    default = scorer.min_confidence
    thresholds = sorted({round(t, 3) for t in (0.5, 0.55, 0.6, 0.7, 0.75, 0.8)} | {default})
    header = [f"accepted: {k} ({len(accept[k])})" for k in accept]
    header += [f"refused: {k} ({len(refuse[k])})" for k in refuse]
    lines = ["| threshold | " + " | ".join(header) + " |", "|---" * (1 + len(header)) + "|"]
    for t in thresholds:
        rates = [np.mean(np.asarray(scores[k]) >= t) for k in accept] + [np.mean(np.asarray(scores[k]) < t)
                                                                          for k in refuse]
        label = f"{t:.4g}" + (" (default)" if t == default else "")
        lines.append(f"| {label} | " + " | ".join(f"{r:.1%}" for r in rates) + " |")
    if out_png is not None:
        _plot(scores, accept, refuse, default, out_png)
    return "\n".join(lines)


def _plot(scores, accept, refuse, default: float, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [s for k in accept for s in scores[k]]
    bad = [s for k in refuse for s in scores[k]]
    grid = np.linspace(-0.2, 1.0, 241)
    curve = roc(ok, bad, grid)
    chosen = roc(ok, bad, [default])[0]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([1 - c["refused"] for c in curve], [c["accepted"] for c in curve], lw=1.8)
    ax.plot([1 - chosen["refused"]], [chosen["accepted"]], "o", color="C3",
            label=f"default {default:.3f}: accepts {chosen['accepted']:.1%}, refuses {chosen['refused']:.1%}")
    ax.set_xlabel("unrelated goals accepted (false accept rate)")
    ax.set_ylabel("task phrasings accepted")
    ax.set_title("goal threshold ROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
