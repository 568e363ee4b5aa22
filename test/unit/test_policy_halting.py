"""Adaptive halting: the loop's bookkeeping on a known contraction, and the behaviour of a tiny model trained
for a few hundred steps (the change falls, k < K_max, delta = 0 runs K_max, per-sample halting in a batch)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from dream_vla_ros.policy.config import HaltingConfig, preset
from dream_vla_ros.policy.halting import run_halting_loop
from dream_vla_ros.policy.inference import TorchPolicy
from dream_vla_ros.policy.model import build_model
from dream_vla_ros.policy.observation import CONVERGED, FIXED, MAX_ITERATIONS
from dream_vla_ros.policy.synthetic import fit, synthetic_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_loop_freezes_finished_samples_and_reports_why() -> None:
    rates = torch.tensor([0.1, 0.5, 0.9])

    def step(scratchpad, actions, prelude_state, scale):
        new = scratchpad * rates[:, None, None] * scale
        return new, new, (new - scratchpad).square().mean(dim=(1, 2))

    start = torch.ones(3, 2, 2)
    halting = HaltingConfig(delta=1e-3, k_max=8, k_min=2)
    result = run_halting_loop(step, start, start.clone(), torch.zeros(1), (torch.tensor(1.0),), halting)
    expected_k = []
    for r in rates.tolist():  # change at k: (r^k - r^(k-1))^2
        ks = [k for k in range(2, 9) if (r**k - r ** (k - 1)) ** 2 < 1e-3]
        expected_k.append(ks[0] if ks else 8)
    assert result.iterations.tolist() == expected_k == [3, 5, 8]
    assert result.reasons == (CONVERGED, CONVERGED, MAX_ITERATIONS)
    for i, (r, k) in enumerate(zip(rates.tolist(), expected_k, strict=True)):
        torch.testing.assert_close(result.actions[i], torch.full((2, 2), r**k))  # frozen at its own k
    assert result.changes.shape == (8, 3)
    assert torch.isnan(result.changes[3:, 0]).all() and not torch.isnan(result.changes[:3, 0]).any()
    assert not torch.isnan(result.changes[:, 2]).any()
    fixed = run_halting_loop(step, start, start, torch.zeros(1), (torch.tensor(1.0),), HaltingConfig(delta=0.0))
    assert fixed.iterations.tolist() == [12, 12, 12] and fixed.reasons == (FIXED,) * 3


@pytest.fixture(scope="module")
def trained() -> tuple[TorchPolicy, list]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = preset("tiny")
    model = build_model(config)
    fit(model, synthetic_samples(config, 256, np.random.default_rng(0)), 200, batch_size=16, lr=2e-3)
    torch.set_num_threads(threads)
    observations = [s.observation() for s in synthetic_samples(config, 8, np.random.default_rng(1))]
    return TorchPolicy(model.eval()), observations


def _first_halt(changes: np.ndarray, delta: float, k_min: int) -> list[int]:
    """Per sample, the first k >= k_min with change < delta in a full (delta = 0) trace, else k_max."""
    k_max = changes.shape[0]
    out = []
    for column in changes.T:
        ks = [k for k in range(k_min, k_max + 1) if column[k - 1] < delta]
        out.append(ks[0] if ks else k_max)
    return out


def test_change_between_iterations_falls(trained) -> None:
    policy, observations = trained
    full = dataclasses.replace(policy.halting, delta=0.0, k_max=12)
    changes = policy.decode(policy.prepare(observations), halting=full).changes  # [12, B]
    mean = changes.mean(axis=1)
    assert mean[1] > 0
    assert mean[-1] < mean[1] / 10, mean
    assert mean[2:].max() <= mean[1]  # no later iteration changes more than the second


def test_adaptive_halting_stops_early_and_delta_zero_runs_k_max(trained) -> None:
    policy, observations = trained
    adaptive = policy.infer_batch(observations)
    ks = np.array([p.iterations for p in adaptive])
    assert ks.mean() < policy.halting.k_max
    assert all(p.halt_reason == CONVERGED for p in adaptive)
    fixed = policy.infer_batch(observations, halting=dataclasses.replace(policy.halting, delta=0.0))
    assert [p.iterations for p in fixed] == [policy.halting.k_max] * len(observations)
    assert all(p.halt_reason == FIXED for p in fixed)


def test_batch_halts_per_sample_like_running_alone(trained) -> None:
    policy, observations = trained
    base = dataclasses.replace(policy.halting, k_max=12, k_min=2)
    changes = policy.decode(policy.prepare(observations), halting=dataclasses.replace(base, delta=0.0)).changes
    # a threshold between the samples' own change curves, far (> 5 %) from every observed change
    candidates = sorted({float(c) for c in changes[1:4].ravel() if c > 0})
    delta = None
    for low, high in itertools.pairwise(candidates):
        if high > 1.1 * low and len(set(_first_halt(changes, np.sqrt(low * high), 2))) > 1:
            delta = float(np.sqrt(low * high))
            break
    assert delta is not None, "the samples converge identically; cannot test per-sample halting"
    halting = dataclasses.replace(base, delta=delta)
    expected = _first_halt(changes, delta, 2)
    batch = policy.infer_batch(observations, halting=halting)
    alone = [policy.infer(o, halting=halting) for o in observations]
    assert [p.iterations for p in batch] == [p.iterations for p in alone] == expected
    assert len(set(expected)) > 1
    for b, a in zip(batch, alone, strict=True):
        np.testing.assert_allclose(b.positions, a.positions, rtol=1e-5, atol=1e-5)
        assert b.halt_reason == a.halt_reason


@pytest.mark.parametrize(
    ("metric", "relative"), [("action", False), ("action", True), ("latent", False), ("latent", True)]
)
def test_halting_metric_is_a_runtime_choice(trained, metric: str, relative: bool) -> None:
    policy, observations = trained
    inputs = policy.prepare(observations)
    trace = policy.decode(inputs, halting=HaltingConfig(delta=0.0, k_max=12, metric=metric, relative=relative))
    assert trace.changes.shape == (12, len(observations)) and np.all(np.isfinite(trace.changes))
    delta = float(np.median(trace.changes[2]))  # halts around the third iteration for about half of them
    out = policy.decode(inputs, halting=HaltingConfig(delta=delta, k_max=12, metric=metric, relative=relative))
    assert out.iterations.tolist() == _first_halt(trace.changes, delta, 2)
    assert out.iterations.mean() < 12


def test_same_observation_and_seed_give_the_same_chunk(trained) -> None:
    policy, observations = trained
    a = policy.infer(observations[0], seed=4)
    b = policy.infer(observations[0], seed=4)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.iterations == b.iterations
    batch = policy.infer_batch([observations[1], observations[0]], seeds=[0, 4])
    np.testing.assert_allclose(batch[1].positions, a.positions, rtol=1e-5, atol=1e-5)
