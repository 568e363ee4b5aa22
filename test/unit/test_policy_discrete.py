"""Masked discrete-diffusion decoder: binning, confidence-ordered unmasking with per-sample halting, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dream_vla_ros.policy.config import HaltingConfig, preset, with_decoder_kind
from dream_vla_ros.policy.discrete_decoder import unmask
from dream_vla_ros.policy.inference import TorchPolicy
from dream_vla_ros.policy.model import build_model
from dream_vla_ros.policy.objectives import MaskedDiffusionObjective, collate
from dream_vla_ros.policy.observation import CONVERGED, MAX_ITERATIONS
from dream_vla_ros.policy.synthetic import fit, synthetic_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = with_decoder_kind(preset("tiny"), "discrete")


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=20))
def test_binning_round_trip_within_half_a_bin(values: list[float]) -> None:
    decoder = build_model(CONFIG).discrete()
    x = torch.tensor(values, dtype=torch.float32)
    ids = decoder.quantize(x)
    assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < decoder.bins
    clipped = x.clamp(-decoder.bin_range, decoder.bin_range)
    half_bin = decoder.bin_range / decoder.bins
    assert float((decoder.dequantize(ids) - clipped).abs().max()) <= half_bin + 1e-5


def _peaked(shape: tuple[int, int, int], bins: int, strength: torch.Tensor) -> torch.Tensor:
    """Logits [B, H, J, bins] favouring bin (h + j) % bins with a per-sample, per-value strength."""
    b, h, j = shape
    target = (torch.arange(h)[:, None] + torch.arange(j)[None, :]) % bins
    logits = torch.zeros(b, h, j, bins)
    logits.scatter_(-1, target.expand(b, h, j)[..., None], strength[..., None])
    return logits


def test_unmasking_schedule_confidence_order_and_per_sample_halting() -> None:
    shape, bins, k_max = (2, 3, 4), 8, 4  # N = 12 values per sample
    n = shape[1] * shape[2]
    strength = torch.zeros(2, 3, 4)
    strength[0] = 20.0  # sample 0: certain everywhere -> all decided at step 1
    strength[1] = torch.linspace(0.0, 2.0, n).view(3, 4)  # sample 1: never confident, later values surer
    masked_counts: list[list[int]] = []

    def logits_fn(values: torch.Tensor) -> torch.Tensor:
        masked_counts.append((values == bins).flatten(1).sum(dim=1).tolist())
        seen = values[1].flatten() != bins
        if seen.any():  # sample 1 reveals its most confident (latest) values first
            assert seen.nonzero().min() >= n - int(seen.sum())
        return _peaked(shape, bins, strength)

    result = unmask(logits_fn, (2, *shape[1:]), bins, HaltingConfig(k_max=k_max, confidence=0.9))
    assert result.iterations.tolist() == [1, k_max]
    assert result.reasons == (CONVERGED, MAX_ITERATIONS)
    expected = (torch.arange(3)[:, None] + torch.arange(4)[None, :]) % bins
    assert torch.equal(result.values[0], expected) and torch.equal(result.values[1], expected)
    # sample 1 follows the linear schedule: ceil(N s / k_max) decided after step s
    assert [counts[1] for counts in masked_counts] == [n - math.ceil(n * (s - 1) / k_max) for s in range(1, 5)]


def test_discrete_decoder_overfits_a_handful_of_chunks() -> None:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    samples = synthetic_samples(CONFIG, 4, np.random.default_rng(0))
    batch = collate(samples, CONFIG)
    objective = MaskedDiffusionObjective(CONFIG.training, seed=99)  # fixed evaluation masks
    with torch.no_grad():
        before = np.mean([float(objective(model, batch, s)[0]) for s in range(3)])
    fit(model, samples, 200, batch_size=4, lr=2e-3)
    with torch.no_grad():
        after = np.mean([float(objective(model, batch, s)[0]) for s in range(3)])
    assert after < before / 10, (before, after)


def test_trained_discrete_model_beats_chance() -> None:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    fit(model, synthetic_samples(CONFIG, 256, np.random.default_rng(0)), 200, batch_size=16, lr=2e-3)
    policy = TorchPolicy(model)
    held_out = synthetic_samples(CONFIG, 16, np.random.default_rng(1))
    batch = collate(held_out, CONFIG)
    decoded = policy.decode(policy.prepare([s.observation() for s in held_out]))
    decoder = model.discrete()
    target_bins = decoder.quantize(batch.actions)
    accuracy = float((decoder.quantize(torch.from_numpy(decoded.actions)) == target_bins).float().mean())
    error = float((torch.from_numpy(decoded.actions) - batch.actions).abs().mean())
    chance_bins = torch.randint(0, decoder.bins, target_bins.shape, generator=torch.Generator().manual_seed(0))
    chance_error = float((decoder.dequantize(chance_bins) - batch.actions).abs().mean())
    assert accuracy > 2.0 / decoder.bins, accuracy  # chance: 1 / bins
    assert error < 0.6 * chance_error, (error, chance_error)
    assert all(1 <= k <= policy.halting.k_max for k in decoded.iterations)
    # per-sample decoding: the same chunk alone as in the batch
    alone = policy.infer(held_out[3].observation())
    batched = policy.infer_batch([s.observation() for s in held_out[:5]])[3]
    np.testing.assert_allclose(alone.positions, batched.positions, rtol=1e-5, atol=1e-5)
    assert alone.iterations == batched.iterations
