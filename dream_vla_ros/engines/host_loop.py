"""The host halting loop of the exported-graph backends (numpy only: no torch, no onnxruntime, no tensorrt).

- :class:`HaltingTracker`: the halting rule of ``policy.halting.run_halting_loop`` for a host loop that reads
  one change scalar per sample per checked iteration. Samples of a batch are independent, so instead of
  freezing a stopped sample's state the loop keeps running the batch and the tracker keeps each sample's
  actions from the iteration it stopped at: same k and same chunk as torch.
- :func:`unmask_numpy` / :func:`dequantize`: the discrete decoder's confidence-ordered unmasking
  (``discrete_decoder.unmask``) and its bin centres.
- :class:`HostLoopEngine`: the :class:`~.base.Engine` of a backend that runs an export's encode and step
  graphs with the loop on the host (ONNX Runtime, TensorRT). It owns the flow (template method): the common
  settings' checks, the export's validation (``manifest.load_export``), the input checks (one seed per
  sample, the export's batch range), the recurrent halting loop or the discrete unmasking, and the stage
  timings. A backend supplies the graph calls: :meth:`~HostLoopEngine._encode`,
  :meth:`~HostLoopEngine._core_step`, :meth:`~HostLoopEngine._logits`, and where it needs them
  :meth:`~HostLoopEngine._device` and :meth:`~HostLoopEngine._timings`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.engines.base import ModelMetadata
from dream_vla_ros.engines.common import Decoded, HostPipeline, NamedEngine, override_halting
from dream_vla_ros.engines.manifest import load_export
from dream_vla_ros.errors import EngineError
from dream_vla_ros.policy.config import HaltingConfig, ModelConfig
from dream_vla_ros.policy.observation import CONVERGED, FIXED, MAX_ITERATIONS, ChunkPrediction, Observation


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

    def result(self) -> Decoded:
        """The batch's chunks, iterations, reasons and change history (no timings)."""
        assert self.actions is not None, "the loop ended before k_max without stopping every sample"
        if self.halting.delta > 0.0:
            reasons = tuple(CONVERGED if c else MAX_ITERATIONS for c in self.converged)
        else:
            reasons = (FIXED,) * len(self.converged)
        changes = np.stack(self._changes) if self._changes else np.zeros((0, len(reasons)), np.float32)
        return Decoded(self.actions, self.iterations.copy(), reasons, changes)


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


ChangeAndActions = tuple[np.ndarray | None, Callable[[], np.ndarray]]
"""What one core step gives the loop: the change [B] (None when not read) and a reader of its chunk [B, H, J]."""


