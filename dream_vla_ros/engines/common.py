"""Host-side pieces every exported-graph backend shares (numpy only: no torch, no onnxruntime, no tensorrt).

- :class:`HostPipeline`: observation -> model inputs (``policy.preprocess``), per-seed scratchpad noise, and
  normalised chunks -> :class:`ChunkPrediction` (same preprocessing and de-normalisation as ``TorchPolicy``).
- :class:`HaltingTracker`: the halting rule of ``policy.halting.run_halting_loop`` for a host loop that reads
  one change scalar per sample per checked iteration. Samples of a batch are independent, so instead of
  freezing a stopped sample's state the loop keeps running the batch and the tracker keeps each sample's
  actions from the iteration it stopped at: same k and same chunk as torch.
- :func:`unmask_numpy`: the discrete decoder's confidence-ordered unmasking (``discrete_decoder.unmask``).
- :class:`Decoded`: a batch of normalised chunks with iterations, reasons, change history and stage timings.
- :class:`NamedEngine` / :class:`HostEngine`: the :class:`~.base.Engine` contract's boilerplate (``name``,
  ``metadata``; ``infer`` / ``infer_batch`` over :meth:`HostPipeline.run`) for the backends.
- :func:`heartbeat`: progress messages while something slow (an engine build) runs.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from dream_vla_ros.engines.base import ModelMetadata
from dream_vla_ros.policy.config import HaltingConfig, ModelConfig
from dream_vla_ros.policy.observation import ChunkPrediction, Observation, chunk_predictions

Progress = Callable[[str], None]
"""Receives one-line progress messages (the policy node puts them on its ROS log and /diagnostics)."""
HEARTBEAT_S = 10.0

CONVERGED = "converged"
MAX_ITERATIONS = "max_iterations"
FIXED = "fixed"


@dataclass(frozen=True)
class Decoded:
    """actions: float32 [B, H, J] normalised; iterations: int64 [B]; reasons: B strings; changes: [k_run, B]
    (NaN where a sample had stopped or the change was not read); timings_ms for the whole batch."""

    actions: np.ndarray
    iterations: np.ndarray
    reasons: tuple[str, ...]
    changes: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


def override_halting(halting: HaltingConfig, k_max: int = 0, delta: float = -1.0) -> HaltingConfig:
    """``halting`` with the node-level overrides applied (``k_max`` > 0, ``delta`` >= 0; others keep it)."""
    if k_max > 0:
        halting = dataclasses.replace(halting, k_max=k_max, k_min=min(halting.k_min, k_max))
    if delta >= 0.0:
        halting = dataclasses.replace(halting, delta=delta)
    return halting


class HostPipeline:
    """Preprocessing, scratchpad noise and post-processing of one model config (numpy/OpenCV)."""

    def __init__(self, config: ModelConfig) -> None:
        from dream_vla_ros.policy.normalization import Normalizer
        from dream_vla_ros.policy.tokenizer import make_tokenizer

        self.config = config
        self.tokenizer = make_tokenizer(config.tokenizer)
        self.normalizer = Normalizer.for_model(config)
        self._noise: dict[int, np.ndarray] = {}

    def prepare(self, observations: Sequence[Observation]):
        """Observations -> ``preprocess.ModelInputs`` (raises InputError on anything untrustworthy)."""
        from dream_vla_ros.policy.preprocess import prepare_inputs

        return prepare_inputs(observations, self.config, self.tokenizer, self.normalizer)

    def noise(self, seeds: Sequence[int]) -> np.ndarray:
        """float32 [B, H, w]: the scratchpad noise of every seed (cached; identical to the torch backend)."""
        from dream_vla_ros.policy.preprocess import scratchpad_noise

        rows, width = self.config.chunk_length, self.config.decoder.width
        out = []
        for seed in seeds:
            if seed not in self._noise:
                if len(self._noise) >= 64:
                    self._noise.clear()
                self._noise[seed] = scratchpad_noise([seed], rows, width)[0]
            out.append(self._noise[seed])
        return np.stack(out)

    def predictions(self, inputs, decoded: Decoded, timings_ms: dict[str, float]) -> list[ChunkPrediction]:
        """Normalised chunks -> one :class:`ChunkPrediction` per sample (physical units)."""
        positions = self.normalizer.denormalize_actions(decoded.actions, inputs.proprio_raw)
        return chunk_predictions(positions, joint_names=self.config.joint_names, dt=self.config.dt,
                                 stamps=inputs.stamps, iterations=decoded.iterations, reasons=decoded.reasons,
                                 timings_ms=timings_ms)

    def run(
        self, observations: Sequence[Observation], decode: Callable[..., Decoded], seeds: Sequence[int]
    ) -> list[ChunkPrediction]:
        """prepare -> ``decode(inputs, seeds)`` -> predictions, with the stage timings of ``TorchPolicy``."""
        t0 = time.perf_counter()
        inputs = self.prepare(observations)
        t1 = time.perf_counter()
        decoded = decode(inputs, seeds)
        t2 = time.perf_counter()
        out = self.predictions(inputs, decoded, {})
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            **decoded.timings_ms,
            "postprocess": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        for prediction in out:
            prediction.timings_ms.update(timings)
        return out


class NamedEngine:
    """``name`` and ``metadata`` of the :class:`~.base.Engine` contract, from ``_name`` and ``_metadata``."""

    _name: str
    _metadata: ModelMetadata

    @property
    def name(self) -> str:
        return self._name

    @property
    def metadata(self) -> ModelMetadata:
        return self._metadata


class HostEngine(NamedEngine):
    """The :class:`~.base.Engine` contract of a backend whose ``decode(inputs, seeds) -> Decoded`` runs behind a
    :class:`HostPipeline` (preprocessing, noise, post-processing on the host)."""

    config: ModelConfig
    pipeline: HostPipeline
    halting: HaltingConfig
    seed: int

    def _init_host(self, config: ModelConfig, seed: int, halting_k_max: int, halting_delta: float) -> None:
        """Set ``config``, ``pipeline``, ``halting`` (with the node-level overrides), ``seed`` and ``_metadata``."""
        self.config = config
        self.pipeline = HostPipeline(config)
        self.set_halting(halting_k_max, halting_delta)
        self.seed = seed
        self._metadata = ModelMetadata.from_model_config(config)

    def set_halting(self, k_max: int = 0, delta: float = -1.0) -> None:
        """Halting overrides for the chunks from now on (0 / negative = the model's default; safe while running)."""
        self.halting = override_halting(self.config.halting, k_max, delta)

    def decode(self, inputs, seeds: Sequence[int] | None = None, halting: HaltingConfig | None = None,
               check_every: int | None = None) -> Decoded:
        """``preprocess.ModelInputs`` -> normalised chunks; ``halting`` / ``check_every`` override the engine's."""
        raise NotImplementedError

    def infer(self, observation: Observation) -> ChunkPrediction:
        return self.infer_batch([observation])[0]

    def infer_batch(self, observations: Sequence[Observation], seeds: Sequence[int] | None = None,
                    ) -> list[ChunkPrediction]:
        """One chunk per observation (each sample halts on its own; the batch shares its timings)."""
        seeds = [self.seed] * len(observations) if seeds is None else list(seeds)
        return self.pipeline.run(observations, self.decode, seeds)


class HaltingTracker:
    """Per-sample halting decisions of a host loop over ``k = 1 .. k_max`` iterations.

    ``check_every`` = n reads the change only at iterations k with k % n == 0 (and at k_max); n = 1 is the
    torch rule exactly. A larger n saves device->host syncs and may stop up to n - 1 iterations later.
    """

    def __init__(self, batch: int, halting: HaltingConfig, check_every: int = 1) -> None:
        self.halting = halting
        self.check_every = max(1, int(check_every))
        self.active = np.ones(batch, dtype=bool)
        self.converged = np.zeros(batch, dtype=bool)
        self.iterations = np.zeros(batch, dtype=np.int64)
        self.actions: np.ndarray | None = None
        self._changes: list[np.ndarray] = []

    def wants_change(self, k: int) -> bool:
        """Whether iteration k's change must be read back (it can decide something)."""
        h = self.halting
        return h.delta > 0.0 and k >= h.k_min and (k % self.check_every == 0 or k == h.k_max)

    def update(self, k: int, change: np.ndarray | None, actions: Callable[[], np.ndarray]) -> bool:
        """Record iteration k (``change`` [B] or None when not read); ``actions()`` gives this iteration's
        normalised chunk [B, H, J] and is called only when some sample stops now. Returns True when done."""
        self.iterations[self.active] += 1
        history = np.full(self.active.shape, np.nan, dtype=np.float32)
        stopped = np.zeros_like(self.active)
        if change is not None:
            change = np.asarray(change, dtype=np.float32).reshape(-1)
            history[self.active] = change[self.active]
            stopped = self.active & (change < self.halting.delta)
            self.converged |= stopped
        self._changes.append(history)
        if k >= self.halting.k_max:
            stopped = self.active.copy()
        if stopped.any():
            current = actions()
            if self.actions is None:
                self.actions = np.empty_like(current)
            self.actions[stopped] = current[stopped]
            self.active &= ~stopped
        return not self.active.any()

    def result(self, timings_ms: dict[str, float]) -> Decoded:
        assert self.actions is not None, "the loop ended before k_max without stopping every sample"
        if self.halting.delta > 0.0:
            reasons = tuple(CONVERGED if c else MAX_ITERATIONS for c in self.converged)
        else:
            reasons = (FIXED,) * len(self.converged)
        changes = np.stack(self._changes) if self._changes else np.zeros((0, len(reasons)), np.float32)
        return Decoded(self.actions, self.iterations.copy(), reasons, changes, timings_ms)


@contextmanager
def heartbeat(progress: Progress | None, text: str, period: float | None = None) -> Iterator[None]:
    """``progress(text)`` now, then ``progress(f"{text} (N s elapsed)")`` every ``period`` s (default
    :data:`HEARTBEAT_S`) until the block ends (from a daemon thread: the block may run the TensorRT builder,
    which releases the GIL, for minutes)."""
    if progress is None:
        yield
        return
    period = HEARTBEAT_S if period is None else period
    progress(text)
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(period):
            progress(f"{text} ({time.monotonic() - start:.0f} s elapsed)")

    thread = threading.Thread(target=beat, name="engine-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def unmask_numpy(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    shape: tuple[int, int, int],
    mask_id: int,
    halting: HaltingConfig,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Discrete decoding on the host: ``logits_fn(values int64 [B, H, J]) -> [B, H, J, bins]``.

    At step s of k_max the most confident undecided values are decided until ceil(N s / k_max) of the
    N = H J values are, plus every value whose probability reaches ``halting.confidence``; a sample halts when
    all of its values are decided. Returns (bin ids [B, H, J], iterations [B], reasons).
    """
    batch, rows, joints = shape
    n = rows * joints
    values = np.full((batch, n), mask_id, dtype=np.int64)
    decided = np.zeros((batch, n), dtype=bool)
    active = np.ones(batch, dtype=bool)
    iterations = np.zeros(batch, dtype=np.int64)
    converged = np.zeros(batch, dtype=bool)
    for s in range(1, halting.k_max + 1):
        probs = softmax(np.asarray(logits_fn(values.reshape(batch, rows, joints)), np.float32).reshape(batch, n, -1))
        confidence, prediction = probs.max(axis=-1), probs.argmax(axis=-1)
        ranked = np.where(decided, -1.0, confidence)
        order = np.argsort(-ranked, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(batch, 0), axis=1)
        need = np.maximum(math.ceil(n * s / halting.k_max) - decided.sum(axis=1), 0)
        reveal = ~decided & ((rank < need[:, None]) | (confidence >= halting.confidence)) & active[:, None]
        values = np.where(reveal, prediction, values)
        decided |= reveal
        iterations += active
        done = active & decided.all(axis=1)
        if s < halting.k_max:
            converged |= done
        active &= ~done
        if not active.any():
            break
    reasons = tuple(CONVERGED if c else MAX_ITERATIONS for c in converged)
    return values.reshape(batch, rows, joints), iterations, reasons


def dequantize(ids: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Bin ids -> bin centres in normalised units (``DiscreteDecoder.dequantize``)."""
    d = config.decoder
    return ((ids.astype(np.float32) + 0.5) * (2.0 * d.bin_range / d.bins) - d.bin_range).astype(np.float32)
