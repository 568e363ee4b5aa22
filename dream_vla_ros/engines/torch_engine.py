"""The torch backend: :class:`~dream_vla_ros.policy.inference.TorchPolicy` behind the :class:`Engine` contract."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dream_vla_ros.engines.base import ModelMetadata
from dream_vla_ros.errors import EngineError
from dream_vla_ros.policy.observation import ChunkPrediction, Observation

PRECISIONS = ("fp32",)


class TorchEngine:
    """Runs a checkpoint directory with torch.

    device: ``cpu``, ``cuda`` or ``cuda:N``.
    threads: torch intra-op threads for this process (0 = torch's default).
    precision: ``fp32`` (reduced precision comes with the TensorRT backend).
    seed: scratchpad noise seed (same observation + seed = same chunk).
    halting_k_max / halting_delta: override the checkpoint's halting defaults (0 / negative = keep them).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        threads: int = 0,
        precision: str = "fp32",
        seed: int = 0,
        halting_k_max: int = 0,
        halting_delta: float = -1.0,
    ) -> None:
        import torch

        from dream_vla_ros.policy.inference import TorchPolicy

        if precision not in PRECISIONS:
            raise EngineError(
                f"torch backend: precision {precision!r} is not supported (supported: {', '.join(PRECISIONS)})"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"torch backend: device {device!r} requested but no CUDA device is available")
        if device != "cpu" and not device.startswith("cuda"):
            raise EngineError(f"torch backend: unknown device {device!r} (use cpu, cuda or cuda:N)")
        if threads < 0:
            raise EngineError(f"torch backend: threads must be >= 0, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        self._policy = TorchPolicy.from_checkpoint(model_dir, device=device, seed=seed)
        halting = self._policy.halting
        if halting_k_max > 0:
            halting = dataclasses.replace(halting, k_max=halting_k_max, k_min=min(halting.k_min, halting_k_max))
        if halting_delta >= 0.0:
            halting = dataclasses.replace(halting, delta=halting_delta)
        self._policy.halting = halting
        self._metadata = ModelMetadata.from_model_config(self._policy.config)
        self._name = f"torch {device} {precision}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def metadata(self) -> ModelMetadata:
        return self._metadata

    def infer(self, observation: Observation) -> ChunkPrediction:
        return self._policy.infer(observation)