class HostLoopEngine(NamedEngine):
    """An export run graph by graph with the halting loop on the host; subclasses supply the graph calls.

    ``backend`` names the subclass in error messages. The constructor checks ``threads`` >= 0 and
    ``check_every`` >= 1, loads and validates the export (a checkpoint directory with an ``onnx/`` export also
    works), and sets ``export``, ``config``, ``pipeline``, ``halting`` (with the node-level overrides), ``seed``,
    ``check_every`` and the metadata; the subclass then opens its sessions and sets ``_name``.
    """

    backend = "host loop"

    def __init__(self, model_dir: str | Path, *, seed: int, halting_k_max: int, halting_delta: float,
                 check_every: int, threads: int) -> None:
        if threads < 0 or check_every < 1:
            raise EngineError(f"{self.backend} backend: threads must be >= 0 and check_every >= 1")
        self.export = load_export(model_dir)
        self.config: ModelConfig = self.export.config
        self.pipeline = HostPipeline(self.config)
        self.seed, self.check_every = seed, check_every
        self.set_halting(halting_k_max, halting_delta)
        self._metadata = ModelMetadata.from_model_config(self.config)

    def set_halting(self, k_max: int = 0, delta: float = -1.0) -> None:
        """Halting overrides for the chunks from now on (0 / negative = the model's default; safe while running)."""
        self.halting = override_halting(self.config.halting, k_max, delta)

    def infer(self, observation: Observation) -> ChunkPrediction:
        return self.infer_batch([observation])[0]

    def infer_batch(self, observations: Sequence[Observation], seeds: Sequence[int] | None = None,
                    ) -> list[ChunkPrediction]:
        """One chunk per observation (each sample halts on its own; the batch shares its timings)."""
        seeds = [self.seed] * len(observations) if seeds is None else list(seeds)
        return self.pipeline.run(observations, self.decode, seeds)

    def decode(self, inputs, seeds: Sequence[int] | None = None, halting: HaltingConfig | None = None,
               check_every: int | None = None) -> Decoded:
        """``preprocess.ModelInputs`` -> normalised chunks, iterations, reasons, change history and the stage
        timings ``trunk`` and ``core``; ``halting`` / ``check_every`` override the engine's."""
        halting = halting or self.halting
        batch = inputs.images.shape[0]
        seeds = [self.seed] * batch if seeds is None else list(seeds)
        if len(seeds) != batch:
            raise EngineError(f"seeds: got {len(seeds)} seeds for a batch of {batch}")
        if batch > self.export.batch.max:
            raise EngineError(f"batch {batch} exceeds the export's maximum batch {self.export.batch.max}")
        recurrent = self.config.decoder.kind == "recurrent"
        with self._device():
            t0 = time.perf_counter()
            run = self._encode(inputs, self.pipeline.noise(seeds) if recurrent else None)
            t1 = time.perf_counter()
            if recurrent:
                decoded = self._recurrent_loop(run, batch, halting, check_every or self.check_every)
            else:
                decoded = self._discrete_loop(run, batch, halting)
            timings = self._timings(run, t0, t1, time.perf_counter())
        return dataclasses.replace(decoded, timings_ms=timings)

    def _recurrent_loop(self, run: Any, batch: int, halting: HaltingConfig, check_every: int) -> Decoded:
        tracker = HaltingTracker(batch, halting, check_every)
        for k in range(1, halting.k_max + 1):
            change, actions = self._core_step(run, k, tracker.wants_change(k))
            if tracker.update(k, change, actions):
                break
        return tracker.result()

    def _discrete_loop(self, run: Any, batch: int, halting: HaltingConfig) -> Decoded:
        c = self.config
        ids, iterations, reasons = unmask_numpy(lambda values: self._logits(run, values),
                                                (batch, c.chunk_length, c.num_joints), c.decoder.bins, halting)
        return Decoded(dequantize(ids, c), iterations, reasons, np.zeros((0, batch), np.float32))

    # -- the backend's steps ---------------------------------------------------------------------------------
    def _encode(self, inputs, noise: np.ndarray | None) -> Any:
        """Run the encode graph on ``inputs`` (and the scratchpad ``noise`` [B, H, w]; None for the discrete
        decoder); returns this chunk's state for :meth:`_core_step` / :meth:`_logits`."""
        raise NotImplementedError

    def _core_step(self, run: Any, k: int, read_change: bool) -> ChangeAndActions:
        """Core iteration k (recurrent decoder): the change [B] when ``read_change`` (else None) and a reader of
        this iteration's normalised chunk (called only when some sample stops now)."""
        raise NotImplementedError

    def _logits(self, run: Any, values: np.ndarray) -> np.ndarray:
        """One unmasking step (discrete decoder): bin ids int64 [B, H, J] -> logits [B, H, J, bins]."""
        raise NotImplementedError

    def _device(self) -> contextlib.AbstractContextManager[Any]:
        """The context a decode runs in (e.g. making the backend's GPU current); none by default."""
        return contextlib.nullcontext()

    def _timings(self, run: Any, start: float, encoded: float, end: float) -> dict[str, float]:
        """Stage milliseconds from the host clock (``time.perf_counter`` seconds) around the encode and the loop."""
        return {"trunk": (encoded - start) * 1e3, "core": (end - encoded) * 1e3}
