"""Export manifests: what a corrupt, mismatched or stale export looks like to an engine (refused, with the cause
named), profile shapes, and TensorRT op coverage of the exported graphs (no TensorRT needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import torch

from dream_vla_ros.cli import main
from dream_vla_ros.engines import parity, trt_ops
from dream_vla_ros.engines.loader import load_engine
from dream_vla_ros.engines.manifest import BatchRange, load_export, sha256_file
from dream_vla_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
from dream_vla_ros.errors import EngineError
from dream_vla_ros.policy.checkpoint import save_checkpoint
from dream_vla_ros.policy.config import preset
from dream_vla_ros.policy.model import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A random tiny checkpoint exported through the CLI (``MODEL/onnx``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model_dir = save_checkpoint(build_model(preset("tiny"), load_pretrained=False),
                                    tmp_path_factory.mktemp("exp") / "model")
        assert main(["export", "--model", str(model_dir), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return model_dir


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    """A private copy of the checkpoint + export to damage."""
    return Path(shutil.copytree(exported, tmp_path / "model"))


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "onnx" / "manifest.json").read_text())


def _write_manifest(directory: Path, document: dict) -> None:
    (directory / "onnx" / "manifest.json").write_text(json.dumps(document))


def test_export_cli_output_and_manifest(exported, capsys):
    export = load_export(exported)
    assert export.directory == exported / "onnx" and export.opset == 17 and export.batch == BatchRange(1, 1, 8)
    document = export.document
    assert document["package_version"] and document["tools"]["onnx"] and document["model"]["preset"] == "tiny"
    for name, entry in document["files"].items():
        assert entry["sha256"] == sha256_file(exported / "onnx" / name)
    assert export.graph("encode").input("tokens").dtype == "int64"
    assert export.graph("step").output("change").shape == ("batch",)


def test_export_stores_parity_samples_with_their_fp32_decode(exported):
    """The samples FP16 engines are checked against: their stored reference is what ONNX Runtime FP32 decodes
    (re-run here with another batching), and the reference passes the parity rule against itself."""
    export = load_export(exported)
    assert export.parity_samples == exported / "onnx" / parity.SAMPLES_FILE
    samples = parity.load_samples(export.parity_samples)
    assert len(samples.observations) == parity.SAMPLES == export.document["parity"]["samples"]
    assert samples.reference.changes.shape[1] == parity.SAMPLES  # the change history, one column per sample
    engine = OnnxRuntimeEngine(export.directory, threads=1)
    again = parity.decode_samples(samples.observations, samples.seeds, engine.pipeline.prepare, engine.decode, 5)
    np.testing.assert_allclose(again.actions, samples.reference.actions, atol=1e-5)
    assert list(again.iterations) == list(samples.reference.iterations)
    result = parity.compare(samples.reference, again, export.config.halting.delta)
    assert result.passed and result.same_k == parity.SAMPLES and result.max_action_error < 1e-5


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "onnx" / "step.onnx").write_bytes((d / "onnx" / "step.onnx").read_bytes()[:-10]),
         "corrupt or replaced"),
        (lambda d: _flip_byte(d / "onnx" / "encode.onnx"), "sha256 mismatch"),
        (lambda d: (d / "onnx" / "coda.onnx").unlink(), "missing"),
        (lambda d: (d / "onnx" / "manifest.json").write_text("{not json"), "unreadable manifest"),
        (lambda d: _edit(d, lambda m: m.update(format_version=99)), "format_version 99 is not supported"),
        (lambda d: _edit(d, lambda m: m["model"].update(chunk_length=5)), "do not match the model config"),
        (lambda d: _edit(d, lambda m: m["graphs"].pop("step")), "has no 'step' graph"),
        (lambda d: _edit(d, lambda m: m["files"].pop("coda.onnx")), "not listed under 'files'"),
        (lambda d: shutil.rmtree(d / "onnx"), "no ONNX export found"),
        (lambda d: _edit(d, lambda m: m["files"].pop("parity_samples.npz")), "'parity' entry names no file listed"),
        (lambda d: _flip_byte(d / "onnx" / "parity_samples.npz"), "sha256 mismatch"),
    ],
    ids=["truncated", "flipped-byte", "missing-file", "bad-json", "version", "config", "no-graph", "unlisted", "none",
         "parity-unlisted", "parity-flipped"],
)
def test_damaged_exports_are_refused_with_the_cause(copy, damage, message):
    damage(copy)
    with pytest.raises(EngineError, match=message):
        load_engine(copy, "onnxruntime", threads=1)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit(directory: Path, change) -> None:
    document = _manifest(directory)
    change(document)
    _write_manifest(directory, document)


def test_a_graph_swapped_in_with_matching_hashes_is_refused(copy):
    """Someone replaces encode.onnx by the coda graph and fixes the hashes: the graph's I/O give it away."""
    onnx_dir = copy / "onnx"
    shutil.copy(onnx_dir / "coda.onnx", onnx_dir / "encode.onnx")
    document = _manifest(copy)
    document["files"]["encode.onnx"] = {"sha256": sha256_file(onnx_dir / "encode.onnx"),
                                        "bytes": (onnx_dir / "encode.onnx").stat().st_size}
    _write_manifest(copy, document)
    with pytest.raises(EngineError, match="does not belong to this manifest"):
        load_engine(copy, "onnxruntime", threads=1)


