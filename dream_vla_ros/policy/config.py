"""Model configuration: one frozen dataclass tree per checkpoint, plus the presets ``tiny``, ``sim`` and ``orin``.

Torch-free (engines and nodes read it without the model). Everything a checkpoint needs to rebuild the network
and to turn an :class:`~dream_vla_ros.policy.observation.Observation` into model inputs lives here: joint names,
dt, chunk length H, image size and crop, cameras, tokenizer, normalisation statistics, the decoder kind and the
runtime halting defaults. Round-trips through ``configuration.to_mapping`` / ``configuration.from_mapping``.

Presets (sizes, FLOPs, timings and training speeds from ``dream-vla-ros bench policy`` and training runs are in
docs/performance.md):

- ``tiny``: tests. 0.17M parameters, one 32 px camera, H=4, 3 joints, instruction bytes merged 2 at a time;
  learns the synthetic task of ``synthetic.py`` in seconds.
- ``sim``: the Meta-World MT10 model, sized to train on a 2-core CPU. One 96x96 camera, 8 joints (7 arm +
  gripper), H=16 at dt=0.025 s: every 2nd step of the 80 Hz env, 0.4 s of motion, which covers inference
  latency plus a replanning interval with margin while halving the rows to predict (the chunk executor
  interpolates to the control rate). Actions are predicted as deltas to the current joints. 1.29M parameters
  (vision 0.16M: three stride-2 3x3 convolutions (32, 64, 128 channels) and a 2x2 patchify -> 6x6 tokens;
  trunk 0.89M: 4 layers x 128 over 36 image + 12 instruction (48 bytes merged 4 at a time) + 1 proprio
  tokens; decoder 0.23M, width 96, one weight-tied core layer). Training takes its cameras from the dataset:
  the shipped model reads two (``corner``, ``topview``: 72 image tokens).
- ``orin``: sized for 25 Hz replanning on Jetson Orin AGX in FP16 (TensorRT), well inside the 40 ms budget
  per chunk (the FLOP and byte estimate is in docs/performance.md, the per-module budget in
  docs/jetson_orin.md). Two 128x128 cameras (scene + wrist), 8 joints, H=16; trunk 8 layers x 384 over 2x64
  image + 48 byte + 1 proprio tokens; core 2 layers x 256. 17.9M parameters.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dream_vla_ros.configuration import from_mapping, require
from dream_vla_ros.errors import ConfigError

DecoderKind = Literal["recurrent", "discrete"]
HaltingMetric = Literal["action", "latent"]


@dataclass(frozen=True)
class VisionConfig:
    """Cameras and the conv-stem patch encoder.

    cameras: names of the cameras the model reads, in token order (keys of ``Observation.images``).
    image_size: square model input in pixels, after the centre crop.
    crop_fraction: side of the centre crop as a fraction of the shorter image side (1.0 = the whole short side).
    stem_channels: output channels of the stride-2 3x3 convolutions of the stem.
    patch_size: kernel = stride of the patchify convolution after the stem; tokens per camera =
        (image_size / (2 ** len(stem_channels) * patch_size)) ** 2.
    pretrained_path: optional local safetensors file with vision-encoder weights (never downloaded).
    """

    cameras: tuple[str, ...] = ("main",)
    image_size: int = 96
    crop_fraction: float = 1.0
    stem_channels: tuple[int, ...] = (32, 64)
    patch_size: int = 3
    pretrained_path: str = ""

    def __post_init__(self) -> None:
        require(len(self.cameras) >= 1, "cameras", "at least one camera is needed")
        require(len(set(self.cameras)) == len(self.cameras), "cameras", f"names must be unique, got {self.cameras}")
        require(all(c for c in self.cameras), "cameras", "names must be non-empty")
        require(8 <= self.image_size <= 1024, "image_size", f"must be in [8, 1024] px, got {self.image_size}")
        require(0.1 <= self.crop_fraction <= 1.0, "crop_fraction", f"must be in [0.1, 1], got {self.crop_fraction}")
        require(all(c >= 1 for c in self.stem_channels), "stem_channels", "channels must be >= 1")
        require(self.patch_size >= 1, "patch_size", f"must be >= 1, got {self.patch_size}")
        stride = self.stride
        require(
            self.image_size % stride == 0,
            "image_size",
            f"{self.image_size} px is not a multiple of the encoder stride {stride} "
            f"(2 ** len(stem_channels) * patch_size)",
        )

    @property
    def stride(self) -> int:
        return 2 ** len(self.stem_channels) * self.patch_size

    @property
    def grid(self) -> int:
        """Patch tokens per side of one camera image."""
        return self.image_size // self.stride

    @property
    def tokens_per_camera(self) -> int:
        return self.grid**2


@dataclass(frozen=True)
class TokenizerConfig:
    """How an instruction reaches the trunk.

    kind: ``bytes``: UTF-8 bytes + 1 (id 0 = padding), embeddings learned from scratch, nothing to download;
        ``wordllama``: WordLlama's pretrained, frozen 32,000 x 256 token embeddings and its tokenizer (read
        from the installed ``wordllama`` wheel, see :mod:`dream_vla_ros.policy.wordllama`), projected and
        pooled by learned attention into ``queries`` trunk tokens, so instructions of any length up to
        ``max_tokens`` tokens cost the trunk the same.
    max_tokens: instruction length in tokens (bytes for ``bytes``). Byte instructions longer than that are
        truncated (old checkpoints); ``wordllama`` refuses them.
    lowercase: fold case before encoding (phrasings differ in case more often than in meaning).
    pool: ``bytes`` only: consecutive byte embeddings merged (concatenated, then one linear map) into one
        trunk token; the trunk sees ``max_tokens / pool`` instruction tokens. 1 = one token per byte.
    queries: ``wordllama`` only: instruction tokens the trunk sees (learned attention-pooling queries).
    weights_sha256: ``wordllama`` only: SHA-256 of the embedding file the model was trained with; loading
        with another file is refused.
    """

    kind: Literal["bytes", "wordllama"] = "bytes"
    max_tokens: int = 48
    lowercase: bool = True
    pool: int = 1
    queries: int = 12
    weights_sha256: str = ""

    def __post_init__(self) -> None:
        require(1 <= self.max_tokens <= 512, "max_tokens", f"must be in [1, 512], got {self.max_tokens}")
        require(self.pool >= 1, "pool", f"must be >= 1, got {self.pool}")
        require(1 <= self.queries <= 64, "queries", f"must be in [1, 64], got {self.queries}")
        require(
            self.kind != "bytes" or self.max_tokens % self.pool == 0,
            "max_tokens",
            f"{self.max_tokens} is not a multiple of pool {self.pool}",
        )

    @property
    def vocab_size(self) -> int:
        return 257 if self.kind == "bytes" else 32000

    @property
    def trunk_tokens(self) -> int:
        """Instruction tokens the trunk attends over."""
        return self.max_tokens // self.pool if self.kind == "bytes" else self.queries


@dataclass(frozen=True)
class GoalConfig:
    """What a new goal is compared with before the model acts on it (:mod:`dream_vla_ros.policy.goals`).

    known: (task, instruction) pairs the model was trained on (empty: every goal is accepted).
    min_confidence: the default acceptance threshold on the best cosine similarity of a goal's sentence
        embedding to a known instruction (measured at training time; the policy node's
        ``min_goal_confidence`` parameter overrides it).
    """

    known: tuple[tuple[str, str], ...] = ()
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        require(-1.0 <= self.min_confidence <= 1.0, "min_confidence",
                f"must be in [-1, 1], got {self.min_confidence}")


@dataclass(frozen=True)
class TrunkConfig:
    """Bidirectional pre-norm transformer over [image tokens, instruction tokens, proprio token].

    mid_layer: the layer (1-based) whose output feeds the recurrent decoder's prelude.
    """

    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    mid_layer: int = 2

    def __post_init__(self) -> None:
        require(self.width >= 8, "width", f"must be >= 8, got {self.width}")
        require(self.heads >= 1 and self.width % self.heads == 0, "heads", f"must divide width {self.width}")
        require(self.layers >= 1, "layers", f"must be >= 1, got {self.layers}")
        require(1 <= self.mid_layer <= self.layers, "mid_layer", f"must be in [1, layers={self.layers}]")
        require(0.5 <= self.mlp_ratio <= 8.0, "mlp_ratio", f"must be in [0.5, 8], got {self.mlp_ratio}")


@dataclass(frozen=True)
class DecoderConfig:
    """Action decoder: ``recurrent`` (RD-VLA style, default) or ``discrete`` (masked discrete diffusion).

    width/heads/mlp_ratio: size of every decoder block (prelude, core, discrete layers).
    prelude_layers: blocks of the prelude (learned chunk queries cross-attending to mid-layer features).
    core_layers: blocks of the weight-tied core applied k times.
    init_sigma: scale of the noisy scratchpad initialisation (times a learned gain, RD-VLA's sigma_init).
    discrete_layers: blocks of the discrete decoder.
    bins: quantisation bins per joint value for the discrete decoder.
    bin_range: normalised actions are clipped to [-bin_range, bin_range] and binned uniformly.
    """

    kind: DecoderKind = "recurrent"
    width: int = 96
    heads: int = 4
    mlp_ratio: float = 2.0
    prelude_layers: int = 1
    core_layers: int = 1
    init_sigma: float = 0.632
    discrete_layers: int = 2
    bins: int = 64
    bin_range: float = 1.5

    def __post_init__(self) -> None:
        require(self.width >= 8, "width", f"must be >= 8, got {self.width}")
        require(self.heads >= 1 and self.width % self.heads == 0, "heads", f"must divide width {self.width}")
        require(0.5 <= self.mlp_ratio <= 8.0, "mlp_ratio", f"must be in [0.5, 8], got {self.mlp_ratio}")
        require(self.prelude_layers >= 1, "prelude_layers", "must be >= 1")
        require(self.core_layers >= 1, "core_layers", "must be >= 1")
        require(self.discrete_layers >= 1, "discrete_layers", "must be >= 1")
        require(0.0 <= self.init_sigma <= 10.0, "init_sigma", f"must be in [0, 10], got {self.init_sigma}")
        require(2 <= self.bins <= 4096, "bins", f"must be in [2, 4096], got {self.bins}")
        require(0.1 <= self.bin_range <= 100.0, "bin_range", f"must be in [0.1, 100], got {self.bin_range}")


@dataclass(frozen=True)
class HaltingConfig:
    """Runtime decoding settings: change them per call, no retraining needed.

    delta: stop sample i at the first k >= k_min whose change is below delta; 0 disables halting and runs
        exactly k_max iterations (reason "fixed").
    k_max: cap on recurrent-core iterations (discrete decoder: unmasking steps).
    k_min: earliest iteration at which a sample may halt (a change needs two decodes, so 2 by default).
    metric: "action" = mean squared change of the decoded normalised chunk; "latent" = of the scratchpad.
    relative: divide the change by the mean square of the previous value (scale-free threshold).
    confidence: discrete decoder: tokens whose probability reaches it are decided early.
    """

    delta: float = 1e-3
    k_max: int = 12
    k_min: int = 2
    metric: HaltingMetric = "action"
    relative: bool = False
    confidence: float = 0.9

    def __post_init__(self) -> None:
        require(self.delta >= 0.0, "delta", f"must be >= 0, got {self.delta}")
        require(1 <= self.k_max <= 256, "k_max", f"must be in [1, 256], got {self.k_max}")
        require(1 <= self.k_min <= self.k_max, "k_min", f"must be in [1, k_max={self.k_max}], got {self.k_min}")
        require(0.0 < self.confidence <= 1.0, "confidence", f"must be in (0, 1], got {self.confidence}")


@dataclass(frozen=True)
class TrainingConfig:
    """Training recipe used by :mod:`dream_vla_ros.policy.objectives` (kept in the checkpoint for provenance).

    loss: "l1" (RD-VLA) or "mse" on the normalised chunk.
    mean_depth: mu_rec; depth per step N = Poisson(exp(tau)) + 1 with tau ~ Normal(ln mu_rec - sigma^2 / 2, sigma).
    depth_sigma: sigma of that log-normal.
    max_depth: cap on N (and on the Poisson rate).
    backprop_depth: truncated BPTT: gradients flow through the last T iterations only.
    intermediate_weight: weight of the mean loss of the intermediate decodes inside the gradient window.
    mask_ratio_min: discrete decoder: per-sample mask ratio ~ Uniform(mask_ratio_min, 1).
    """

    loss: Literal["l1", "mse"] = "l1"
    mean_depth: float = 8.0
    depth_sigma: float = 0.5
    max_depth: int = 24
    backprop_depth: int = 4
    intermediate_weight: float = 0.0
    mask_ratio_min: float = 0.05

    def __post_init__(self) -> None:
        require(1.0 <= self.mean_depth <= 100.0, "mean_depth", f"must be in [1, 100], got {self.mean_depth}")
        require(0.0 <= self.depth_sigma <= 3.0, "depth_sigma", f"must be in [0, 3], got {self.depth_sigma}")
        require(1 <= self.max_depth <= 256, "max_depth", f"must be in [1, 256], got {self.max_depth}")
        require(
            1 <= self.backprop_depth <= self.max_depth,
            "backprop_depth",
            f"must be in [1, max_depth={self.max_depth}], got {self.backprop_depth}",
        )
        require(self.intermediate_weight >= 0.0, "intermediate_weight", "must be >= 0")
        require(0.0 <= self.mask_ratio_min < 1.0, "mask_ratio_min", f"must be in [0, 1), got {self.mask_ratio_min}")


@dataclass(frozen=True)
class NormalizationConfig:
    """Affine normalisation statistics: normalised = (x - offset) / scale.

    Empty tuples mean identity (offset 0, scale 1). Proprio statistics have J entries; action statistics J
    (shared by every chunk step) or H*J (row-major [H, J], per step). With ``action_mode`` "delta" the
    statistics describe target - current proprio and the model predicts that difference.
    """

    proprio_offset: tuple[float, ...] = ()
    proprio_scale: tuple[float, ...] = ()
    action_offset: tuple[float, ...] = ()
    action_scale: tuple[float, ...] = ()
    action_mode: Literal["absolute", "delta"] = "absolute"

    def __post_init__(self) -> None:
        for name in ("proprio_offset", "proprio_scale", "action_offset", "action_scale"):
            values = getattr(self, name)
            require(all(v == v and abs(v) < 1e12 for v in values), name, "values must be finite")
        for name in ("proprio_scale", "action_scale"):
            require(all(v > 0 for v in getattr(self, name)), name, "scales must be > 0")
        require(
            len(self.proprio_offset) == len(self.proprio_scale),
            "proprio_scale",
            f"has {len(self.proprio_scale)} entries, proprio_offset {len(self.proprio_offset)}",
        )
        require(
            len(self.action_offset) == len(self.action_scale),
            "action_scale",
            f"has {len(self.action_scale)} entries, action_offset {len(self.action_offset)}",
        )


@dataclass(frozen=True)
class JointEnvelope:
    """The joint positions a model was trained on: per joint, the lowest and highest position of its
    demonstrations (joint states and targets). Empty = not recorded (checkpoints from before it was).

    Outside it the model has never seen the arm and extrapolates, and a policy that drifts out tends to drive
    the arm further out; the policy node keeps predicted targets within it plus a margin (``envelope_margin``).
    """

    position_min: tuple[float, ...] = ()
    position_max: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        require(
            len(self.position_min) == len(self.position_max),
            "position_max",
            f"has {len(self.position_max)} entries, position_min {len(self.position_min)}",
        )
        values = self.position_min + self.position_max
        require(all(v == v and abs(v) < 1e6 for v in values), "position_min", "values must be finite")
        require(
            all(lo <= hi for lo, hi in zip(self.position_min, self.position_max, strict=True)),
            "position_min",
            "must not exceed position_max",
        )

    def union(self, other: JointEnvelope) -> JointEnvelope:
        """The smallest envelope holding both (an empty one holds nothing)."""
        if not other.position_min:
            return self
        if not self.position_min:
            return other
        return JointEnvelope(
            tuple(min(a, b) for a, b in zip(self.position_min, other.position_min, strict=True)),
            tuple(max(a, b) for a, b in zip(self.position_max, other.position_max, strict=True)),
        )


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a policy checkpoint.

    joint_names: joint order of proprio and actions (the gripper is a joint).
    dt: seconds between chunk rows; chunk_length: H rows per chunk.
    """

    preset: str = "custom"
    joint_names: tuple[str, ...] = ("joint_1", "joint_2", "joint_3")
    dt: float = 0.025
    chunk_length: int = 16
    vision: VisionConfig = field(default_factory=VisionConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    halting: HaltingConfig = field(default_factory=HaltingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    envelope: JointEnvelope = field(default_factory=JointEnvelope)
    goals: GoalConfig = field(default_factory=GoalConfig)

    def __post_init__(self) -> None:
        require(bool(self.preset), "preset", "must be non-empty")
        require(len(self.joint_names) >= 1, "joint_names", "at least one joint is needed")
        require(
            len(set(self.joint_names)) == len(self.joint_names), "joint_names", f"must be unique: {self.joint_names}"
        )
        require(0.0 < self.dt <= 10.0, "dt", f"must be in (0, 10] s, got {self.dt}")
        require(1 <= self.chunk_length <= 256, "chunk_length", f"must be in [1, 256], got {self.chunk_length}")
        norm, j, h = self.normalization, self.num_joints, self.chunk_length
        require(
            len(norm.proprio_offset) in (0, j),
            "normalization.proprio_offset",
            f"has {len(norm.proprio_offset)} entries, expected {j} (one per joint) or none",
        )
        require(
            len(norm.action_offset) in (0, j, h * j),
            "normalization.action_offset",
            f"has {len(norm.action_offset)} entries, expected {j} (per joint), {h * j} (per step and joint) or none",
        )
        require(
            len(self.envelope.position_min) in (0, j),
            "envelope.position_min",
            f"has {len(self.envelope.position_min)} entries, expected {j} (one per joint) or none",
        )

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_context_tokens(self) -> int:
        """Tokens the trunk attends over: image patches of every camera, instruction tokens, one proprio token."""
        return len(self.vision.cameras) * self.vision.tokens_per_camera + self.tokenizer.trunk_tokens + 1


SAWYER_JOINTS = ("right_j0", "right_j1", "right_j2", "right_j3", "right_j4", "right_j5", "right_j6", "gripper")


def _tiny() -> ModelConfig:
    return ModelConfig(
        preset="tiny",
        joint_names=("joint_a", "joint_b", "gripper"),
        dt=0.05,
        chunk_length=4,
        vision=VisionConfig(cameras=("main",), image_size=32, stem_channels=(16,), patch_size=4),
        tokenizer=TokenizerConfig(max_tokens=12, pool=2),
        trunk=TrunkConfig(width=64, layers=2, heads=4, mlp_ratio=2.0, mid_layer=1),
        decoder=DecoderConfig(width=48, heads=4, mlp_ratio=2.0, discrete_layers=2, bins=16, bin_range=1.5),
        halting=HaltingConfig(delta=1e-3, k_max=12, k_min=2),
        training=TrainingConfig(mean_depth=6.0, max_depth=16, backprop_depth=3),
    )


def _sim() -> ModelConfig:
    return ModelConfig(
        preset="sim",
        joint_names=SAWYER_JOINTS,
        dt=0.025,
        chunk_length=16,
        vision=VisionConfig(cameras=("corner",), image_size=96, stem_channels=(32, 64, 128), patch_size=2),
        tokenizer=TokenizerConfig(kind="wordllama", max_tokens=128, queries=12),
        trunk=TrunkConfig(width=128, layers=4, heads=4, mlp_ratio=4.0, mid_layer=2),
        decoder=DecoderConfig(width=96, heads=4, mlp_ratio=2.0, core_layers=1, bins=64),
        halting=HaltingConfig(delta=1e-3, k_max=12, k_min=2),
        training=TrainingConfig(mean_depth=8.0, max_depth=24, backprop_depth=4),
        normalization=NormalizationConfig(action_mode="delta"),
    )


def _orin() -> ModelConfig:
    return ModelConfig(
        preset="orin",
        joint_names=SAWYER_JOINTS,
        dt=0.025,
        chunk_length=16,
        vision=VisionConfig(cameras=("scene", "wrist"), image_size=128, stem_channels=(32, 64), patch_size=4),
        tokenizer=TokenizerConfig(max_tokens=48),
        trunk=TrunkConfig(width=384, layers=8, heads=6, mlp_ratio=4.0, mid_layer=4),
        decoder=DecoderConfig(width=256, heads=4, mlp_ratio=4.0, prelude_layers=1, core_layers=2, bins=128),
        halting=HaltingConfig(delta=1e-3, k_max=16, k_min=2),
        training=TrainingConfig(mean_depth=12.0, max_depth=32, backprop_depth=8),
        normalization=NormalizationConfig(action_mode="delta"),
    )


_PRESETS = {"tiny": _tiny, "sim": _sim, "orin": _orin}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str, **changes: Any) -> ModelConfig:
    """The named preset, with top-level fields replaced by ``changes`` (e.g. ``decoder=...``)."""
    if name not in _PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}")
    config = _PRESETS[name]()
    return dataclasses.replace(config, **changes) if changes else config


def with_decoder_kind(config: ModelConfig, kind: DecoderKind) -> ModelConfig:
    """``config`` with the decoder switched to ``kind`` (same trunk, same checkpoint format)."""
    return dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, kind=kind))


def model_config_from_mapping(mapping: dict[str, Any]) -> ModelConfig:
    """Build a ModelConfig from a plain mapping (the ``model`` section of a checkpoint's config.json)."""
    return from_mapping(ModelConfig, mapping)


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory, without touching the weights (no torch)."""
    from dream_vla_ros.errors import CheckpointError

    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (is {directory} a model directory?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level")
    return data
