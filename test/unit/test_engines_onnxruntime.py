"""ONNX export + ONNX Runtime backend against torch, on a tiny model trained a few steps so halting varies.

Parity rule (fp32): for 100 random observations the ONNX Runtime chunk equals torch's within 1e-4 and uses the
same k, except where some change scalar torch computed lies within 2 % of delta (a hard threshold: either side
is right). The int8 encoder (core fp32) stays within INT8_TOLERANCE of torch in normalised action units with the
same k for at least 90 % of the observations.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import torch  # noqa: E402

from dream_vla_ros.engines.export import export_model  # noqa: E402
from dream_vla_ros.engines.loader import load_engine  # noqa: E402
from dream_vla_ros.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from dream_vla_ros.errors import EngineError  # noqa: E402
from dream_vla_ros.policy.checkpoint import save_checkpoint  # noqa: E402
from dream_vla_ros.policy.config import HaltingConfig, preset, with_decoder_kind  # noqa: E402
from dream_vla_ros.policy.inference import TorchPolicy  # noqa: E402
from dream_vla_ros.policy.model import build_model  # noqa: E402
from dream_vla_ros.policy.synthetic import fit, synthetic_samples  # noqa: E402

DELTA = 3e-5  # puts the trained tiny model's k on 3..5
INT8_TOLERANCE = 0.05  # normalised action units (measured: max 0.013 over 100 observations, k same for 99)
BATCH = 5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and a second thread only fights other jobs for the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread) -> tuple[Path, TorchPolicy]:
    torch.manual_seed(0)
    config = preset("tiny", halting=HaltingConfig(delta=DELTA, k_max=12, k_min=2))
    model = build_model(config, load_pretrained=False)
    fit(model, synthetic_samples(config, 256, np.random.default_rng(0)), 40, batch_size=32)
    model.eval()
    directory = save_checkpoint(model, tmp_path_factory.mktemp("trained") / "model")
    export_model(directory, directory / "onnx", int8_encoder=True, accuracy_samples=8)
    return directory, TorchPolicy(model)


def _observations(config, count: int, seed: int = 5):
    return [s.observation() for s in synthetic_samples(config, count, np.random.default_rng(seed))]


def test_exported_graphs_are_valid_onnx_with_a_dynamic_batch(trained):
    directory, _ = trained
    manifest = json.loads((directory / "onnx" / "manifest.json").read_text())
    assert manifest["opset"] == 17 and set(manifest["graphs"]) == {"encode", "step", "coda", "encode_int8"}
    listed = set(manifest["files"])
    assert listed == {p.name for p in (directory / "onnx").iterdir()} - {"manifest.json"}
    for role, graph in manifest["graphs"].items():
        model = onnx.load(str(directory / "onnx" / graph["file"]))
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        assert inferred.opset_import[0].version == 17
        for value in (*model.graph.input, *model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", (role, value.name)
        if role != "encode_int8":
            assert graph["notes"]["parity_max_abs_vs_torch_batch2"] < 1e-5
            assert graph["notes"]["nodes"] <= graph["notes"]["nodes_exported"]
    step_outputs = [o["name"] for o in manifest["graphs"]["step"]["outputs"]]
    assert step_outputs == ["next_scratchpad", "next_actions", "change"]
    assert manifest["graphs"]["step"]["outputs"][2]["shape"] == ["batch"]


def test_onnxruntime_matches_torch_on_100_observations(trained):
    directory, policy = trained
    engine = OnnxRuntimeEngine(directory, threads=1)
    assert engine.name == "onnxruntime cpu fp32" and engine.provider == "CPUExecutionProvider"
    observations = _observations(policy.config, 100)
    compared, ks = 0, set()
    for start in range(0, 100, BATCH):
        inputs = policy.prepare(observations[start : start + BATCH])
        seeds = list(range(start, start + BATCH))
        want, got = policy.decode(inputs, seeds), engine.decode(inputs, seeds)
        for i in range(BATCH):
            changes = want.changes[:, i]
            changes = changes[np.isfinite(changes)][policy.halting.k_min - 1 :]
            near = np.any(np.abs(changes - DELTA) <= 0.02 * DELTA)
            ks.add(int(want.iterations[i]))
            if near:
                continue
            compared += 1
            assert got.iterations[i] == want.iterations[i], f"observation {start + i}: k differs"
            assert got.reasons[i] == want.reasons[i]
            np.testing.assert_allclose(got.actions[i], want.actions[i], atol=1e-4, rtol=0)
    assert compared >= 90, f"only {compared} observations away from the threshold"
    assert len(ks) >= 2, f"halting did not vary (k = {ks}); the parity test would not test the halting loop"


def test_int8_encoder_stays_within_tolerance_and_keeps_k(trained):
    directory, policy = trained
    engine = OnnxRuntimeEngine(directory, threads=1, precision="int8")
    observations = _observations(policy.config, 40, seed=11)
    inputs = policy.prepare(observations[:BATCH])
    diffs, same = [], []
    for start in range(0, 40, BATCH):
        inputs = policy.prepare(observations[start : start + BATCH])
        want, got = policy.decode(inputs), engine.decode(inputs)
        diffs.append(np.abs(got.actions - want.actions).max())
        same.extend(got.iterations == want.iterations)
    assert max(diffs) < INT8_TOLERANCE
    assert np.mean(same) >= 0.9
    accuracy = json.loads((directory / "onnx" / "manifest.json").read_text())["graphs"]["encode_int8"]["notes"]
    assert accuracy["accuracy"]["max_abs"] < INT8_TOLERANCE and accuracy["accuracy"]["samples"] == 8


def test_loader_picks_onnxruntime_and_infers_like_the_torch_engine(trained):
    directory, _ = trained
    ort_engine = load_engine(directory, "onnxruntime", device="cpu", precision="fp32", threads=1)
    torch_engine = load_engine(directory, "torch", device="cpu", precision="fp32", threads=1)
    assert ort_engine.metadata == torch_engine.metadata
    for observation in _observations(ort_engine.config, 3, seed=2):
        got, want = ort_engine.infer(observation), torch_engine.infer(observation)
        np.testing.assert_allclose(got.positions, want.positions, atol=1e-4)
        assert got.iterations == want.iterations and got.joint_names == want.joint_names
        assert {"preprocess", "trunk", "core", "postprocess", "total"} <= set(got.timings_ms)
    with pytest.raises(EngineError, match="fp16 needs the TensorRT execution provider"):
        load_engine(directory, "onnxruntime", precision="fp16")
    with pytest.raises(EngineError, match="CUDAExecutionProvider is not in this onnxruntime build"):
        load_engine(directory, "onnxruntime", device="cuda", fallback=False)


def test_cuda_request_without_gpu_provider_falls_back_visibly(trained, caplog):
    directory, _ = trained
    import onnxruntime

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(onnxruntime.get_available_providers()):
        pytest.skip("this onnxruntime has GPU providers: no fallback to show")
    engine = OnnxRuntimeEngine(directory, device="cuda", threads=1)
    assert engine.provider == "CPUExecutionProvider"
    assert "fallback from cuda" in engine.name
    assert any("running on CPUExecutionProvider" in r.getMessage() for r in caplog.records)


def test_device_values_path_and_check_every(trained):
    """The OrtValue path (what GPU providers use) gives the numpy path's result; check_every=2 reads the
    change on even iterations only, so it stops at the first even k >= torch's k."""
    directory, policy = trained
    inputs = policy.prepare(_observations(policy.config, BATCH, seed=3))
    numpy_path = OnnxRuntimeEngine(directory, threads=1)
    values_path = OnnxRuntimeEngine(directory, threads=1)
    values_path.device_values = True
    a, b = numpy_path.decode(inputs), values_path.decode(inputs)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.iterations, b.iterations)
    sparse = OnnxRuntimeEngine(directory, threads=1, check_every=2).decode(inputs)
    assert np.all(sparse.iterations >= a.iterations)
    assert np.all((sparse.iterations % 2 == 0) | (sparse.iterations == policy.halting.k_max))
    assert np.all(np.isnan(sparse.changes[0::2]))  # odd iterations were never read back


