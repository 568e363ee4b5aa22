"""The TensorRT backend's runtime without TensorRT or a GPU: the real :class:`TensorRtEngine` over stand-ins for
the TensorRT and CUDA objects at the module boundary.

The stand-in engines run the exported ONNX graphs in ONNX Runtime (CPU) on buffers found by the addresses the
backend bound, so a wrong binding, a ping-pong mix-up or a read of the wrong buffer shows as a chunk or k that
differs from the ONNX Runtime backend. The stand-in CUDA side counts what the loop asks for: bindings set,
waits, full synchronisations, graph captures and replays. Also covered: the FP16 parity check (a perturbed
engine is refused, stored, accepted explicitly), cache hits and misses for other weights, and the build
progress reported to ``progress``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch  # noqa: E402

from dream_vla_ros.engines import tensorrt_build, tensorrt_engine  # noqa: E402
from dream_vla_ros.engines.device import DeviceIdentity  # noqa: E402
from dream_vla_ros.engines.export import export_model  # noqa: E402
from dream_vla_ros.engines.manifest import load_export  # noqa: E402
from dream_vla_ros.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from dream_vla_ros.errors import EngineError  # noqa: E402
from dream_vla_ros.policy.checkpoint import save_checkpoint  # noqa: E402
from dream_vla_ros.policy.config import HaltingConfig, preset  # noqa: E402
from dream_vla_ros.policy.model import build_model  # noqa: E402
from dream_vla_ros.policy.synthetic import fit, synthetic_samples  # noqa: E402

DELTA = 3e-5  # the trained tiny model's k lies on 3..5 (as in test_engines_onnxruntime)
ORIN = DeviceIdentity("Orin", "8.7", 16, 62_841, "NVIDIA Jetson AGX Orin Developer Kit", "R36.4.3")
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two exports of the trained tiny model: its weights, and the same architecture with one weight of the
    vision stem changed (a retrained checkpoint)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        config = preset("tiny", halting=HaltingConfig(delta=DELTA, k_max=12, k_min=2))
        model = build_model(config, load_pretrained=False)
        fit(model, synthetic_samples(config, 256, np.random.default_rng(0)), 40, batch_size=32)
        root = tmp_path_factory.mktemp("trt")
        first = save_checkpoint(model.eval(), root / "model")
        export_model(first, first / "onnx", parity_samples=8)
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
        second = save_checkpoint(model.eval(), root / "retrained")
        export_model(second, second / "onnx", parity_samples=8)
    finally:
        torch.set_num_threads(threads)
    return first / "onnx", second / "onnx"


class FakeCuda:
    """Device memory as numpy arrays found by address; everything runs at once, and is counted."""

    handle = 7

    def __init__(self) -> None:
        self.device: dict[int, np.ndarray] = {}
        self.pinned_ids: set[int] = set()
        self.capturing = self.replaying = self.capture_fails = False
        self.counts = dict.fromkeys(("waits", "synchronize", "captures", "replays", "copies"), 0)

    def active(self):
        return contextlib.nullcontext()

    def empty(self, shape, dtype):
        array = np.full(tuple(shape), np.nan if dtype.startswith("float") else 0, dtype=dtype)
        self.device[id(array)] = array
        return array

    def pinned(self, shape, dtype):
        array = np.zeros(tuple(shape), dtype=dtype)
        self.pinned_ids.add(id(array))
        return array

    def ptr(self, array) -> int:
        assert id(array) in self.device, "a host buffer was bound to TensorRT"
        return id(array)

    def host(self, array):
        assert id(array) in self.pinned_ids, "read back through a buffer that is not pinned"
        return array

    def copy(self, dst, src) -> None:
        assert not self.capturing
        self.counts["copies"] += 1
        np.copyto(dst, src)

    def zero(self, array) -> None:
        array[...] = 0

    def event(self):
        return types.SimpleNamespace(t=0.0)

    def record(self, event) -> None:
        event.t = time.perf_counter()

    def wait(self, event) -> None:
        self.counts["waits"] += 1

    def elapsed_ms(self, start, end) -> float:
        return (end.t - start.t) * 1e3

    def synchronize(self) -> None:
        self.counts["synchronize"] += 1

    def capture(self, launch):
        if self.capture_fails:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.capturing = True
        try:
            launch()  # recorded, not run
        finally:
            self.capturing = False
        self.counts["captures"] += 1

        def replay() -> None:
            self.counts["replays"] += 1
            self.replaying = True
            try:
                launch()
            finally:
                self.replaying = False

        return replay


class FakeTrt:
    """The TensorRT 10 objects the backend touches; engines run their ONNX graph in ONNX Runtime."""

    __version__ = "10.3.0"
    float32, float16, int32, int64, int8, bool = "float32", "float16", "int32", "int64", "int8", "bool"
    TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            self.level = level

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.perturb = 0.0
        self.counts = dict.fromkeys(("shapes", "addresses", "launches", "captured_launches"), 0)
        fake = self

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, plan: bytes):
                return FakeEngine(fake, json.loads(plan.decode())["onnx"])

        self.Runtime = Runtime


class FakeEngine:
    def __init__(self, trt: FakeTrt, onnx_path: str) -> None:
        self.trt = trt
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self.names = [*self.inputs, *self.outputs]
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name in self.inputs else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return _ORT_DTYPES[(self.inputs.get(name) or self.outputs[name]).type]

    def get_tensor_shape(self, name):
        return tuple(-1 if not isinstance(d, int) else d for d in (self.inputs.get(name) or self.outputs[name]).shape)

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.trt, self.cuda = engine, engine.trt, engine.trt.cuda
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name, shape) -> bool:
        self.trt.counts["shapes"] += 1
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, address) -> bool:
        self.trt.counts["addresses"] += 1
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream) -> bool:
        assert stream == self.cuda.handle
        if self.cuda.capturing:
            self.trt.counts["captured_launches"] += 1
            return True
        if not self.cuda.replaying:
            self.trt.counts["launches"] += 1
        memory = self.cuda.device
        feeds = {}
        for name in self.engine.inputs:
            array = memory[self.addresses[name]]
            assert array.shape == self.shapes[name], f"{name}: bound {array.shape}, shape set {self.shapes[name]}"
            feeds[name] = array
        results = self.engine.session.run(list(self.engine.outputs), feeds)
        for name, value in zip(self.engine.outputs, results, strict=True):
            if name == "next_actions":
                value = value + self.trt.perturb
            np.copyto(memory[self.addresses[name]], value)
        return True


@pytest.fixture
def fakes(monkeypatch):
    cuda = FakeCuda()
    trt = FakeTrt(cuda)
    built: list[str] = []

    def build(trt_module, export, spec, settings, cache, device):
        built.append(f"{spec.role}:{settings.precision}")
        return json.dumps({"onnx": str(export.path(spec)), "role": spec.role}).encode(), {"fp32_layers": 0}

    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_build, "cuda_device", lambda device: (None, 0, ORIN))
    monkeypatch.setattr(tensorrt_engine, "CudaRuntime", lambda torch_module, index: cuda)
    monkeypatch.setattr(tensorrt_build, "_build_plan", build)
    return types.SimpleNamespace(cuda=cuda, trt=trt, built=built)


@pytest.fixture
def observations(exports):
    config = load_export(exports[0]).config
    return [s.observation() for s in synthetic_samples(config, 6, np.random.default_rng(5))]


def _engine(export: Path, cache: Path, **settings) -> tensorrt_engine.TensorRtEngine:
    return tensorrt_engine.TensorRtEngine(export, cache_dir=str(cache), **{"precision": "fp32", **settings})


def _same(got, want) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.iterations == w.iterations
        np.testing.assert_allclose(g.positions, w.positions, atol=1e-6)


@pytest.mark.parametrize("check_every", [1, 3])
def test_bound_once_no_waits_but_the_change_reads_and_graph_replays(fakes, exports, observations, tmp_path,
                                                                     check_every):
    engine = _engine(exports[0], tmp_path / "cache", check_every=check_every)
    reference = OnnxRuntimeEngine(exports[0], threads=1, check_every=check_every)
    assert engine.status["cuda graphs"] == "step captured at batch 1"
    assert fakes.cuda.counts["captures"] == 2  # one graph per ping-pong direction
    for name in ("shapes", "addresses", "launches"):
        fakes.trt.counts[name] = 0
    fakes.cuda.counts.update(waits=0, synchronize=0, replays=0)
    got = [engine.infer(o) for o in observations]
    _same(got, [reference.infer(o) for o in observations])
    assert fakes.trt.counts["shapes"] == fakes.trt.counts["addresses"] == 0  # nothing re-bound per chunk
    assert fakes.trt.counts["launches"] == len(observations)  # the encode; every step is a graph replay
    k = [g.iterations for g in got]
    assert fakes.cuda.counts["replays"] == sum(k)
    h = engine.halting

    def reads(k_run: int) -> int:  # iterations whose change is read (k_min.., every check_every-th, and k_max)
        return sum(1 for i in range(h.k_min, k_run + 1) if i % check_every == 0 or i == h.k_max) or 1

    assert fakes.cuda.counts["waits"] == sum(reads(x) for x in k)  # the host waits only to read the change
    assert fakes.cuda.counts["synchronize"] == 0
    assert set(got[0].timings_ms) >= {"trunk", "core", "total"}


def test_another_batch_size_is_bound_once_and_graphs_follow_batch_one(fakes, exports, observations, tmp_path):
    engine = _engine(exports[0], tmp_path / "cache")
    reference = OnnxRuntimeEngine(exports[0], threads=1)
    fakes.trt.counts.update(shapes=0, addresses=0)
    batch = engine.infer_batch(observations[:3], seeds=[4, 5, 6])
    _same(batch, reference.infer_batch(observations[:3], seeds=[4, 5, 6]))
    bound = fakes.trt.counts["addresses"]
    assert bound > 0 and engine.status["cuda graphs"] == "off (batch != 1)"
    engine.infer_batch(observations[3:6], seeds=[1, 2, 3])
    assert fakes.trt.counts["addresses"] == bound  # same batch size: nothing set again
    captures = fakes.cuda.counts["captures"]
    _same([engine.infer(observations[0])], [reference.infer(observations[0])])
    assert fakes.cuda.counts["captures"] == captures + 2 and engine.status["cuda graphs"].startswith("step captured")


def test_seeds_and_batch_are_checked_before_anything_runs(fakes, exports, observations, tmp_path):
    engine = _engine(exports[0], tmp_path / "cache")
    fakes.trt.counts.update(launches=0)
    with pytest.raises(EngineError, match="got 1 seeds for a batch of 2"):
        engine.infer_batch(observations[:2], seeds=[0])
    with pytest.raises(EngineError, match="batch 12 exceeds the export's maximum batch 8"):
        engine.infer_batch(observations * 2)
    assert fakes.trt.counts["launches"] == 0


def test_a_failed_capture_falls_back_to_launches_and_says_why(fakes, exports, observations, tmp_path):
    fakes.cuda.capture_fails = True
    engine = _engine(exports[0], tmp_path / "cache")
    assert engine.status["cuda graphs"].startswith("off (capture failed: RuntimeError: operation not permitted")
    _same([engine.infer(o) for o in observations[:3]],
          [OnnxRuntimeEngine(exports[0], threads=1).infer(o) for o in observations[:3]])
    assert fakes.cuda.counts["replays"] == 0
    off = _engine(exports[0], tmp_path / "cache", cuda_graphs=False)
    assert off.status["cuda graphs"] == "off (cuda_graphs: false)"


def test_fp16_parity_passes_fails_is_refused_and_accepted_explicitly(fakes, exports, observations, tmp_path):
    cache = tmp_path / "cache"
    good = _engine(exports[0], cache, precision="fp16")
    assert good.parity is not None and good.parity.result.passed
    assert good.status["engine parity"].startswith("passed: same k 8/8")
    records = sorted(cache.glob("parity-*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["result"]["passed"] is True
    fp32 = _engine(exports[0], cache, precision="fp32")
    assert fp32.parity is None and "engine parity" not in fp32.status

    # An FP16 build whose chunks are off by 0.2 (normalised units): another build, so checked again, and refused.
    fakes.trt.perturb = 0.2
    bad_cache = tmp_path / "bad"
    with pytest.raises(EngineError, match=r"fail the parity check against ONNX Runtime FP32 \(FAILED.*refused"):
        _engine(exports[0], bad_cache, precision="fp16")
    stored = json.loads(next(bad_cache.glob("parity-*.json")).read_text())
    assert stored["result"]["passed"] is False and stored["accepted_by"] == ""
    assert any("action error" in f for f in stored["result"]["failures"])
    with pytest.raises(EngineError, match="--accept-parity-failure"):  # the stored failure is refused again
        _engine(exports[0], bad_cache, precision="fp16")
    accepted = _engine(exports[0], bad_cache, precision="fp16", accept_parity_failure=True)
    assert "FAILED" in accepted.status["engine parity"] and "failure accepted by" in accepted.status["engine parity"]
    again = _engine(exports[0], bad_cache, precision="fp16")  # the acceptance is recorded with the engines
    assert again.parity is not None and again.parity.accepted_by and not again.parity.result.passed
    forced = tmp_path / "forced"
    shutil.copytree(bad_cache, forced)
    fakes.trt.perturb = 0.0
    rebuilt = _engine(exports[0], forced, precision="fp16", force_build=True)  # new plans, same key: same record
    assert rebuilt.parity is not None and rebuilt.parity.accepted_by


def test_parity_rule_bands():
    from dream_vla_ros.engines import parity
    from dream_vla_ros.engines.common import Decoded

    delta = 1e-3
    changes = np.array([[5e-3, 5e-3], [2e-3, 1.05e-3], [5e-4, 9e-4]], np.float32)  # sample 1 ends near delta
    reference = Decoded(np.zeros((2, 4, 3), np.float32), np.array([3, 3]), ("converged",) * 2, changes)
    close = Decoded(np.full((2, 4, 3), 0.01, np.float32), np.array([3, 2]), ("converged",) * 2, changes + 5e-5)
    result = parity.compare(reference, close, delta)
    assert result.passed and result.same_k == 1 and result.ambiguous == 1  # k differs only where it may
    far = Decoded(close.actions, np.array([2, 3]), close.reasons, changes)
    assert not parity.compare(reference, far, delta).passed  # k differs away from the threshold
    drift = Decoded(close.actions, reference.iterations, close.reasons, changes + 2e-4)
    result = parity.compare(reference, drift, delta)
    assert not result.passed and result.failures[0].startswith("sample 0: change error 2.00e-04 >= 1.00e-04")
    coarse = changes.copy()
    coarse[0] *= 1.05  # 5 % off where the change is 5 delta: decides nothing, not counted
    assert parity.compare(reference, Decoded(close.actions, reference.iterations, close.reasons, coarse),
                          delta).passed
    off = Decoded(close.actions + 0.1, reference.iterations, close.reasons, changes)
    assert "action error" in parity.compare(reference, off, delta).summary()
    record = parity.ParityRecord(result, {"step": "x.plan"}, 1.0)
    assert parity.ParityRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_other_weights_miss_the_cache_and_an_unchanged_export_hits(fakes, exports, tmp_path):
    cache = tmp_path / "cache"
    _engine(exports[0], cache)
    assert fakes.built == ["encode:fp32", "step:fp32"]
    hit = _engine(exports[0], cache)
    assert fakes.built == ["encode:fp32", "step:fp32"] and hit.status["engine cache"].startswith("cached")
    # Same architecture, one weight of the vision stem changed: the encode graph's bytes (and digest) change,
    # the step graph's do not, so exactly the encode engine is rebuilt.
    first, second = load_export(exports[0]), load_export(exports[1])
    assert first.graph("encode").digest != second.graph("encode").digest
    assert first.graph("step").digest == second.graph("step").digest
    retrained = _engine(exports[1], cache)
    assert fakes.built[2:] == ["encode:fp32"]
    assert retrained.status["engine cache"].startswith("1 of 2 engines built now")
    with pytest.raises(EngineError, match="no usable TensorRT engine for encode"):
        _engine(exports[0], cache, precision="fp16", on_miss="error")


def test_progress_of_a_launch_that_builds(fakes, exports, tmp_path):
    messages: list[str] = []
    _engine(exports[0], tmp_path / "cache", precision="fp16", progress=messages.append)
    assert messages[0] == "building the TensorRT fp16 engine for encode (1 of 2)"
    assert any(m.startswith("built the step engine in") for m in messages)
    assert any(m.startswith("checking the FP16 engines against ONNX Runtime FP32 on 8 stored") for m in messages)
    assert messages[-1].startswith("FP16 parity passed")
    messages.clear()
    _engine(exports[0], tmp_path / "cache", precision="fp16", progress=messages.append)
    assert messages == []  # cached plans and a stored parity record: nothing to wait for


def test_an_export_without_parity_samples_cannot_run_fp16(fakes, exports, tmp_path):
    copy = Path(shutil.copytree(exports[0], tmp_path / "onnx"))
    document = json.loads((copy / "manifest.json").read_text())
    del document["parity"]
    (copy / "manifest.json").write_text(json.dumps(document))
    with pytest.raises(EngineError, match="no parity samples, so FP16 engines cannot be checked"):
        _engine(copy, tmp_path / "cache", precision="fp16")
    assert _engine(copy, tmp_path / "cache", precision="fp32").parity is None


def test_discrete_decoder_runs_bound_once(fakes, tmp_path):
    from dream_vla_ros.policy.config import with_decoder_kind

    torch.manual_seed(0)
    config = with_decoder_kind(preset("tiny"), "discrete")
    directory = save_checkpoint(build_model(config, load_pretrained=False).eval(), tmp_path / "model")
    export_model(directory, directory / "onnx", parity_samples=2)
    engine = _engine(directory / "onnx", tmp_path / "cache")
    assert engine.status["cuda graphs"].startswith("off (discrete decoder")
    observation = synthetic_samples(config, 1, np.random.default_rng(1))[0].observation()
    fakes.trt.counts.update(addresses=0)
    _same([engine.infer(observation)], [OnnxRuntimeEngine(directory / "onnx", threads=1).infer(observation)])
    assert fakes.trt.counts["addresses"] == 0
    assert dataclasses.is_dataclass(engine.halting)
