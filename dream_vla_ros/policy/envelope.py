"""The joint envelope of a model: measured from its training data, enforced on its predictions (numpy only).

A behaviour-cloned policy is only trained where its demonstrations went. Once the arm leaves that region (a
near miss, a slip, a push) the model extrapolates, and its chunks tend to drive the arm further out: on the
simulated arm, failed ``reach`` episodes came within 6 cm of the goal and then swung the arm to joint angles
no demonstration used, ending 70+ cm away. Keeping the targets within the envelope (plus a margin) keeps the
arm where the model knows what to do, so it can correct itself instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import JointEnvelope

ENVELOPE_QUANTILE = 1e-4
"""Positions beyond this quantile on either side do not widen the envelope: a handful of outlier frames
(an expert's overshoot) would otherwise set it; 1e-4 keeps 99.98% of the demonstrated positions."""


def fit_envelope(arrays: Iterable[np.ndarray], quantile: float = ENVELOPE_QUANTILE) -> JointEnvelope:
    """Per joint, the ``quantile`` and ``1 - quantile`` quantiles of the rows of ``arrays`` (each [N, J], e.g.
    the joint states and the targets of every training episode); empty arrays are skipped."""
    if not 0.0 <= quantile < 0.5:
        raise InputError(f"fit_envelope: quantile must be in [0, 0.5), got {quantile}")
    rows = [np.asarray(a, dtype=np.float64) for a in arrays]
    rows = [a for a in rows if a.ndim == 2 and a.shape[0] > 0]
    if not rows:
        return JointEnvelope()
    if len({a.shape[1] for a in rows}) > 1:
        raise InputError(f"fit_envelope: arrays have {sorted({a.shape[1] for a in rows})} joints")
    values = np.concatenate(rows)
    if not np.all(np.isfinite(values)):
        raise InputError("fit_envelope: data contains NaN or infinite values")
    low, high = np.quantile(values, [quantile, 1.0 - quantile], axis=0)
    return JointEnvelope(tuple(float(v) for v in low), tuple(float(v) for v in high))


def confine(positions: np.ndarray, envelope: JointEnvelope, margin: float) -> tuple[np.ndarray, int]:
    """``positions`` [..., J] clipped to ``[min - margin, max + margin]`` per joint, and how many values were
    clipped. An empty envelope or a negative margin leaves them as they are."""
    positions = np.asarray(positions, dtype=np.float64)
    if not envelope.position_min or margin < 0.0:
        return positions, 0
    if positions.shape[-1] != len(envelope.position_min):
        raise InputError(f"confine: {positions.shape[-1]} joints, the envelope has {len(envelope.position_min)}")
    low = np.asarray(envelope.position_min) - margin
    high = np.asarray(envelope.position_max) + margin
    clipped = np.clip(positions, low, high)
    return clipped, int(np.count_nonzero(clipped != positions))
