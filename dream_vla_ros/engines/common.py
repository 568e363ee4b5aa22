"""Host-side pieces the backends share (numpy only: no torch, no onnxruntime, no tensorrt).

- :class:`HostPipeline`: observation -> model inputs (``policy.preprocess``), per-seed scratchpad noise, and
  normalised chunks -> :class:`ChunkPrediction` (same preprocessing and de-normalisation as ``TorchPolicy``).
- :class:`Decoded`: a batch of normalised chunks with iterations, reasons, change history and stage timings.
- :class:`NamedEngine`: the ``name`` and ``metadata`` of the :class:`~.base.Engine` contract.
- :func:`heartbeat`: progress messages while something slow (an engine build) runs.
"""

from __future__ import annotations

import dataclasses
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
