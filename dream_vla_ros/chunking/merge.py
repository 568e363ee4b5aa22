"""Merge rules: how a new chunk and what is already queued combine where they overlap in time.

A new chunk's points lie on the clock of its observation; the points already in the past on arrival are
dropped (that is the latency compensation), and the first kept point ``a`` starts the overlap, which ends with
the last queued point. Before ``a`` the queue is kept as it is; after the overlap only the new chunk exists.
On the overlap each point becomes ``(1 - alpha) * old + alpha * new`` with:

``replace`` (alpha = 1)
    The newest prediction wins at once. Most reactive, and right when the policy re-plans from a changed
    scene (a new goal, a grasp that slipped). The reference jumps at ``a`` by however much two consecutive
    predictions disagree; the limited tracker turns the jump into a bounded-acceleration catch-up, so the
    output stays smooth, but its shape follows the limits rather than the policy for a moment.
``crossfade`` (alpha from 0 at ``a`` to 1 after ``crossfade_duration``, linear or cosine)
    Hand over from the old prediction to the new one gradually. The reference is continuous at both ends of
    the blend; with the cosine shape its velocity is too, while linear leaves a velocity kink of
    ``(new - old) / duration`` (prefer cosine for short blends). The blend always ends by the last new point
    inside the overlap; a duration of 0 spans the whole overlap, which scales by itself with horizon and latency and
    mirrors real-time chunking's guidance weights that decay over the not-yet-executed rest of the previous
    chunk. **Default: linear over the whole overlap.** No reference jump, the disagreement of consecutive
    chunks spread over the longest time (the kink is then tiny), so the acceleration limits are rarely
    touched; in ``bench executor`` it has the lowest boundary jumps and, with ``ensemble`` newest, the lowest
    tracking error, without ensemble's mode averaging or its step where older chunks end. The price: a
    genuinely new plan takes over progressively, not at once (use a short duration, or ``replace``, for a
    more reactive policy).
``ensemble`` (exponentially weighted average of every prediction for that time, after ACT)
    Each point keeps the accumulated weight of the predictions merged into it. ``newest`` favoured: previous
    weights decay by ``ensemble_decay`` per chunk and the new one weighs 1 (a low-pass over predictions that
    still follows the newest). ``oldest`` favoured (ACT's choice): the k-th prediction of a time weighs
    ``ensemble_decay ** k`` (committed plans change slowly; the steadiest, least reactive). Use it against
    jitter between chunks of a unimodal policy; it can average two modes into an action of neither, and the
    reference steps where the older chunks end (only the new one is left there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dream_vla_ros.configuration import require

MergeRule = Literal["replace", "crossfade", "ensemble"]


@dataclass(frozen=True)
class MergeConfig:
    """How a new chunk combines with the queued one (see the module docstring for when to use which).

    rule: "replace", "crossfade" or "ensemble".
    crossfade_shape: "linear" or "cosine" weight from the queued to the new chunk.
    crossfade_duration: seconds of the crossfade; 0 blends over the whole overlap.
    ensemble_decay: weight factor per chunk of the ensemble, in (0, 1].
    ensemble_favour: "newest" (older predictions decay) or "oldest" (newer ones weigh less, as in ACT).
    """

    rule: MergeRule = "crossfade"
    crossfade_shape: Literal["linear", "cosine"] = "linear"
    crossfade_duration: float = 0.0
    ensemble_decay: float = 0.5
    ensemble_favour: Literal["newest", "oldest"] = "newest"

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.crossfade_duration) and self.crossfade_duration >= 0,
            "crossfade_duration",
            f"must be >= 0 s (0 = the whole overlap), got {self.crossfade_duration}",
        )
        require(0 < self.ensemble_decay <= 1, "ensemble_decay", f"must be in (0, 1], got {self.ensemble_decay}")


@dataclass(frozen=True, eq=False)
class Blend:
    """Per overlap point: the new chunk's share ``alpha``, its time derivative, and the ensemble bookkeeping."""

    alpha: np.ndarray
    alpha_rate: np.ndarray
    weight: np.ndarray
    count: np.ndarray


def blend(config: MergeConfig, times: np.ndarray, old_weight: np.ndarray, old_count: np.ndarray) -> Blend:
    """Blend factors for the new points at ``times``: the sorted points that overlap the queue.

    ``old_weight`` and ``old_count`` are the queued points' accumulated ensemble weight and number of
    predictions, interpolated at ``times``. A crossfade is complete (alpha = 1) by the last of ``times``.
    """
    ones = np.ones_like(times)
    if config.rule == "replace":
        return Blend(ones, np.zeros_like(times), ones, ones)
    if config.rule == "crossfade":
        span = times[-1] - times[0]
        length = span if config.crossfade_duration == 0 else min(config.crossfade_duration, span)
        if length <= 0:
            return Blend(ones, np.zeros_like(times), ones, old_count + 1)
        s = np.clip((times - times[0]) / length, 0.0, 1.0)
        if config.crossfade_shape == "linear":
            # one-sided rates average to 1/2 at the start, where the old reference (rate 0) hands over
            rate = np.where((s > 0) & (s < 1), 1.0, np.where(s == 0, 0.5, 0.0)) / length
            return Blend(s, rate, ones, old_count + 1)
        alpha = 0.5 - 0.5 * np.cos(np.pi * s)
        return Blend(alpha, 0.5 * np.pi * np.sin(np.pi * s) / length, ones, old_count + 1)
    if config.ensemble_favour == "newest":
        prior = config.ensemble_decay * old_weight
        new = ones
    else:
        prior = old_weight
        new = config.ensemble_decay**old_count
    alpha = new / (prior + new)
    rate = np.gradient(alpha, times) if times.size > 1 else np.zeros_like(times)
    return Blend(alpha, rate, prior + new, old_count + 1)
