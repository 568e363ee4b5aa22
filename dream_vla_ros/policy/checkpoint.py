"""Checkpoint directories: ``config.json`` + ``model.safetensors`` + ``MODEL_CARD.md`` (torch; never unpickles).

``config.json`` holds ``format`` / ``format_version``, the full :class:`ModelConfig` under ``model``
(architecture, preset, joint names, dt, H, image size and crop, tokenizer, normalisation statistics, halting
defaults, training recipe), the weights' file name, SHA-256, parameter and tensor counts, and free-form
``metadata`` (training steps, data, metrics). Loading checks all of it and raises :class:`CheckpointError`
naming the first thing that is wrong: missing file, bad JSON, unknown format or version, invalid config,
checksum mismatch (corruption), unreadable safetensors, missing / unexpected tensor names, shape or dtype
mismatches, non-finite weights, or a joint order / preset / decoder kind other than the caller expects.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dream_vla_ros import __version__
from dream_vla_ros.configuration import to_mapping
from dream_vla_ros.errors import CheckpointError, ConfigError
from dream_vla_ros.files import sha256_file
from dream_vla_ros.policy.config import ModelConfig, model_config_from_mapping, read_checkpoint_config
from dream_vla_ros.policy.model import VlaModel, build_model, count_parameters

FORMAT = "dream_vla_ros.policy"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "MODEL_CARD.md"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_checkpoint(
    model: VlaModel, directory: str | Path, *, metadata: Mapping[str, Any] | None = None, notes: str = ""
) -> Path:
    """Write ``model`` to ``directory`` (created; files replaced atomically). ``metadata`` must be JSON-able."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in model.state_dict().items()}
    blob = save(state, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    _write_atomic(directory / WEIGHTS_FILE, blob)
    config = model.config
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": to_mapping(config),
        "weights": {
            "file": WEIGHTS_FILE,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "parameters": count_parameters(model),
            "tensors": len(state),
        },
        "metadata": dict(metadata or {}),
    }
    _write_atomic(directory / CONFIG_FILE, (json.dumps(document, indent=2) + "\n").encode())
    _write_atomic(directory / CARD_FILE, model_card(config, document, notes).encode())
    return directory


def _instruction_line(config: ModelConfig) -> str:
    t, goals = config.tokenizer, config.goals
    if t.kind == "bytes":
        text = (f"- Instruction: byte-level tokenizer, {t.max_tokens} bytes merged {t.pool} at a time into "
                f"{t.trunk_tokens} tokens, lowercase={t.lowercase}")
    else:
        text = (f"- Instruction: WordLlama 0.4.0.post1 token embeddings (frozen, 32,000 x 256, MIT licence, SHA-256 "
                f"{t.weights_sha256[:12]}...), up to {t.max_tokens} tokens pooled by {t.queries} learned queries, "
                f"lowercase={t.lowercase}")
    if goals.known:
        text += (f"; goals compared with {len(goals.known)} known instructions, accepted at confidence >= "
                 f"{goals.min_confidence:g}")
    return text


def _envelope_line(config: ModelConfig) -> str:
    e = config.envelope
    if not e.position_min:
        return "- Joint envelope: not recorded (predicted targets are not confined)"
    ranges = ", ".join(f"{n} [{lo:.3f}, {hi:.3f}]"
                       for n, lo, hi in zip(config.joint_names, e.position_min, e.position_max, strict=True))
    return f"- Joint envelope (the demonstrations' range; the policy node clips targets to it + a margin): {ranges}"


