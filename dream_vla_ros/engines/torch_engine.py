"""The torch backend: :class:`~dream_vla_ros.policy.inference.TorchPolicy` behind the :class:`Engine` contract.

On CUDA it can run in FP16/BF16 (autocast: LayerNorm, softmax and the halting metric's reductions stay FP32)
and, for the recurrent decoder at batch 1, replay CUDA graphs of the encode graph and the core step
(:mod:`.cuda_graphs`). CPU runs are FP32 eager. An FP32 engine on CUDA turns TF32 off for the process:
torch's default runs cuDNN convolutions in TF32, which moved the shipped model's joint targets by 2.1e-4
against the CPU on an H100 (2.4e-6 with TF32 off).
"""

from __future__ import annotations

from pathlib import Path

from dream_vla_ros.engines.base import ModelMetadata
from dream_vla_ros.engines.common import HostPipeline, NamedEngine, override_halting
from dream_vla_ros.errors import EngineError
from dream_vla_ros.policy.observation import ChunkPrediction, Observation

PRECISIONS = ("fp32", "fp16", "bf16")


class TorchEngine(NamedEngine):
    """Runs a checkpoint directory with torch.

    device: ``cpu``, ``cuda`` or ``cuda:N``.
    threads: torch intra-op threads for this process (0 = torch's default).
    precision: ``fp32``; ``fp16`` or ``bf16`` (autocast) on CUDA only.
    seed: scratchpad noise seed (same observation + seed = same chunk).
    halting_k_max / halting_delta: override the checkpoint's halting defaults (0 / negative = keep them).
    cuda_graphs: on CUDA, replay CUDA graphs for single observations of a recurrent model (captured at the
        first inference, i.e. during warm-up).
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
        cuda_graphs: bool = True,
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
        if precision != "fp32" and device == "cpu":
            raise EngineError(f"torch backend: precision {precision!r} needs a CUDA device (CPU runs fp32)")
        if threads < 0:
            raise EngineError(f"torch backend: threads must be >= 0, got {threads}")
        if threads:
            torch.set_num_threads(threads)
        if device.startswith("cuda") and precision == "fp32":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._policy = TorchPolicy.from_checkpoint(model_dir, device=device, seed=seed)
        self.set_halting(halting_k_max, halting_delta)
        self._precision = precision
        self._metadata = ModelMetadata.from_model_config(self._policy.config)
        self._graphs = None
        self._name = f"torch {device} {precision}"
        if device.startswith("cuda") and cuda_graphs and self._policy.model.kind == "recurrent":
            from dream_vla_ros.engines.cuda_graphs import CudaGraphDecoder

            self._graphs = CudaGraphDecoder(self._policy, precision)
            self._host = HostPipeline(self._policy.config)
            self._name += " cuda-graphs"

    def set_halting(self, k_max: int = 0, delta: float = -1.0) -> None:
        """Halting overrides for the chunks from now on (0 / negative = the checkpoint's default; safe while
        running)."""
        self._policy.halting = override_halting(self._policy.config.halting, k_max, delta)

    def infer(self, observation: Observation) -> ChunkPrediction:
        policy = self._policy
        if self._graphs is not None:
            decode = lambda inputs, seeds: self._graphs.decode(inputs, self._host.noise(seeds), policy.halting)  # noqa: E731
            return self._host.run([observation], decode, [policy.seed])[0]
        from dream_vla_ros.engines.cuda_graphs import autocast

        with autocast(policy.device, self._precision):
            return policy.infer(observation)
