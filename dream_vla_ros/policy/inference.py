"""Torch inference API: ``Observation -> ChunkPrediction`` (what ``engines/`` wraps and nodes call).

    policy = TorchPolicy.from_checkpoint("models/sim")           # or TorchPolicy(build_model(config))
    prediction = policy.infer(observation)                      # ChunkPrediction, physical units
    predictions = policy.infer_batch([obs_a, obs_b], seeds=[0, 1])
    policy.halting = dataclasses.replace(policy.halting, delta=5e-4, k_max=8, metric="latent")  # no retraining

Deterministic: the scratchpad noise of a sample comes from its seed only (default ``policy.seed``), so the same
observation and seed give the same chunk, alone or in any batch. Per-stage timings (ms): "preprocess"
(numpy/OpenCV), "trunk" (vision + trunk + prelude + context K/V, once per chunk), "core" (all iterations incl.
their Coda decode and halting check; discrete: all unmasking steps), "postprocess" (de-normalisation), "total".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import HaltingConfig, ModelConfig
from dream_vla_ros.policy.discrete_decoder import unmask
from dream_vla_ros.policy.halting import run_halting_loop
from dream_vla_ros.policy.model import (
    CoreStepGraph,
    DiscreteEncodeGraph,
    DiscreteStepGraph,
    EncodeGraph,
    VlaModel,
)
from dream_vla_ros.policy.normalization import Normalizer
from dream_vla_ros.policy.observation import ChunkPrediction, Observation, chunk_predictions
from dream_vla_ros.policy.preprocess import ModelInputs, prepare_inputs, scratchpad_noise
from dream_vla_ros.policy.tokenizer import make_tokenizer


@dataclass(frozen=True)
class DecodeOutput:
    """Batch decode result: actions [B, H, J] normalised; iterations [B]; reasons; changes [k_run, B] (NaN once a
    sample stopped; empty for the discrete decoder); timings in ms for the whole batch."""

    actions: np.ndarray
    iterations: np.ndarray
    reasons: tuple[str, ...]
    changes: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


class TorchPolicy:
    """A :class:`VlaModel` behind ``infer(observation) -> ChunkPrediction``."""

    def __init__(
        self,
        model: VlaModel,
        *,
        halting: HaltingConfig | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config: ModelConfig = model.config
        self.tokenizer = make_tokenizer(self.config.tokenizer)
        self.normalizer = Normalizer.for_model(self.config)
        self.halting: HaltingConfig = halting or self.config.halting
        self.seed = seed
        self._steps: dict[tuple[str, bool], CoreStepGraph] = {}
        self._noise: dict[int, torch.Tensor] = {}  # seed -> [H, w] scratchpad noise (a pure function of the seed)
        if model.kind == "recurrent":
            self._encode = EncodeGraph(self.model)
        else:
            self._discrete_encode = DiscreteEncodeGraph(self.model)
            self._discrete_step = DiscreteStepGraph(self.model)

    @classmethod
    def from_checkpoint(cls, directory: str | Path, **kwargs) -> TorchPolicy:
        """Load a checkpoint directory (validated, see ``checkpoint.load_checkpoint``)."""
        from dream_vla_ros.policy.checkpoint import load_checkpoint

        device = kwargs.get("device", "cpu")
        return cls(load_checkpoint(directory, device=device), **kwargs)

    def core_step(self, metric: str, relative: bool) -> CoreStepGraph:
        """The step graph for one halting metric (built once; weights shared with the model)."""
        key = (metric, relative)
        if key not in self._steps:
            self._steps[key] = CoreStepGraph(self.model, metric, relative).eval()  # type: ignore[arg-type]
        return self._steps[key]

    def _seed_noise(self, seed: int) -> torch.Tensor:
        if seed not in self._noise:
            if len(self._noise) >= 64:
                self._noise.clear()
            noise = scratchpad_noise([seed], self.config.chunk_length, self.config.decoder.width)[0]
            self._noise[seed] = torch.from_numpy(noise).to(self.device)
        return self._noise[seed]

    def prepare(self, observations: Sequence[Observation]) -> ModelInputs:
        return prepare_inputs(observations, self.config, self.tokenizer, self.normalizer)

    @torch.inference_mode()
    def decode(
        self, inputs: ModelInputs, seeds: Sequence[int] | None = None, halting: HaltingConfig | None = None
    ) -> DecodeOutput:
        """Model inputs -> normalised chunks, per-sample iterations and halting reasons."""
        halting = halting or self.halting
        batch = inputs.images.shape[0]
        seeds = [self.seed] * batch if seeds is None else list(seeds)
        if len(seeds) != batch:
            raise InputError(f"seeds: got {len(seeds)} seeds for a batch of {batch}")
        images = torch.from_numpy(inputs.images).to(self.device)
        tokens = torch.from_numpy(inputs.tokens).to(self.device)
        proprio = torch.from_numpy(inputs.proprio).to(self.device)
        t0 = time.perf_counter()
        if self.model.kind == "recurrent":
            noise = torch.stack([self._seed_noise(s) for s in seeds])
            prelude_state, scratchpad, *kv = self._encode(images, tokens, proprio, noise)
            t1 = time.perf_counter()
            start = torch.zeros(batch, self.config.chunk_length, self.config.num_joints, device=self.device)
            step = self.core_step(halting.metric, halting.relative)
            result = run_halting_loop(step, scratchpad, start, prelude_state, tuple(kv), halting)
            actions, iterations, reasons = result.actions, result.iterations, result.reasons
            changes = result.changes.cpu().numpy()
        else:
            rows, *kv = self._discrete_encode(images, tokens, proprio)
            t1 = time.perf_counter()
            decoder = self.model.discrete()
            shape = (batch, self.config.chunk_length, self.config.num_joints)
            out = unmask(lambda v: self._discrete_step(v, rows, *kv), shape, decoder.mask_id, halting, self.device)
            actions, iterations, reasons = decoder.dequantize(out.values), out.iterations, out.reasons
            changes = np.zeros((0, batch), dtype=np.float32)
        actions_np = actions.float().cpu().numpy()
        t2 = time.perf_counter()
        return DecodeOutput(
            actions=actions_np,
            iterations=iterations.cpu().numpy(),
            reasons=reasons,
            changes=changes,
            timings_ms={"trunk": (t1 - t0) * 1e3, "core": (t2 - t1) * 1e3},
        )

    def infer_batch(
        self,
        observations: Sequence[Observation],
        *,
        seeds: Sequence[int] | None = None,
        halting: HaltingConfig | None = None,
    ) -> list[ChunkPrediction]:
        """One chunk per observation; each sample halts on its own (batch timings are shared)."""
        t0 = time.perf_counter()
        inputs = self.prepare(observations)
        t1 = time.perf_counter()
        out = self.decode(inputs, seeds, halting)
        t2 = time.perf_counter()
        positions = self.normalizer.denormalize_actions(out.actions, inputs.proprio_raw)
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            **out.timings_ms,
            "postprocess": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        return chunk_predictions(positions, joint_names=self.config.joint_names, dt=self.config.dt,
                                 stamps=inputs.stamps, iterations=out.iterations, reasons=out.reasons,
                                 timings_ms=timings)

    def infer(
        self, observation: Observation, *, seed: int | None = None, halting: HaltingConfig | None = None
    ) -> ChunkPrediction:
        """One observation -> one chunk of joint-position targets [H, J] in physical units."""
        return self.infer_batch([observation], seeds=None if seed is None else [seed], halting=halting)[0]