def test_batch_beyond_the_profile_is_refused(trained):
    directory, policy = trained
    engine = OnnxRuntimeEngine(directory, threads=1)
    inputs = policy.prepare(_observations(policy.config, 9))
    with pytest.raises(EngineError, match="exceeds the export's maximum batch 8"):
        engine.decode(inputs)


def test_halting_overrides_apply(trained):
    directory, policy = trained
    inputs = policy.prepare(_observations(policy.config, 2))
    fixed = OnnxRuntimeEngine(directory, threads=1, halting_delta=0.0, halting_k_max=4).decode(inputs)
    assert list(fixed.iterations) == [4, 4] and fixed.reasons == ("fixed", "fixed")
    want = policy.decode(inputs, halting=dataclasses.replace(policy.halting, delta=0.0, k_max=4))
    np.testing.assert_allclose(fixed.actions, want.actions, atol=1e-4)


def test_onnxruntime_backend_runs_without_torch(trained):
    directory, _ = trained
    code = (
        "import sys, numpy as np\n"
        "from dream_vla_ros.engines.loader import load_engine\n"
        "from dream_vla_ros.engines.base import dummy_observation\n"
        f"engine = load_engine({str(directory / 'onnx')!r}, 'onnxruntime', threads=1)\n"
        "prediction = engine.infer(dummy_observation(engine.metadata))\n"
        "assert np.isfinite(prediction.positions).all()\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_discrete_decoder_export_matches_torch(tmp_path):
    torch.manual_seed(1)
    config = with_decoder_kind(preset("tiny"), "discrete")
    model = build_model(config, load_pretrained=False)
    fit(model, synthetic_samples(config, 64, np.random.default_rng(0)), 10, batch_size=32)
    model.eval()
    export = export_model(None, tmp_path / "onnx", model=model)
    assert set(export.graphs) == {"encode", "step"}
    engine, policy = OnnxRuntimeEngine(tmp_path / "onnx", threads=1), TorchPolicy(model)
    inputs = policy.prepare(_observations(config, 8))
    want, got = policy.decode(inputs), engine.decode(inputs)
    np.testing.assert_array_equal(got.iterations, want.iterations)
    np.testing.assert_allclose(got.actions, want.actions, atol=1e-6)


def test_int8_quantisation_ignores_the_exporters_stale_shape_annotations(trained, tmp_path):
    """A torch 2.11 export carried an intermediate shape annotation that onnxruntime 1.30's quantiser refused
    ("Inferred shape and existing shape differ"); the quantiser now gets the graph without them."""
    import shutil

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from dream_vla_ros.engines.export import _quantize_encode

    directory, _ = trained
    out = Path(shutil.copytree(directory / "onnx", tmp_path / "onnx"))
    encode = json.loads((out / "manifest.json").read_text())["graphs"]["encode"]
    graph = onnx.load(str(out / encode["file"]))
    stale = next(v for v in graph.graph.value_info
                 if v.type.tensor_type.shape.dim and v.type.tensor_type.shape.dim[-1].dim_value > 1)
    stale.type.tensor_type.shape.dim[-1].dim_value += 7
    onnx.save(graph, str(out / encode["file"]))
    with pytest.raises(Exception, match="differ"):  # the failure, reproduced with the graph as it is
        quantize_dynamic(out / encode["file"], tmp_path / "direct.onnx", op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8)
    entry = _quantize_encode(out, encode)
    assert (out / entry["file"]).is_file() and "MatMulInteger" in entry["ops"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary files left


@pytest.mark.parametrize(("version", "timing_path"), [("1.16.3", False), ("1.18.1", True)])
def test_tensorrt_ep_caches_one_folder_per_graph_digest(trained, tmp_path, monkeypatch, version, timing_path):
    """ONNX Runtime names TensorRT EP engines after the graph's structure, not its weights: each graph gets a
    folder named after its digest (a retrained checkpoint's graphs have other digests, so other folders), and
    trt_timing_cache_path goes only to ONNX Runtime >= 1.17 (older builds reject it). The TensorRT EP is a
    stand-in here: sessions are real CPU sessions that report the TensorRT EP as registered."""
    import types

    import onnxruntime

    from dream_vla_ros.engines.manifest import load_export
    from dream_vla_ros.engines.onnxruntime_engine import TRT_EP, trt_cache_folder

    directory, _ = trained
    requested: dict[str, dict] = {}

    def session(path, options, providers):
        requested[Path(path).stem] = dict(providers[0][1])
        real = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        real.get_providers = lambda: [TRT_EP, "CUDAExecutionProvider", "CPUExecutionProvider"]
        return real

    fake = types.SimpleNamespace(**{name: getattr(onnxruntime, name) for name in (
        "SessionOptions", "ExecutionMode", "GraphOptimizationLevel", "OrtValue")})
    fake.__version__ = version
    fake.get_available_providers = lambda: [TRT_EP, "CUDAExecutionProvider", "CPUExecutionProvider"]
    fake.InferenceSession = session
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    progress: list[str] = []
    engine = OnnxRuntimeEngine(directory, device="cuda", cache_dir=str(tmp_path), progress=progress.append)
    assert engine.name == "onnxruntime tensorrt fp32"
    export = load_export(directory)
    for role in ("encode", "step"):
        folder = trt_cache_folder(tmp_path, export.graph(role))
        assert folder == tmp_path / "ort_tensorrt" / f"{role}-{export.graph(role).digest[:16]}" and folder.is_dir()
        assert requested[role]["trt_engine_cache_path"] == str(folder)
        assert ("trt_timing_cache_path" in requested[role]) == timing_path
        assert f"preparing the TensorRT EP engine for {role} (built on a cache miss: minutes)" in progress
    assert requested["encode"]["trt_engine_cache_path"] != requested["step"]["trt_engine_cache_path"]


def test_wordllama_instruction_encoder_export_matches_torch(tmp_path):
    """The frozen WordLlama table travels inside the exported encode graph; goals of different lengths (padding
    masked out) decode as in torch."""
    torch.manual_seed(2)
    tokenizer = dataclasses.replace(preset("tiny").tokenizer, kind="wordllama", max_tokens=32, queries=4)
    model = build_model(dataclasses.replace(preset("tiny"), tokenizer=tokenizer), load_pretrained=False).eval()
    export_model(None, tmp_path / "onnx", model=model)
    engine, policy = OnnxRuntimeEngine(tmp_path / "onnx", threads=1), TorchPolicy(model)
    observations = _observations(model.config, 4)
    goals = ["open the drawer", "Could you please push the red puck onto the goal for me?", "reach", "x " * 20]
    observations = [dataclasses.replace(o, instruction=g) for o, g in zip(observations, goals, strict=True)]
    inputs = policy.prepare(observations)
    want, got = policy.decode(inputs), engine.decode(inputs)
    np.testing.assert_array_equal(got.iterations, want.iterations)
    np.testing.assert_allclose(got.actions, want.actions, atol=1e-5)
