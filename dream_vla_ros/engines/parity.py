"""Reduced-precision engines against the FP32 reference: stored samples, the comparison rule, its record (numpy).

An FP16 TensorRT build may ignore precision marks or overflow; nothing about a built plan says whether it
still decides like the FP32 model. The export therefore stores :data:`SAMPLES_FILE`: observations (synthetic
scenes of the model's cameras, joints and instruction length; see ``policy.synthetic``), their noise seeds,
and what ONNX Runtime FP32 on the CPU computed for them with the change read at every iteration (normalised
chunk, k, the change history). After every FP16 build the engine decodes the same observations and
:func:`compare` applies the rule:

- the change metric differs from FP32 by less than ``delta`` x :data:`CHANGE_FRACTION` (delta / 10) at every
  iteration both ran where the FP32 change is below :data:`DECIDING_RANGE` x delta (where the threshold
  decides; far above it FP16's ~1 % relative error is larger than delta / 10 and decides nothing, and a
  harmful error there shows as another k);
- k is the same for every sample, except a sample whose FP32 change came within that margin of ``delta``
  (a hard threshold: either side is right there; counted as ``ambiguous``);
- the normalised chunk differs by at most :data:`ACTION_TOLERANCE` (normalised action units, i.e. ~2.5 % of a
  joint's training range, whatever k).

The :class:`ParityResult` is stored in the engine cache next to the plans (``parity-<set digest>.json``),
shown on ``/diagnostics``, and a failing set is refused unless the operator accepted it explicitly
(``dream-vla-ros build-engine --accept-parity-failure``, which records who accepted what).
"""

from __future__ import annotations

import getpass
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.engines.common import Decoded
from dream_vla_ros.errors import EngineError
from dream_vla_ros.policy.observation import Observation

SAMPLES_FILE = "parity_samples.npz"
SAMPLES = 16
ACTION_TOLERANCE = 0.05
CHANGE_FRACTION = 0.1
DECIDING_RANGE = 2.0
RULE_VERSION = 1


@dataclass(frozen=True)
class ParitySamples:
    """Observations with their seeds and the FP32 reference decode (normalised chunks [N, H, J], k [N],
    changes [k_run, N] with NaN where a sample had stopped)."""

    observations: tuple[Observation, ...]
    seeds: tuple[int, ...]
    reference: Decoded


