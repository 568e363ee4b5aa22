"""The split graphs stay export-friendly: each exports to ONNX opset 17 and ONNX Runtime reproduces it, at a
batch size other than the one traced (skipped where onnx / onnxruntime are not installed)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dream_vla_ros.policy.config import preset, with_decoder_kind
from dream_vla_ros.policy.inference import TorchPolicy
from dream_vla_ros.policy.model import (
    CodaGraph,
    CoreStepGraph,
    DiscreteEncodeGraph,
    DiscreteStepGraph,
    EncodeGraph,
    build_model,
)
from dream_vla_ros.policy.preprocess import scratchpad_noise
from dream_vla_ros.policy.synthetic import synthetic_samples

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _inputs(config, batch: int) -> tuple[torch.Tensor, ...]:
    policy = TorchPolicy(build_model(config))
    inputs = policy.prepare([s.observation() for s in synthetic_samples(config, batch, np.random.default_rng(batch))])
    return tuple(torch.from_numpy(a) for a in (inputs.images, inputs.tokens, inputs.proprio))


def _check(module: torch.nn.Module, traced: tuple, other: tuple, names_in: list[str], n_out: int, path: Path) -> tuple:
    names_out = [f"out{i}" for i in range(n_out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            traced,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={n: {0: "batch"} for n in names_in + names_out},
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: t.numpy() for n, t in zip(names_in, other, strict=True)}
    got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})  # unused inputs are dropped
    with torch.no_grad():
        want = module(*other)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)
    return want


def test_recurrent_graphs_export_to_opset_17(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = preset("tiny")
    model = build_model(config).eval()
    kv_names = [f"kv{i}" for i in range(2 * config.decoder.core_layers)]
    traced, other = _inputs(config, 1), _inputs(config, 3)
    noise1 = torch.from_numpy(scratchpad_noise([0], config.chunk_length, config.decoder.width))
    noise3 = torch.from_numpy(scratchpad_noise([0, 1, 2], config.chunk_length, config.decoder.width))
    with torch.no_grad():
        enc1 = EncodeGraph(model)(*traced, noise1)
    enc3 = _check(
        EncodeGraph(model),
        (*traced, noise1),
        (*other, noise3),
        ["images", "tokens", "proprio", "noise"],
        len(enc1),
        tmp_path / "encode.onnx",
    )
    actions1 = torch.zeros(1, config.chunk_length, config.num_joints)
    actions3 = torch.zeros(3, config.chunk_length, config.num_joints)
    for metric in ("action", "latent"):
        _check(
            CoreStepGraph(model, metric),
            (enc1[1], actions1, enc1[0], *enc1[2:]),
            (enc3[1], actions3, enc3[0], *enc3[2:]),
            ["scratchpad", "actions", "prelude_state", *kv_names],
            3,
            tmp_path / f"step_{metric}.onnx",
        )
    _check(CodaGraph(model), (enc1[1],), (enc3[1],), ["scratchpad"], 1, tmp_path / "coda.onnx")


def test_discrete_graphs_export_to_opset_17(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = with_decoder_kind(preset("tiny"), "discrete")
    model = build_model(config).eval()
    kv_names = [f"kv{i}" for i in range(2 * config.decoder.discrete_layers)]
    traced, other = _inputs(config, 1), _inputs(config, 3)
    with torch.no_grad():
        enc1 = DiscreteEncodeGraph(model)(*traced)
    enc3 = _check(
        DiscreteEncodeGraph(model), traced, other, ["images", "tokens", "proprio"], len(enc1), tmp_path / "enc.onnx"
    )
    mask = model.discrete().mask_id
    values1 = torch.full((1, config.chunk_length, config.num_joints), mask)
    values3 = torch.randint(0, mask + 1, (3, config.chunk_length, config.num_joints))
    _check(
        DiscreteStepGraph(model),
        (values1, *enc1),
        (values3, *enc3),
        ["values", "rows", *kv_names],
        1,
        tmp_path / "step.onnx",
    )
