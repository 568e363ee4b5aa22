"""Checkpoint directories: round trip, and a clear CheckpointError for every kind of corruption or mismatch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dream_vla_ros.errors import CheckpointError
from dream_vla_ros.policy.checkpoint import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_model_config,
    save_checkpoint,
)
from dream_vla_ros.policy.config import preset, with_decoder_kind
from dream_vla_ros.policy.inference import TorchPolicy
from dream_vla_ros.policy.model import build_model
from dream_vla_ros.policy.synthetic import synthetic_samples
from dream_vla_ros.policy.vision import ConvPatchEncoder


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(preset("tiny"))
    directory = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", metadata={"steps": 3})
    return directory, model


def _copy(saved_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir(parents=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE):
        (target / name).write_bytes((saved_dir / name).read_bytes())
    return target


def _rewrite_weights(directory: Path, state: dict[str, torch.Tensor]) -> None:
    """Replace the weights and update the checksum, so only the content check can catch the problem."""
    save_file(state, str(directory / WEIGHTS_FILE))
    document = json.loads((directory / CONFIG_FILE).read_text())
    document["weights"]["sha256"] = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
    (directory / CONFIG_FILE).write_text(json.dumps(document))


def _edit_config(directory: Path, edit) -> None:
    document = json.loads((directory / CONFIG_FILE).read_text())
    edit(document)
    (directory / CONFIG_FILE).write_text(json.dumps(document))


@pytest.mark.parametrize("kind", ["recurrent", "discrete"])
def test_round_trip_gives_identical_predictions(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(with_decoder_kind(preset("tiny"), kind))
    directory = save_checkpoint(model, tmp_path / kind, metadata={"note": "test"}, notes="A test model.")
    assert {p.name for p in directory.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, CARD_FILE}
    loaded = load_checkpoint(directory, decoder_kind=kind, preset="tiny", joint_names=model.config.joint_names)
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    obs = synthetic_samples(model.config, 1, np.random.default_rng(0))[0].observation()
    a, b = TorchPolicy(model).infer(obs), TorchPolicy.from_checkpoint(directory).infer(obs)
    np.testing.assert_array_equal(a.positions, b.positions)
    card = (directory / CARD_FILE).read_text()
    assert "tiny" in card and "joint_a" in card and "A test model." in card and "note: test" in card
    assert load_model_config(directory) == model.config


def test_corrupted_weights_fail_the_checksum(saved, tmp_path: Path) -> None:
    directory = _copy(saved[0], tmp_path)
    data = bytearray((directory / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (directory / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(directory)


def test_garbage_weights_are_not_readable_safetensors(saved, tmp_path: Path) -> None:
    directory = _copy(saved[0], tmp_path)
    (directory / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    _edit_config(directory, lambda d: d["weights"].update(sha256=hashlib.sha256(b"\x00" * 64).hexdigest()))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(directory)


def test_shape_mismatch_names_the_tensor(saved, tmp_path: Path) -> None:
    directory = _copy(saved[0], tmp_path)
    _edit_config(directory, lambda d: d["model"]["decoder"].update(width=64))
    with pytest.raises(CheckpointError, match=r"tensor 'decoder\..*' has shape"):
        load_checkpoint(directory)


def test_missing_and_unexpected_tensors_are_named(saved, tmp_path: Path) -> None:
    directory = _copy(saved[0], tmp_path)
    state = load_file(str(directory / WEIGHTS_FILE))
    _rewrite_weights(directory, {k: v for k, v in state.items() if k != "decoder.init_gain"})
    with pytest.raises(CheckpointError, match=r"missing tensor 'decoder\.init_gain'"):
        load_checkpoint(directory)
    _rewrite_weights(directory, {**state, "decoder.extra": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'decoder\.extra'"):
        load_checkpoint(directory)


def test_non_finite_and_wrong_dtype_weights(saved, tmp_path: Path) -> None:
    directory = _copy(saved[0], tmp_path)
    state = load_file(str(directory / WEIGHTS_FILE))
    _rewrite_weights(directory, {**state, "decoder.init_gain": torch.tensor(float("nan"))})
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(directory)
    _rewrite_weights(directory, {**state, "decoder.init_gain": torch.tensor(1.0, dtype=torch.float16)})
    with pytest.raises(CheckpointError, match="dtype"):
        load_checkpoint(directory)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d["model"]["halting"].update(k_min=50), "invalid model config: halting.k_min"),
        (lambda d: d["model"].update(layers=3), "unknown key layers"),
        (lambda d: d.pop("model"), "model"),
        (lambda d: d["weights"].update(file="../model.safetensors"), "plain file name"),
    ],
)
def test_config_problems_are_named(saved, tmp_path: Path, edit, match: str) -> None:
    directory = _copy(saved[0], tmp_path)
    _edit_config(directory, edit)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(directory)


def test_missing_files_and_expectations(saved, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")
    directory = _copy(saved[0], tmp_path)
    with pytest.raises(CheckpointError, match="joint_names mismatch"):
        load_checkpoint(directory, joint_names=("a", "b", "c"))
    with pytest.raises(CheckpointError, match="preset mismatch"):
        load_checkpoint(directory, preset="sim")
    with pytest.raises(CheckpointError, match="decoder kind mismatch"):
        load_checkpoint(directory, decoder_kind="discrete")
    (directory / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(directory)
    (directory / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_checkpoint(directory)
    directory = _copy(saved[0], tmp_path / "again")
    (directory / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="weights file missing"):
        load_checkpoint(directory)


def test_vision_encoder_loads_local_pretrained_weights(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = build_model(preset("tiny")).vision
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "vision.safetensors"))
    config = preset("tiny")
    config = dataclasses.replace(
        config, vision=dataclasses.replace(config.vision, pretrained_path=str(tmp_path / "vision.safetensors"))
    )
    torch.manual_seed(4)
    model = build_model(config)
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(model.vision.state_dict()[name], tensor, rtol=0, atol=0)
    for name, other in [("narrow", ConvPatchEncoder(config.vision, 32)), ("deeper", build_model(preset("sim")).vision)]:
        save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / f"{name}.safetensors"))
    with pytest.raises(CheckpointError, match=r"tensor \w+ has shape \[1, 32\], the encoder needs \[1, 64\]"):
        model.vision.load_pretrained(tmp_path / "narrow.safetensors")
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        model.vision.load_pretrained(tmp_path / "deeper.safetensors")
    with pytest.raises(CheckpointError, match="never downloaded"):
        model.vision.load_pretrained(tmp_path / "absent.safetensors")