def encode_samples(observations: Sequence[Observation], seeds: Sequence[int], reference: Decoded) -> bytes:
    """The ``.npz`` bytes of a sample set (compressed; the synthetic scenes are flat colours)."""
    cameras = sorted(observations[0].images)
    arrays: dict[str, np.ndarray] = {f"image_{c}": np.stack([o.images[c] for o in observations]) for c in cameras}
    arrays.update(
        proprio=np.stack([np.asarray(o.proprio, np.float64) for o in observations]),
        instruction=np.array([o.instruction for o in observations]),
        seed=np.asarray(seeds, np.int64),
        actions=np.asarray(reference.actions, np.float32),
        iterations=np.asarray(reference.iterations, np.int64),
        reasons=np.array(reference.reasons),
        changes=np.asarray(reference.changes, np.float32),
    )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_samples(path: Path) -> ParitySamples:
    """Read a sample set written by :func:`encode_samples` (EngineError naming the file when unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            cameras = [k.removeprefix("image_") for k in data.files if k.startswith("image_")]
            images = {c: data[f"image_{c}"] for c in cameras}
            proprio, instructions = data["proprio"], data["instruction"]
            observations = tuple(Observation({c: images[c][i] for c in cameras}, proprio[i], str(instructions[i]))
                                 for i in range(len(proprio)))
            reference = Decoded(data["actions"], data["iterations"], tuple(str(r) for r in data["reasons"]),
                                data["changes"])
            seeds = tuple(int(s) for s in data["seed"])
    except (OSError, KeyError, ValueError) as exc:
        raise EngineError(f"{path}: unreadable parity samples ({exc}); re-export the model") from None
    return ParitySamples(observations, seeds, reference)


@dataclass(frozen=True)
class ParityResult:
    """The outcome of :func:`compare` (errors in the units of the change metric / normalised actions)."""

    passed: bool
    samples: int
    same_k: int
    ambiguous: int
    max_change_error: float
    change_bound: float
    max_action_error: float
    action_bound: float
    failures: tuple[str, ...] = ()
    rule: int = RULE_VERSION

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        text = (f"{verdict}: same k {self.same_k}/{self.samples} ({self.ambiguous} at the threshold), change error "
                f"{self.max_change_error:.2e} (bound {self.change_bound:.2e}), action error "
                f"{self.max_action_error:.2e} (bound {self.action_bound:g})")
        return text + (f"; {'; '.join(self.failures[:3])}" if self.failures else "")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failures": list(self.failures)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParityResult:
        return cls(**{**dict(data), "failures": tuple(data.get("failures", ()))})


def compare(reference: Decoded, got: Decoded, delta: float) -> ParityResult:
    """Apply the module's rule to a decode of the samples (``got``) against the FP32 ``reference``."""
    n = len(reference.iterations)
    if got.actions.shape != reference.actions.shape:
        raise EngineError(f"parity: decoded {list(got.actions.shape)}, reference {list(reference.actions.shape)}")
    action_error = np.abs(np.asarray(got.actions, np.float64) - reference.actions).reshape(n, -1).max(axis=1)
    rows = min(len(reference.changes), len(got.changes))
    ref_changes = np.asarray(reference.changes[:rows], np.float64)
    got_changes = np.asarray(got.changes[:rows], np.float64)
    bound = CHANGE_FRACTION * delta if delta > 0 else float("inf")
    both = np.isfinite(ref_changes) & np.isfinite(got_changes) & (ref_changes < DECIDING_RANGE * max(delta, 0.0))
    change_error = np.where(both, np.abs(got_changes - ref_changes), 0.0).max(axis=0) if rows else np.zeros(n)
    near = np.isfinite(reference.changes) & (np.abs(np.asarray(reference.changes, np.float64) - delta) < bound)
    ambiguous = near.any(axis=0) if delta > 0 and len(reference.changes) else np.zeros(n, bool)
    same_k = np.asarray(got.iterations) == np.asarray(reference.iterations)
    failures = []
    for i in range(n):
        if change_error[i] >= bound:
            failures.append(f"sample {i}: change error {change_error[i]:.2e} >= {bound:.2e}")
        if not same_k[i] and not ambiguous[i]:
            failures.append(f"sample {i}: k {int(got.iterations[i])} vs {int(reference.iterations[i])}")
        if action_error[i] > ACTION_TOLERANCE:
            failures.append(f"sample {i}: action error {action_error[i]:.2e} > {ACTION_TOLERANCE:g}")
    return ParityResult(
        passed=not failures, samples=n, same_k=int(same_k.sum()), ambiguous=int(ambiguous.sum()),
        max_change_error=float(change_error.max()) if n else 0.0, change_bound=bound,
        max_action_error=float(action_error.max()) if n else 0.0, action_bound=ACTION_TOLERANCE,
        failures=tuple(failures),
    )


def decode_samples(observations: Sequence[Observation], seeds: Sequence[int],
                   prepare: Callable[[Sequence[Observation]], Any], decode: Callable[[Any, Sequence[int]], Decoded],
                   batch: int) -> Decoded:
    """Decode ``observations`` in batches of at most ``batch`` with ``decode(inputs, seeds)`` (which must read the
    change at every iteration) and stack the results as one :class:`Decoded` (changes padded with NaN)."""
    parts = []
    for start in range(0, len(observations), batch):
        stop = start + batch
        parts.append(decode(prepare(observations[start:stop]), list(seeds[start:stop])))
    rows = max(len(p.changes) for p in parts)
    changes = [np.vstack([p.changes, np.full((rows - len(p.changes), p.changes.shape[1]), np.nan, np.float32)])
               for p in parts]
    return Decoded(np.concatenate([p.actions for p in parts]), np.concatenate([p.iterations for p in parts]),
                   tuple(r for p in parts for r in p.reasons), np.hstack(changes))


@dataclass(frozen=True)
class ParityRecord:
    """A :class:`ParityResult` for one engine set, and whether (and by whom) a failing one was accepted."""

    result: ParityResult
    engines: Mapping[str, str] = field(default_factory=dict)
    checked_at: float = 0.0
    accepted_by: str = ""

    @property
    def usable(self) -> bool:
        return self.result.passed or bool(self.accepted_by)

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result.to_json(), "engines": dict(self.engines), "checked_at": self.checked_at,
                "accepted_by": self.accepted_by}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParityRecord:
        return cls(ParityResult.from_json(data["result"]), dict(data.get("engines", {})),
                   float(data.get("checked_at", 0.0)), str(data.get("accepted_by", "")))


def read_record(path: Path) -> ParityRecord | None:
    """The record at ``path``, or None when absent or unreadable (the check then runs again)."""
    try:
        return ParityRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def accepted(record: ParityRecord) -> ParityRecord:
    """``record`` marked as accepted by the current user (at the current time)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown user"
    return ParityRecord(record.result, record.engines, record.checked_at,
                        f"{user} at {time.strftime('%Y-%m-%d %H:%M:%S %z')}")
