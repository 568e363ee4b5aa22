"""Recurrent-depth decoder: export-friendly graphs, K/V once per chunk, heavy-tailed depth, truncated BPTT
provenance, and that the loss actually drives learning (overfitting a handful of chunks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import preset
from dream_vla_ros.policy.inference import TorchPolicy
from dream_vla_ros.policy.layers import DecoderBlock
from dream_vla_ros.policy.model import CodaGraph, CoreStepGraph, EncodeGraph, VlaModel, build_model
from dream_vla_ros.policy.objectives import (
    RecurrentDepthObjective,
    TrainingBatch,
    chunk_loss,
    collate,
    sample_depth,
)
from dream_vla_ros.policy.synthetic import fit, synthetic_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model_and_batch(size: int = 4, seed: int = 0) -> tuple[VlaModel, TrainingBatch]:
    torch.manual_seed(seed)
    config = preset("tiny")
    model = build_model(config)
    return model, collate(synthetic_samples(config, size, np.random.default_rng(seed)), config)


class FixedDepth(RecurrentDepthObjective):
    """The RD objective with a chosen depth instead of a sampled one."""

    def __init__(self, model: VlaModel, depth: int) -> None:
        super().__init__(model.config.training, seed=5)
        self.fixed = depth

    def depth(self, step: int) -> int:
        return self.fixed


def test_graphs_are_pure_tensor_functions() -> None:
    model, batch = _model_and_batch(2)
    config = model.config
    noise = torch.randn(model.noise_shape(2))
    with torch.no_grad():
        outputs = EncodeGraph(model)(batch.images, batch.tokens, batch.proprio, noise)
        assert len(outputs) == 2 + 2 * config.decoder.core_layers
        prelude_state, scratchpad, *kv = outputs
        assert prelude_state.shape == scratchpad.shape == (2, config.chunk_length, config.decoder.width)
        context = config.num_context_tokens + 1  # + the proprio token
        assert kv[0].shape == (2, config.decoder.heads, context, config.decoder.width // config.decoder.heads)
        actions = torch.zeros(2, config.chunk_length, config.num_joints)
        for metric in ("action", "latent"):
            step = CoreStepGraph(model, metric, relative=metric == "latent")
            first = step(scratchpad, actions, prelude_state, *kv)
            again = step(scratchpad, actions, prelude_state, *kv)
            assert first[0].shape == scratchpad.shape and first[1].shape == actions.shape and first[2].shape == (2,)
            for a, b in zip(first, again, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(CodaGraph(model)(first[0]), first[1])
        # the noise is an input: another noise, another scratchpad
        other = EncodeGraph(model)(batch.images, batch.tokens, batch.proprio, noise + 1.0)
        assert not torch.equal(other[1], scratchpad)
        torch.testing.assert_close(other[2], kv[0])


def test_context_keys_values_are_computed_once_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = _model_and_batch()
    policy = TorchPolicy(model)
    obs = synthetic_samples(model.config, 1, np.random.default_rng(0))[0].observation()
    projections, steps = [], []
    original_project = DecoderBlock.project_context
    original_step = model.decoder.step
    monkeypatch.setattr(
        DecoderBlock, "project_context", lambda self, c: projections.append(1) or original_project(self, c)
    )
    monkeypatch.setattr(model.decoder, "step", lambda *a: steps.append(1) or original_step(*a))
    halting = dataclasses.replace(policy.halting, delta=0.0, k_max=9)
    prediction = policy.infer(obs, halting=halting)
    assert prediction.iterations == 9 and len(steps) == 9
    assert len(projections) == model.config.decoder.prelude_layers + model.config.decoder.core_layers


def test_depth_distribution_is_heavy_tailed_capped_and_deterministic() -> None:
    training = preset("sim").training
    rng = np.random.default_rng(0)
    depths = np.array([sample_depth(rng, training) for _ in range(4000)])
    assert depths.min() >= 1 and depths.max() <= training.max_depth
    assert training.mean_depth < depths.mean() < training.mean_depth + 1.5  # E[Poisson(e^tau)] = mu, then + 1
    assert depths.var() > 1.5 * (depths.mean() - 1)  # over-dispersed vs a plain Poisson(mu) + 1
    assert (depths >= 2 * training.mean_depth).mean() > 0.02 and (depths <= 3).mean() > 0.005
    objective = RecurrentDepthObjective(training, seed=1)
    assert [objective.depth(s) for s in range(20)] == [objective.depth(s) for s in range(20)]
    capped = dataclasses.replace(training, mean_depth=50.0, max_depth=10, backprop_depth=4)
    assert max(sample_depth(rng, capped) for _ in range(200)) == 10


def _grads(model: VlaModel) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _reference_loss(model: VlaModel, batch: TrainingBatch, objective: FixedDepth, step: int, truncate: bool):
    """The same forward pass written out by hand: N - T iterations without gradient (or all with)."""
    decoder = model.recurrent()
    depth, window = objective.fixed, model.config.training.backprop_depth
    mid, final = model.features(batch.images, batch.tokens, batch.proprio)
    noise = objective.noise(model.noise_shape(batch.size), step)
    state, scratchpad, kv = decoder.prepare(mid, final, batch.proprio, noise)
    for i in range(depth):
        with torch.set_grad_enabled(not truncate or i >= depth - window):
            scratchpad = decoder.step(scratchpad, state, kv)
    return chunk_loss(decoder.decode(scratchpad), batch.actions, batch.mask, model.config.training.loss)


def test_truncated_bptt_gradient_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = _model_and_batch()
    window = model.config.training.backprop_depth
    depth = window + 4
    objective = FixedDepth(model, depth)
    decoder = model.recurrent()

    # which iterations run with autograd, and which of their outputs receive a gradient
    calls: list[tuple[bool, torch.Tensor]] = []
    original_step = decoder.step

    def spy(*args):
        out = original_step(*args)
        calls.append((torch.is_grad_enabled(), out))
        if out.requires_grad:
            out.retain_grad()
        return out

    monkeypatch.setattr(decoder, "step", spy)
    loss, metrics = objective(model, batch, step=3)
    loss.backward()
    monkeypatch.undo()
    assert metrics["depth"] == depth and metrics["backprop_depth"] == window
    assert [enabled for enabled, _ in calls] == [False] * (depth - window) + [True] * window
    assert all(not out.requires_grad for _, out in calls[: depth - window])
    assert all(out.grad is not None and out.grad.abs().sum() > 0 for _, out in calls[depth - window :])

    # which parameters get gradients: the noise gain only feeds iterations before the window -> none
    grads = _grads(model)
    assert "decoder.init_gain" not in grads
    for prefix in ("decoder.core.", "decoder.prelude.", "decoder.coda.", "trunk.blocks.", "vision."):
        assert any(n.startswith(prefix) and g.abs().sum() > 0 for n, g in grads.items()), prefix

    # the gradient is exactly that of the hand-written truncated pass, and not that of full BPTT
    model.zero_grad(set_to_none=True)
    _reference_loss(model, batch, objective, step=3, truncate=True).backward()
    reference = _grads(model)
    assert reference.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], reference[name], rtol=1e-4, atol=1e-6)
    model.zero_grad(set_to_none=True)
    _reference_loss(model, batch, objective, step=3, truncate=False).backward()
    full = _grads(model)
    assert "decoder.init_gain" in full
    core = "decoder.core.0.qkv.weight"
    assert not torch.allclose(full[core], grads[core], rtol=1e-3, atol=1e-7)


def test_shallow_depth_backpropagates_to_the_noise_gain() -> None:
    model, batch = _model_and_batch()
    window = model.config.training.backprop_depth
    loss, metrics = FixedDepth(model, window)(model, batch, step=0)
    loss.backward()
    assert metrics["backprop_depth"] == window
    assert model.recurrent().init_gain.grad is not None and model.recurrent().init_gain.grad.abs() > 0


def test_intermediate_decodes_can_be_weighted() -> None:
    model, batch = _model_and_batch()
    training = dataclasses.replace(model.config.training, intermediate_weight=0.5, loss="mse")
    loss, metrics = RecurrentDepthObjective(training)(model, batch, step=1)
    assert metrics["backprop_depth"] > 1
    assert metrics["loss"] > metrics["action_loss"] > 0
    assert loss.requires_grad


def test_recurrent_decoder_overfits_a_handful_of_chunks() -> None:
    model, batch = _model_and_batch(4)
    samples = synthetic_samples(model.config, 4, np.random.default_rng(0))
    objective = RecurrentDepthObjective(model.config.training, seed=99)  # fixed evaluation depth and noise
    with torch.no_grad():
        before = np.mean([float(objective(model, batch, s)[0]) for s in range(3)])
    fit(model, samples, 220, batch_size=4, lr=2e-3)
    with torch.no_grad():
        after = np.mean([float(objective(model, batch, s)[0]) for s in range(3)])
    assert after < before / 10, (before, after)
    # and inference reproduces the memorised chunks in physical units
    predictions = TorchPolicy(model).infer_batch([s.observation() for s in samples])
    error = np.mean([np.abs(p.positions - s.actions).mean() for p, s in zip(predictions, samples, strict=True)])
    assert error < before / 5


def test_collate_normalises_and_masks_padded_rows() -> None:
    config = preset("tiny")
    samples = synthetic_samples(config, 3, np.random.default_rng(0), image_size=40)
    mask = np.array([True, True, False, False])
    samples[1] = dataclasses.replace(samples[1], mask=mask)
    batch = collate(samples, config, rng=np.random.default_rng(0), shift_pixels=2)
    assert batch.images.shape == (3, 1, 3, 32, 32) and batch.tokens.shape == (3, config.tokenizer.max_tokens)
    assert batch.actions.shape == (3, config.chunk_length, config.num_joints) and batch.proprio.shape == (3, 3)
    assert batch.mask[1].tolist() == [1.0, 1.0, 0.0, 0.0] and batch.mask[0].tolist() == [1.0] * 4
    # a padded row does not count in the loss
    prediction = batch.actions.clone()
    prediction[1, 2:] += 5.0
    assert float(chunk_loss(prediction, batch.actions, batch.mask, "l1")) == 0.0
    prediction[1, 1] += 1.0
    assert float(chunk_loss(prediction, batch.actions, batch.mask, "mse")) > 0.0


def test_collate_exposure_changes_only_the_images_and_needs_an_rng() -> None:
    config = preset("tiny")
    samples = synthetic_samples(config, 4, np.random.default_rng(0), image_size=32)
    plain = collate(samples, config)
    jittered = collate(samples, config, rng=np.random.default_rng(1), brightness=0.1, contrast=0.2)
    assert not torch.equal(plain.images, jittered.images)
    assert float(jittered.images.min()) >= 0.0 and float(jittered.images.max()) <= 1.0
    for name in ("tokens", "proprio", "actions", "mask"):
        assert torch.equal(getattr(plain, name), getattr(jittered, name)), name
    again = collate(samples, config, rng=np.random.default_rng(1), brightness=0.1, contrast=0.2)
    assert torch.equal(jittered.images, again.images)
    with pytest.raises(InputError, match="needs an rng"):
        collate(samples, config, brightness=0.1)
