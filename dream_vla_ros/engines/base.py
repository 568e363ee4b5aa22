"""The engine contract: ``Engine.infer(Observation) -> ChunkPrediction`` plus the model metadata nodes check.

Every backend (torch, ONNX Runtime, TensorRT, custom ones) implements :class:`Engine`. Nodes never look
inside an engine: they validate their configuration (cameras, joint names, image size) against
:class:`ModelMetadata`, then only call :meth:`Engine.infer`, and show :func:`engine_status` on /diagnostics.
Numpy only: no torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dream_vla_ros.policy.config import GoalConfig, JointEnvelope
from dream_vla_ros.policy.observation import ChunkPrediction, Observation


@dataclass(frozen=True)
class ModelMetadata:
    """What a node needs to know about the model behind an engine.

    joint_names: joint order of proprio and actions (the gripper is a joint).
    dt: seconds between chunk rows; chunk_length: H rows per chunk.
    cameras: camera names in the model's order (keys of ``Observation.images``).
    image_size: square model input in pixels (after the centre crop of ``crop_fraction`` of the short side).
    preset / decoder: descriptive (``tiny``, ``sim``, ...; ``recurrent`` or ``discrete``).
    envelope: the joint positions the model was trained on (empty: not recorded).
    goals: the instructions it was trained on and its default goal threshold (empty: not recorded).
    max_goal_tokens: the longest goal in tokens the model reads whole (0: byte tokens, cut at their limit).
    """

    joint_names: tuple[str, ...]
    dt: float
    chunk_length: int
    cameras: tuple[str, ...]
    image_size: int
    crop_fraction: float = 1.0
    preset: str = "custom"
    decoder: str = "recurrent"
    envelope: JointEnvelope = field(default_factory=JointEnvelope)
    goals: GoalConfig = field(default_factory=GoalConfig)
    max_goal_tokens: int = 0

    @classmethod
    def from_model_config(cls, config: Any) -> ModelMetadata:
        """From a :class:`dream_vla_ros.policy.config.ModelConfig`."""
        return cls(
            joint_names=tuple(config.joint_names),
            dt=float(config.dt),
            chunk_length=int(config.chunk_length),
            cameras=tuple(config.vision.cameras),
            image_size=int(config.vision.image_size),
            crop_fraction=float(config.vision.crop_fraction),
            preset=str(config.preset),
            decoder=str(config.decoder.kind),
            envelope=config.envelope,
            goals=config.goals,
            max_goal_tokens=int(config.tokenizer.max_tokens) if config.tokenizer.kind == "wordllama" else 0,
        )


@runtime_checkable
class Engine(Protocol):
    """An inference backend. ``infer`` may raise :class:`~dream_vla_ros.errors.InputError` (bad observation) or
    :class:`~dream_vla_ros.errors.EngineError` (the backend failed); callers must also expect any other
    exception from a faulty backend and treat it as an engine failure."""

    @property
    def name(self) -> str:
        """Backend name and settings in a few words (e.g. ``torch cpu fp32``), for logs and diagnostics."""
        ...

    @property
    def metadata(self) -> ModelMetadata: ...

    def infer(self, observation: Observation) -> ChunkPrediction: ...


def engine_status(engine: object) -> dict[str, object]:
    """An engine's optional ``status`` mapping (e.g. the TensorRT backend's device, cache, parity and CUDA graph
    state) for /diagnostics; empty for engines without one."""
    status = getattr(engine, "status", None)
    return dict(status) if isinstance(status, dict) else {}


def dummy_observation(metadata: ModelMetadata, instruction: str = "warm up") -> Observation:
    """A neutral observation of the model's shapes (black images, zero proprio) for warm-up runs."""
    side = metadata.image_size
    images = {name: np.zeros((side, side, 3), np.uint8) for name in metadata.cameras}
    return Observation(images=images, proprio=np.zeros(len(metadata.joint_names)), instruction=instruction)


def warm_up(engine: Engine, runs: int = 2) -> float:
    """Run ``runs`` dummy inferences (first calls build graphs and caches); return the last one's total ms."""
    import time

    elapsed = 0.0
    for _ in range(max(0, runs)):
        t0 = time.perf_counter()
        engine.infer(dummy_observation(engine.metadata))
        elapsed = (time.perf_counter() - t0) * 1e3
    return elapsed
