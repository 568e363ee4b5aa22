"""The training loop on a small synthetic dataset: learning, checkpoints, resume, fine-tuning init."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from synthetic_data import JOINTS, synthetic_dataset

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.policy.checkpoint import load_checkpoint
from dream_vla_ros.policy.inference import TorchPolicy
from dream_vla_ros.policy.model import VlaModel
from dream_vla_ros.train.dataset import DatasetWriter, Episode
from dream_vla_ros.train.trainer import TrainConfig, action_stride, learning_rate, train
from dream_vla_ros.train.transfer import transfer_weights


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory.mktemp("data"))


def config(dataset, out, **changes):
    base = TrainConfig(dataset=str(dataset), out=str(out), preset="tiny", steps=120, batch_size=16, lr=3e-3,
                       warmup_steps=10, eval_every=60, eval_samples=32, checkpoint_every=60, threads=1,
                       val_fraction=0.25)
    return dataclasses.replace(base, **changes)


def test_schedule_and_stride():
    cfg = TrainConfig(dataset="d", out="o", steps=1000, warmup_steps=100, lr=1.0)
    assert learning_rate(0, cfg) == pytest.approx(0.01)
    assert learning_rate(99, cfg) == pytest.approx(1.0)
    assert learning_rate(1000, cfg) == pytest.approx(0.05)
    assert action_stride(0.025, 0.0125) == 2
    with pytest.raises(Exception, match="whole multiple"):
        action_stride(0.03, 0.0125)


def test_training_learns_writes_a_loadable_checkpoint_and_curves(dataset, tmp_path):
    torch.manual_seed(0)
    result = train(config(dataset, tmp_path / "run"), log=lambda _: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 120 and records[-1]["step"] == 120
    first = np.mean([r["loss"] for r in records[:10]])
    last = np.mean([r["loss"] for r in records[-10:]])
    assert last < 0.5 * first, (first, last)
    assert [r["step"] for r in records if "val_loss" in r] == [60, 120]
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 10_000
    model = load_checkpoint(result.out)
    assert model.config.joint_names == JOINTS and model.config.vision.cameras == ("cam",)
    assert model.config.normalization.proprio_scale  # statistics were fitted and stored
    policy = TorchPolicy(model)
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 200
    from dream_vla_ros.policy.observation import Observation

    chunk = policy.infer(Observation({"cam": image}, np.zeros(3), "move up"))
    assert chunk.positions.shape == (model.config.chunk_length, 3)
    assert np.all(np.isfinite(chunk.positions))


def test_resume_continues_from_the_saved_step(dataset, tmp_path):
    out = tmp_path / "run"
    train(config(dataset, out, steps=60), log=lambda _: None)
    messages = []
    result = train(config(dataset, out, steps=90), resume=True, log=messages.append)
    assert "resuming from step 60" in messages
    assert result.steps == 90
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 91))


def test_ctrl_c_saves_a_resumable_checkpoint_at_the_interrupted_step(dataset, tmp_path):
    out = tmp_path / "run"

    def interrupt_at_25(step: int, _record: dict) -> None:
        if step == 25:
            raise KeyboardInterrupt

    messages = []
    result = train(config(dataset, out, steps=60), progress=interrupt_at_25, log=messages.append)
    assert result.interrupted and result.steps == 25
    assert any("interrupted at step 25" in m for m in messages)
    assert json.loads((out / "config.json").read_text())["metadata"]["step"] == 25
    resumed = train(config(dataset, out, steps=40), resume=True, log=messages.append)
    assert "resuming from step 25" in messages and not resumed.interrupted
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))


def test_init_transfers_matching_layers_and_reports_the_rest():
    from dream_vla_ros.policy.config import preset

    source = VlaModel(preset("tiny"))
    target = VlaModel(dataclasses.replace(preset("tiny"), joint_names=("a", "b", "c", "d")))
    report = transfer_weights(target, source)
    assert report.copied and report.reinitialised
    assert all("shape" in why for _, why in report.reinitialised)
    copied = report.copied[0]
    assert torch.equal(target.state_dict()[copied], source.state_dict()[copied])


def test_init_matches_camera_embeddings_by_name_and_starts_new_cameras_fresh():
    from dream_vla_ros.policy.config import preset

    def model(cameras):
        config = preset("tiny")
        return VlaModel(dataclasses.replace(config, vision=dataclasses.replace(config.vision, cameras=cameras)))

    source = model(("scene", "wrist"))
    target = model(("wrist", "top", "scene"))
    fresh = target.state_dict()["vision.camera"].clone()
    report = transfer_weights(target, source)
    rows, learned = target.state_dict()["vision.camera"], source.state_dict()["vision.camera"]
    assert torch.equal(rows[0], learned[1]) and torch.equal(rows[2], learned[0])
    assert torch.equal(rows[1], fresh[1])
    assert ("vision.camera", "rows of the new camera(s) top") in report.reinitialised
    assert "vision.stem.0.weight" in report.copied  # the shared stem fits whatever the camera count


def test_training_reads_the_chosen_dataset_cameras(tmp_path):
    writer = DatasetWriter(tmp_path / "two", JOINTS, 0.05, {"left": (32, 32), "right": (32, 32)},
                           phrasings={"up": {"train": ["move up"], "heldout": []}})
    steps = 12
    proprio = (0.02 * np.arange(steps)[:, None] * np.ones(3)).astype(np.float32)
    images = {name: np.full((steps, 32, 32, 3), value, np.uint8) for name, value in (("left", 50), ("right", 150))}
    entries = [writer.write(Episode(images=images, proprio=proprio, actions=proprio + 0.02, task="up",
                                    instruction="move up", seed=i), i) for i in range(2)]
    writer.finalize(entries)
    both = train(config(tmp_path / "two", tmp_path / "both", steps=2, val_fraction=0.0), log=lambda _: None)
    assert load_checkpoint(both.out).config.vision.cameras == ("left", "right")
    right = train(config(tmp_path / "two", tmp_path / "right", steps=2, val_fraction=0.0, cameras=("right",)),
                  log=lambda _: None)
    assert load_checkpoint(right.out).config.vision.cameras == ("right",)
    with pytest.raises(Exception, match="middle not in the dataset"):
        train(config(tmp_path / "two", tmp_path / "bad", steps=2, cameras=("middle",)), log=lambda _: None)


def _ramp_dataset(root, offset: float):
    """Two episodes whose joints ramp from ``offset`` to ``offset + 0.22`` (targets 0.02 ahead)."""
    writer = DatasetWriter(root, JOINTS, 0.05, {"cam": (32, 32)},
                           phrasings={"up": {"train": ["move up"], "heldout": []}})
    proprio = (offset + 0.02 * np.arange(12)[:, None] * np.ones(3)).astype(np.float32)
    images = {"cam": np.full((12, 32, 32, 3), 90, np.uint8)}
    writer.finalize([writer.write(Episode(images=images, proprio=proprio, actions=proprio + 0.02, task="up",
                                          instruction="move up", seed=i), i) for i in range(2)])
    return root


def test_the_checkpoint_records_the_joint_envelope_of_its_data_and_of_the_model_it_was_tuned_from(tmp_path):
    first = train(config(_ramp_dataset(tmp_path / "low", 0.0), tmp_path / "first", steps=2, val_fraction=0.0),
                  log=lambda _: None)
    envelope = load_checkpoint(first.out).config.envelope
    np.testing.assert_allclose(envelope.position_min, [0.0] * 3, atol=1e-6)
    np.testing.assert_allclose(envelope.position_max, [0.24] * 3, atol=1e-6)
    assert "Joint envelope (the demonstrations' range" in (first.out / "MODEL_CARD.md").read_text()
    tuned = train(config(_ramp_dataset(tmp_path / "high", 1.0), tmp_path / "tuned", steps=2, val_fraction=0.0,
                         init=str(first.out)), log=lambda _: None)
    envelope = load_checkpoint(tuned.out).config.envelope  # the union: it still knows the first range
    np.testing.assert_allclose(envelope.position_min, [0.0] * 3, atol=1e-6)
    np.testing.assert_allclose(envelope.position_max, [1.24] * 3, atol=1e-6)


def test_train_only_changes_the_named_parameters_and_nothing_else(dataset, tmp_path):
    first = train(config(dataset, tmp_path / "first", steps=5), log=lambda _: None)
    tuned = train(config(dataset, tmp_path / "tuned", steps=10, init=str(first.out), train_only=("trunk.text_",)),
                  log=lambda _: None)
    before, after = load_checkpoint(first.out).state_dict(), load_checkpoint(tuned.out).state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("trunk.text_") for name in changed), changed
    with pytest.raises(ConfigError, match="train_only"):
        train(config(dataset, tmp_path / "none", steps=1, train_only=("no.such.layer",)), log=lambda _: None)


def test_fine_tuning_keeps_the_normalisation_its_weights_were_trained_with(tmp_path):
    first = train(config(_ramp_dataset(tmp_path / "low", 0.0), tmp_path / "first", steps=2, val_fraction=0.0),
                  log=lambda _: None)
    tuned = train(config(_ramp_dataset(tmp_path / "high", 1.0), tmp_path / "tuned", steps=2, val_fraction=0.0,
                         init=str(first.out)), log=lambda _: None)
    fresh = train(config(_ramp_dataset(tmp_path / "high2", 1.0), tmp_path / "fresh", steps=2, val_fraction=0.0),
                  log=lambda _: None)
    kept, refit = load_checkpoint(tuned.out).config.normalization, load_checkpoint(fresh.out).config.normalization
    assert kept == load_checkpoint(first.out).config.normalization != refit


def test_zero_steps_only_with_a_language_teacher():
    with pytest.raises(ConfigError, match="0 only with language_teacher"):
        TrainConfig(dataset="d", out="o", steps=0)
    assert TrainConfig(dataset="d", out="o", steps=0, language_teacher="models/old").steps == 0