def test_an_export_of_other_weights_is_refused_as_stale(copy):
    torch.manual_seed(1)
    save_checkpoint(build_model(preset("tiny"), load_pretrained=False), copy)  # new weights, same directory
    with pytest.raises(EngineError, match="stale export"):
        load_engine(copy, "onnxruntime", threads=1)
    standalone = shutil.copytree(copy / "onnx", copy.parent / "engines")
    load_engine(standalone, "onnxruntime", threads=1)  # moved out of the checkpoint it stands on its own manifest


def test_profile_shapes_cover_every_dynamic_input(exported):
    export = load_export(exported)
    config = export.config
    for role in ("encode", "step"):
        spec = export.graph(role)
        profile = spec.profile(BatchRange(1, 2, 6))
        assert [p[0] for p in profile] == [t.name for t in spec.inputs]
        for name, lo, opt, hi in profile:
            assert (lo[0], opt[0], hi[0]) == (1, 2, 6)
            assert lo[1:] == opt[1:] == hi[1:] == tuple(spec.input(name).shape[1:])
    images = {p[0]: p[1] for p in export.graph("encode").profile(export.batch)}["images"]
    assert images == (1, 1, 3, config.vision.image_size, config.vision.image_size)
    with pytest.raises(EngineError, match="1 <= min <= opt <= max"):
        BatchRange(2, 1, 4)
    # The same profile as ONNX Runtime's TensorRT EP options (name:dims, comma separated).
    from dream_vla_ros.engines.onnxruntime_engine import _shapes

    h, w = config.chunk_length, config.decoder.width
    assert _shapes(export.graph("step"), export, 2).split(",")[0] == f"scratchpad:8x{h}x{w}"
    assert _shapes(export.graph("step"), export, 0).split(",")[0] == f"scratchpad:1x{h}x{w}"


def test_op_coverage_against_the_tensorrt_parser_tables(exported, tmp_path, capsys):
    export = load_export(exported)
    ops = {role: export.graph(role).ops for role in ("encode", "step", "coda")}
    assert "LayerNormalization" in ops["encode"]  # one op at opset 17: an FP16 build can keep it FP32
    assert trt_ops.coverage(ops, 17) == []
    assert trt_ops.coverage(ops, 21)[0].startswith("opset 21 is outside 17..20")
    assert export.document["tensorrt_op_coverage"] == {"JetPack 6.1/6.2 (TensorRT 10.3)": []}
    for role in ops:
        assert export.graph(role).notes["tensorrt_constant_inputs"] == "ok"
    assert trt_ops.unsupported_ops(["MatMulInteger", "DynamicQuantizeLinear", "com.microsoft::Attention", "Gelu"]) \
        == ["DynamicQuantizeLinear", "MatMulInteger", "com.microsoft::Attention"]
    # Opset 16 (decomposed LayerNorm: nothing an FP16 build could keep FP32) is no longer written.
    assert main(["export", "--model", str(exported), "--out", str(tmp_path / "o16"), "--opset", "16",
                 "--no-progress"]) == 2
    assert "opset 16 is not supported (use 17..20)" in capsys.readouterr().err


def test_export_rejects_bad_options(exported, tmp_path, capsys):
    assert main(["export", "--model", str(exported), "--out", str(tmp_path / "x"), "--opset", "23",
                 "--no-progress"]) == 2
    assert "opset 23 is not supported" in capsys.readouterr().err
    assert not np.any([p.suffix == ".onnx" for p in (tmp_path / "x").glob("*")])