def model_card(config: ModelConfig, document: Mapping[str, Any], notes: str = "") -> str:
    """A short human-readable description of the checkpoint."""
    weights = document["weights"]
    v, d, h = config.vision, config.decoder, config.halting
    lines = [
        f"# Policy checkpoint: preset `{config.preset}`, {d.kind} decoder",
        "",
        f"- Parameters: {weights['parameters']:,} ({weights['parameters'] * 4 / 1e6:.1f} MB fp32)",
        f"- Joints ({config.num_joints}, in this order): {', '.join(config.joint_names)}",
        f"- Chunk: H = {config.chunk_length} rows at dt = {config.dt} s "
        f"({config.chunk_length * config.dt:.3f} s), actions {config.normalization.action_mode}",
        f"- Cameras: {', '.join(v.cameras)}; centre crop {v.crop_fraction:g} of the short side, "
        f"resized to {v.image_size}x{v.image_size} px",
        _instruction_line(config),
        f"- Trunk: {config.trunk.layers} layers x width {config.trunk.width}, {config.num_context_tokens} tokens",
        f"- Halting defaults: delta = {h.delta:g} ({h.metric}, relative={h.relative}), "
        f"k_min = {h.k_min}, k_max = {h.k_max}",
        _envelope_line(config),
        f"- Format {document['format']} v{document['format_version']}, package {document['package_version']}",
    ]
    metadata = document.get("metadata") or {}
    if metadata:
        lines += ["", "## Training", ""] + [f"- {k}: {value}" for k, value in metadata.items()]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def load_checkpoint(
    directory: str | Path,
    *,
    device: str | torch.device = "cpu",
    joint_names: Sequence[str] | None = None,
    preset: str | None = None,
    decoder_kind: str | None = None,
) -> VlaModel:
    """Load and validate a checkpoint directory; the optional arguments state what the caller needs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found")
    document = read_checkpoint_config(directory)
    config = _validate_document(document, directory / CONFIG_FILE)
    if joint_names is not None and tuple(joint_names) != config.joint_names:
        raise CheckpointError(
            f"{directory}: joint_names mismatch: checkpoint has {list(config.joint_names)}, "
            f"expected {list(joint_names)}"
        )
    if preset is not None and preset != config.preset:
        raise CheckpointError(f"{directory}: preset mismatch: checkpoint is {config.preset!r}, expected {preset!r}")
    if decoder_kind is not None and decoder_kind != config.decoder.kind:
        raise CheckpointError(
            f"{directory}: decoder kind mismatch: checkpoint has {config.decoder.kind!r}, expected {decoder_kind!r}"
        )
    state = _read_weights(directory / str(document["weights"]["file"]), str(document["weights"]["sha256"]))
    model = build_model(config, load_pretrained=False)
    check_state(model, state, directory / WEIGHTS_FILE)
    model.load_state_dict(state)
    return model.to(device).eval()


def _validate_document(document: Mapping[str, Any], path: Path) -> ModelConfig:
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format is {document.get('format')!r}, expected {FORMAT!r}")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported (this package reads {FORMAT_VERSION})"
        )
    if not isinstance(document.get("model"), Mapping):
        raise CheckpointError(f"{path}: missing the 'model' section")
    weights = document.get("weights")
    if not isinstance(weights, Mapping) or not {"file", "sha256"} <= set(weights):
        raise CheckpointError(f"{path}: the 'weights' section needs 'file' and 'sha256'")
    if Path(str(weights["file"])).name != weights["file"]:
        raise CheckpointError(f"{path}: weights file {weights['file']!r} must be a plain file name in the directory")
    try:
        return model_config_from_mapping(dict(document["model"]))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from None


def _read_weights(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing")
    actual = sha256_file(path)
    if actual != sha256:
        raise CheckpointError(
            f"{path}: sha256 mismatch (file {actual[:12]}..., config.json {sha256[:12]}...): corrupted or replaced"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def check_state(model: VlaModel, state: Mapping[str, torch.Tensor], source: str | Path = "weights") -> None:
    """Raise CheckpointError unless ``state`` has exactly the model's tensor names, shapes and a float dtype."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"{source}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected in all)")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {list(tensor.shape)}, the config needs {list(own[name].shape)}"
            )
        if tensor.dtype != own[name].dtype:
            raise CheckpointError(f"{source}: tensor {name!r} has dtype {tensor.dtype}, expected {own[name].dtype}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: tensor {name!r} contains NaN or infinite values")


def load_model_config(directory: str | Path) -> ModelConfig:
    """The validated :class:`ModelConfig` of a checkpoint, without reading the weights."""
    directory = Path(directory)
    return _validate_document(read_checkpoint_config(directory), directory / CONFIG_FILE)
