"""The inference API engines wrap: ChunkPrediction contents, physical units, input errors, runtime settings,
and a smoke run of the policy benchmark (its figures are not asserted: speed targets live in benchmarks)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.checkpoint import save_checkpoint
from dream_vla_ros.policy.config import preset, with_decoder_kind
from dream_vla_ros.policy.inference import TorchPolicy
from dream_vla_ros.policy.model import build_model
from dream_vla_ros.policy.normalization import fit_normalization
from dream_vla_ros.policy.observation import CONVERGED, FIXED, MAX_ITERATIONS, ChunkPrediction, Observation
from dream_vla_ros.policy.synthetic import synthetic_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _delta_config():
    config = preset("tiny")
    samples = synthetic_samples(config, 64, np.random.default_rng(0))
    stats = fit_normalization(
        np.stack([s.proprio for s in samples]), np.stack([s.actions for s in samples]), action_mode="delta"
    )
    return dataclasses.replace(config, normalization=stats)


@pytest.mark.parametrize("kind", ["recurrent", "discrete"])
def test_infer_returns_a_chunk_in_physical_units(kind: str) -> None:
    torch.manual_seed(0)
    config = with_decoder_kind(_delta_config(), kind)
    policy = TorchPolicy(build_model(config))
    sample = synthetic_samples(config, 1, np.random.default_rng(3), image_size=48)[0]  # resized to 32 px
    prediction = policy.infer(sample.observation(stamp=12.5))
    assert isinstance(prediction, ChunkPrediction)
    assert prediction.positions.shape == (config.chunk_length, config.num_joints)
    assert np.all(np.isfinite(prediction.positions))
    assert prediction.joint_names == config.joint_names and prediction.dt == config.dt and prediction.stamp == 12.5
    assert 1 <= prediction.iterations <= config.halting.k_max
    assert prediction.halt_reason in (CONVERGED, MAX_ITERATIONS, FIXED)
    assert set(prediction.timings_ms) == {"preprocess", "trunk", "core", "postprocess", "total"}
    assert all(v >= 0 for v in prediction.timings_ms.values())
    assert prediction.timings_ms["total"] >= prediction.timings_ms["trunk"] + prediction.timings_ms["core"]
    # the positions are the model's normalised deltas mapped back to joint positions around the current state
    inputs = policy.prepare([sample.observation()])
    decoded = policy.decode(inputs)
    expected = policy.normalizer.denormalize_actions(decoded.actions, inputs.proprio_raw)[0]
    np.testing.assert_allclose(prediction.positions, expected, rtol=1e-6, atol=1e-6)
    scale = np.asarray(config.normalization.action_scale).reshape(config.chunk_length, config.num_joints)
    offset = np.asarray(config.normalization.action_offset).reshape(config.chunk_length, config.num_joints)
    np.testing.assert_allclose(
        prediction.positions, sample.proprio + decoded.actions[0] * scale + offset, rtol=1e-5, atol=1e-5
    )


def test_runtime_halting_settings_need_no_retraining() -> None:
    torch.manual_seed(0)
    policy = TorchPolicy(build_model(preset("tiny")))
    obs = synthetic_samples(policy.config, 1, np.random.default_rng(0))[0].observation()
    policy.halting = dataclasses.replace(policy.halting, delta=0.0, k_max=3)
    assert policy.infer(obs).iterations == 3
    override = dataclasses.replace(policy.halting, delta=0.0, k_max=5, metric="latent", relative=True)
    prediction = policy.infer(obs, halting=override)
    assert prediction.iterations == 5 and prediction.halt_reason == FIXED


def test_bad_observations_raise_input_errors() -> None:
    policy = TorchPolicy(build_model(preset("tiny")))
    good = synthetic_samples(policy.config, 1, np.random.default_rng(0))[0].observation()
    for bad, match in [
        (dataclasses.replace(good, images={"other": good.images["main"]}), "camera 'main'"),
        (dataclasses.replace(good, proprio=np.array([0.0, np.nan, 0.0])), "proprio"),
        (dataclasses.replace(good, instruction=""), "instruction"),
    ]:
        with pytest.raises(InputError, match=match):
            policy.infer(bad)
    with pytest.raises(InputError, match="seeds"):
        policy.infer_batch([good, good], seeds=[1])
    with pytest.raises(InputError, match="empty"):
        policy.infer_batch([])


def test_observation_contract_is_torch_free() -> None:
    obs = Observation(images={"main": np.zeros((4, 4, 3), np.uint8)}, proprio=np.zeros(3), instruction="go")
    assert obs.stamp == 0.0


def test_policy_benchmark_smoke(tmp_path: Path) -> None:
    from dream_vla_ros.benchmarks import policy as bench

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    result = bench.run(parser.parse_args(["--preset", "tiny", "--repeats", "2", "--samples", "1"]))
    for key in ("preset", "params", "flops", "weight_bytes", "latency_ms", "k_mean", "k_max", "adaptive_over_trunk"):
        assert key in result
    assert set(result["flops"]) >= {"trunk", "core_iteration", "coda"} and result["flops"]["trunk"] > 0
    assert set(result["latency_ms"]) >= {"trunk", "adaptive_chunk", "kmax_chunk"}
    assert result["preset"] == "tiny" and result["k_source"].startswith("nominal")
    assert "adaptive / trunk" in bench.summary(result)
    torch.manual_seed(0)
    directory = save_checkpoint(build_model(preset("tiny")), tmp_path / "m")
    measured = bench.run(parser.parse_args(["--model", str(directory), "--repeats", "2", "--samples", "2"]))
    assert measured["k_source"] == "measured" and 1 <= measured["k_mean"] <= measured["k_max"]
