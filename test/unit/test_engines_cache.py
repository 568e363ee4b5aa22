"""The TensorRT engine cache without TensorRT: keys change exactly when an engine would be invalid (including
which Jetson module it runs on), entries are written atomically, corrupt plans are refused, a launch reuses,
rebuilds (saying why, with progress) or refuses exactly as documented, and FP16 builds keep the right layers in
FP32. The TensorRT builder is replaced by a stand-in here; the real build runs in test/gpu."""

from __future__ import annotations

import dataclasses
import json
import threading
import types
from pathlib import Path

import pytest

from dream_vla_ros.engines import common, engine_cache, tensorrt_build
from dream_vla_ros.engines.device import DeviceIdentity, board_model, cuda_identity, l4t_release
from dream_vla_ros.engines.engine_cache import CacheKey, EngineCache, make_key
from dream_vla_ros.engines.manifest import graph_digest
from dream_vla_ros.errors import EngineError

PROFILE = [("images", (1, 1, 3, 32, 32), (1, 1, 3, 32, 32), (8, 1, 3, 32, 32)), ("tokens", (1, 12), (1, 12), (8, 12))]
AGX = DeviceIdentity("Orin", "8.7", 16, 62_841, "NVIDIA Jetson AGX Orin Developer Kit", "R36.4.3")


def _key(**changes) -> CacheKey:
    args = {"graph_digest": "a" * 64, "tensorrt": "10.3.0", "device": AGX, "precision": "fp16", "profile": PROFILE,
            "builder": {"workspace_mib": 1024, "optimization_level": 3, "precision_constraints": "obey"}}
    args.update(changes)
    return make_key(**args)


@pytest.mark.parametrize(
    "change",
    [
        {"graph_digest": "b" * 64},
        {"tensorrt": "10.7.0"},
        {"device": dataclasses.replace(AGX, gpu="NVIDIA Jetson Orin NX")},
        {"device": dataclasses.replace(AGX, compute_capability="8.6")},
        {"device": dataclasses.replace(AGX, sm_count=14, memory_mib=30_536)},  # the 32 GB AGX module
        {"device": dataclasses.replace(AGX, module="NVIDIA Jetson Orin NX Engineering Reference Developer Kit")},
        {"device": dataclasses.replace(AGX, l4t="R36.3.0")},
        {"precision": "fp32"},
        {"profile": [PROFILE[0], ("tokens", (1, 12), (1, 12), (16, 12))]},
        {"profile": [PROFILE[0], ("tokens", (1, 12), (2, 12), (8, 12))]},
        {"profile": PROFILE[:1]},
        {"builder": {"workspace_mib": 2048, "optimization_level": 3, "precision_constraints": "obey"}},
        {"builder": {"workspace_mib": 1024, "optimization_level": 5, "precision_constraints": "obey"}},
        {"builder": {"workspace_mib": 1024, "optimization_level": 3, "precision_constraints": "none"}},
        {"recipe": engine_cache.RECIPE_VERSION + 1},
    ],
)
def test_key_changes_with_everything_that_invalidates_an_engine(change):
    assert _key(**change).digest() != _key().digest()
    assert _key(**change).differences(_key())


def test_key_ignores_what_does_not_change_an_engine(tmp_path):
    assert _key(profile=list(reversed(PROFILE))).digest() == _key().digest()  # input order
    assert CacheKey.from_json(json.loads(_key().canonical())) == _key()  # round trip
    # The graph digest covers the bytes of the ONNX file and its external data, not where they live.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "step.onnx").write_bytes(b"graph")
        (tmp_path / name / "step.onnx.data").write_bytes(b"weights")
    a = graph_digest(tmp_path / "a", "step.onnx", ["step.onnx.data"])
    assert a == graph_digest(tmp_path / "b", "step.onnx", ["step.onnx.data"])
    (tmp_path / "b" / "step.onnx.data").write_bytes(b"other weights")
    assert a != graph_digest(tmp_path / "b", "step.onnx", ["step.onnx.data"])
    assert a != graph_digest(tmp_path / "a", "step.onnx", [])


def _fake_root(tmp_path: Path, model: bytes | None, release: str | None) -> Path:
    root = tmp_path / "root"
    if model is not None:
        (root / "proc/device-tree").mkdir(parents=True)
        (root / "proc/device-tree/model").write_bytes(model)
    if release is not None:
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc/nv_tegra_release").write_text(release)
    root.mkdir(exist_ok=True)
    return root


def _fake_torch(name: str = "Orin", sms: int = 16, memory: int = 62_841 << 20):
    props = types.SimpleNamespace(name=name, major=8, minor=7, multi_processor_count=sms, total_memory=memory)
    cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 1,
                                 get_device_properties=lambda index: props)
    return types.SimpleNamespace(cuda=cuda)


def test_device_identity_tells_orin_modules_apart(tmp_path):
    """Every Orin says "Orin" at sm 8.7; the board model, L4T release, SMs and memory differ."""
    release = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8\n"
    agx_root = _fake_root(tmp_path / "agx", b"NVIDIA Jetson AGX Orin Developer Kit\x00", release)
    assert board_model(agx_root) == "NVIDIA Jetson AGX Orin Developer Kit" and l4t_release(agx_root) == "R36.4.3"
    agx = cuda_identity(_fake_torch(), 0, agx_root)
    assert agx == AGX
    assert agx.describe() == "Orin (sm 8.7, 16 SMs, 62841 MiB, NVIDIA Jetson AGX Orin Developer Kit, L4T R36.4.3)"
    nx_root = _fake_root(tmp_path / "nx", b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00", release)
    nx = cuda_identity(_fake_torch(sms=8, memory=15_388 << 20), 0, nx_root)
    assert _key(device=nx).digest() != _key(device=agx).digest()
    assert "module: NVIDIA Jetson AGX Orin Developer Kit -> NVIDIA Jetson Orin NX" in "; ".join(
        _key(device=nx).differences(_key(device=agx)))
    h100 = _fake_torch("NVIDIA H100 80GB HBM3", 132, 81_559 << 20)
    desktop = cuda_identity(h100, 0, _fake_root(tmp_path, None, None))
    assert desktop.module == "" and desktop.l4t == ""
    assert l4t_release(_fake_root(tmp_path / "odd", None, "not a release file")) == ""
    absent = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: False))
    with pytest.raises(EngineError, match="no CUDA device"):
        cuda_identity(absent, 0)


def test_store_lookup_and_refusals(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    entry, why = cache.lookup("step", _key())
    assert entry is None and "no cached step engine" in why
    stored = cache.store("step", _key(), b"plan bytes")
    assert sorted(p.name for p in cache.directory.iterdir()) == sorted(
        [stored.plan.name, stored.plan.with_suffix(".json").name])  # no temporary files left behind
    hit, why = cache.lookup("step", _key())
    assert hit is not None and hit.plan == stored.plan and why == ""
    miss, why = cache.lookup("step", _key(tensorrt="10.7.0"))
    assert miss is None and "tensorrt: 10.3.0 -> 10.7.0" in why
    stored.plan.write_bytes(b"plan bytez")  # same size, different bytes
    with pytest.raises(EngineError, match=r"sha256 mismatch.*corrupt engine"):
        cache.lookup("step", _key())
    stored.plan.write_bytes(b"short")
    with pytest.raises(EngineError, match="corrupt engine"):
        cache.lookup("step", _key())
    stored.plan.with_suffix(".json").unlink()  # a plan without its JSON is an unfinished write: absent
    assert cache.lookup("step", _key())[0] is None
    nx = dataclasses.replace(AGX, module="NVIDIA Jetson Orin NX Engineering Reference Developer Kit")
    timing = cache.timing_cache_path("10.3.0", AGX)
    assert timing.name.startswith("timing-trt10.3.0-Orin-") and timing != cache.timing_cache_path("10.3.0", nx)


def test_entries_of_an_older_key_format_count_as_absent(tmp_path):
    cache = EngineCache(tmp_path)
    (tmp_path / "step-0123456789abcdef.plan").write_bytes(b"old plan")
    old = {"graph_digest": "a" * 64, "tensorrt": "8.6.2", "gpu": "Orin", "compute_capability": "8.7",
           "precision": "fp16", "profile": [], "builder": {}}
    (tmp_path / "step-0123456789abcdef.json").write_text(json.dumps({"key": old, "plan_sha256": "x"}))
    assert list(cache.entries("step")) == []
    assert "no cached step engine" in cache.lookup("step", _key())[1]


@pytest.fixture
def fake_trt(monkeypatch):
    """TensorRT 10.3 on an AGX Orin, with a builder that records what it builds."""
    built: list[str] = []
    state = {"version": "10.3.0", "device": AGX, "gate": None}
    monkeypatch.setattr(tensorrt_build, "import_tensorrt", lambda: types.SimpleNamespace(__version__=state["version"]))
    monkeypatch.setattr(tensorrt_build, "cuda_device", lambda device: (None, 0, state["device"]))

    def build(trt, export, spec, settings, cache, device):
        if state["gate"] is not None:
            assert state["gate"].wait(10), "no progress heartbeat while building"
        built.append(f"{spec.role}:{settings.precision}:{trt.__version__}")
        return f"plan {spec.role} {settings.precision} {trt.__version__}".encode(), {}

    monkeypatch.setattr(tensorrt_build, "_build_plan", build)
    return types.SimpleNamespace(built=built, state=state)


@pytest.fixture
def export(tmp_path):
    """A minimal export stand-in (graphs with ops, digests and profiles)."""
    from dream_vla_ros.engines.manifest import BatchRange, GraphSpec, TensorSpec

    def graph(role: str, digest: str) -> GraphSpec:
        inputs = (TensorSpec("x", "float32", ("batch", 4)),)
        return GraphSpec(role, f"{role}.onnx", inputs, (TensorSpec("y", "float32", ("batch", 4)),),
                         ("MatMul", "LayerNormalization"), (), digest, {})

    graphs = {"encode": graph("encode", "e" * 64), "step": graph("step", "s" * 64)}
    fake = types.SimpleNamespace(directory=tmp_path / "onnx", opset=17, batch=BatchRange(1, 1, 4), graphs=graphs)
    fake.graph = lambda role, hint="": graphs[role]
    fake.path = lambda spec: fake.directory / spec.file
    return fake


def test_a_launch_reuses_rebuilds_with_a_reason_or_refuses(fake_trt, export, tmp_path, monkeypatch):
    cache = EngineCache(tmp_path / "cache")
    settings = tensorrt_build.BuildSettings("fp16")
    messages: list[str] = []
    tensorrt_build.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.3.0", "step:fp16:10.3.0"]
    assert any("no cached encode engine" in m for m in messages)

    fake_trt.built.clear()
    messages.clear()
    entries = tensorrt_build.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == [] and messages == []  # unchanged: a hit, nothing built, nothing to say
    assert entries["step"].plan.read_bytes() == b"plan step fp16 10.3.0"

    # The same GPU name and compute capability on another module: rebuilt, and the message says why.
    fake_trt.state["device"] = dataclasses.replace(AGX, module="NVIDIA Jetson Orin NX Engineering Reference "
                                                   "Developer Kit", sm_count=8, memory_mib=15_388)
    tensorrt_build.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.3.0", "step:fp16:10.3.0"]
    assert any("module: NVIDIA Jetson AGX Orin Developer Kit -> NVIDIA Jetson Orin NX" in m for m in messages)

    fake_trt.built.clear()
    monkeypatch.setattr(engine_cache, "RECIPE_VERSION", engine_cache.RECIPE_VERSION + 1)  # the build code changed
    tensorrt_build.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.3.0", "step:fp16:10.3.0"]
    assert any(f"recipe: {engine_cache.RECIPE_VERSION - 1} -> {engine_cache.RECIPE_VERSION}" in m for m in messages)

    fake_trt.built.clear()
    fake_trt.state["version"] = "10.7.0"  # a TensorRT upgrade invalidates every engine, and says so
    tensorrt_build.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.7.0", "step:fp16:10.7.0"]
    assert any("tensorrt: 10.3.0 -> 10.7.0" in m for m in messages)

    with pytest.raises(EngineError, match=r"no usable TensorRT engine for encode.*precision: fp16 -> fp32"):
        tensorrt_build.build_engines(export, cache, dataclasses.replace(settings, precision="fp32"), on_miss="error")

    current = tensorrt_build.build_engines(export, cache, settings)["step"].plan
    current.write_bytes(b"x" * current.stat().st_size)
    fake_trt.built.clear()
    with pytest.raises(EngineError, match="corrupt engine"):
        tensorrt_build.build_engines(export, cache, settings)
    assert fake_trt.built == []  # refused, not silently rebuilt
    tensorrt_build.build_engines(export, cache, settings, force=True, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.7.0", "step:fp16:10.7.0"]


def test_a_build_reports_which_graph_and_the_elapsed_time(fake_trt, export, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "HEARTBEAT_S", 0.02)
    progress: list[str] = []
    beat = threading.Event()

    def hear(message: str) -> None:
        progress.append(message)
        if "s elapsed" in message:
            beat.set()

    fake_trt.state["gate"] = beat  # the stand-in builder runs until a heartbeat came
    tensorrt_build.build_engines(export, EngineCache(tmp_path / "cache"), tensorrt_build.BuildSettings("fp16"),
                                  log=lambda m: None, progress=hear)
    assert progress[0] == "building the TensorRT fp16 engine for encode (1 of 2)"
    assert any(m.startswith("building the TensorRT fp16 engine for encode (1 of 2) (") and m.endswith(
        " s elapsed)") for m in progress)
    assert any(m.startswith("built the encode engine in ") for m in progress)
    assert any(m.startswith("building the TensorRT fp16 engine for step (2 of 2)") for m in progress)
    assert progress[-1].startswith("built the step engine in ")
    count = len(progress)
    tensorrt_build.build_engines(export, EngineCache(tmp_path / "cache"), tensorrt_build.BuildSettings("fp16"),
                                  log=lambda m: None, progress=hear)
    assert len(progress) == count  # a hit builds nothing and reports nothing


def test_op_coverage_is_checked_before_building(fake_trt, export, tmp_path):
    export.opset = 16
    with pytest.raises(EngineError, match=r"opset 16 is outside 17..20"):
        tensorrt_build.build_engines(export, EngineCache(tmp_path / "cache"), tensorrt_build.BuildSettings())
    assert fake_trt.built == []


def test_versions_and_settings_are_checked():
    for ok in ("10.0.1", "10.3.0", "10.13.1"):
        tensorrt_build.check_version(ok)
    for bad in ("8.5.2.2", "8.6.2", "9.2.0", "11.4.0"):
        with pytest.raises(EngineError, match=r"is not supported \(supported: TensorRT 10.x"):
            tensorrt_build.check_version(bad)
    with pytest.raises(EngineError, match="int8 is ONNX Runtime only"):
        tensorrt_build.BuildSettings("int8")
    with pytest.raises(EngineError, match="optimization_level"):
        tensorrt_build.BuildSettings(optimization_level=7)
    assert tensorrt_build.BuildSettings("fp32").builder()["precision_constraints"] == "none"


class _Tensor:
    def __init__(self, name: str, dtype: str = "float32") -> None:
        self.name, self.dtype = name, dtype


class _Layer:
    def __init__(self, name: str, kind: str, inputs: list[str], outputs: list[tuple[str, str]]) -> None:
        self.name, self.type = name, kind
        self._in = [_Tensor(n) for n in inputs]
        self._out = [_Tensor(n, d) for n, d in outputs]
        self.num_inputs, self.num_outputs = len(self._in), len(self._out)

    def get_input(self, j):
        return self._in[j]

    def get_output(self, j):
        return self._out[j]


class _Network:
    def __init__(self, layers, inputs, outputs) -> None:
        self._layers, self._inputs, self._outputs = layers, [_Tensor(n) for n in inputs], [_Tensor(n) for n in outputs]
        self.num_layers, self.num_inputs, self.num_outputs = len(layers), len(inputs), len(outputs)

    def get_layer(self, i):
        return self._layers[i]

    def get_input(self, i):
        return self._inputs[i]

    def get_output(self, i):
        return self._outputs[i]


FAKE_TRT = types.SimpleNamespace(
    float32="float32", float16="float16",
    LayerType=types.SimpleNamespace(NORMALIZATION="norm", SOFTMAX="softmax", CONSTANT="const", SHAPE="shape",
                                    MATRIX_MULTIPLY="matmul", ELEMENTWISE="elementwise", REDUCE="reduce"),
)


def _step_network(with_norm: bool = True) -> _Network:
    t = FAKE_TRT.LayerType
    layers = [
        _Layer("core matmul", t.MATRIX_MULTIPLY, ["scratchpad", "k0"], [("h", "float32")]),
        _Layer("layernorm", t.NORMALIZATION if with_norm else t.ELEMENTWISE, ["h"], [("n", "float32")]),
        _Layer("attention softmax", t.SOFTMAX, ["n"], [("p", "float32")]),
        _Layer("decode", t.MATRIX_MULTIPLY, ["p"], [("next_actions", "float32")]),
        _Layer("eps", t.CONSTANT, [], [("eps", "float32")]),
        _Layer("difference", t.ELEMENTWISE, ["next_actions", "actions"], [("d", "float32")]),
        _Layer("shape of d", t.SHAPE, ["d"], [("dims", "int32")]),
        _Layer("norm of d", t.REDUCE, ["d", "eps"], [("nd", "float32")]),
        _Layer("mask", t.ELEMENTWISE, ["nd", "dims"], [("m", "bool")]),
        _Layer("change", t.REDUCE, ["nd"], [("change", "float32")]),
    ]
    return _Network(layers, ["scratchpad", "actions", "k0"], ["next_actions", "change"])


def test_fp16_builds_keep_normalization_softmax_and_the_halting_change_in_fp32():
    from dream_vla_ros.engines.manifest import GraphSpec, TensorSpec

    spec = GraphSpec("step", "step.onnx", (), (TensorSpec("change", "float32", ("batch",)),),
                     ("LayerNormalization", "MatMul", "Softmax"), (), "s" * 64, {})
    marked = {layer.name for layer in tensorrt_build.fp32_layers(FAKE_TRT, _step_network(), spec)}
    # The change path stops at the step's inputs and its other outputs; constants and shape layers stay as built.
    assert marked == {"layernorm", "attention softmax", "difference", "norm of d", "change"}
    with pytest.raises(EngineError, match="LayerNormalization in the ONNX graph but no normalisation layer"):
        tensorrt_build.fp32_layers(FAKE_TRT, _step_network(with_norm=False), spec)


def test_without_tensorrt_the_backend_and_build_engine_say_what_is_missing(tmp_path, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    from dream_vla_ros.cli import main
    from dream_vla_ros.engines.loader import load_engine

    assert main(["build-engine", "--onnx", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dream-vla-ros build-engine: error: TensorRT is not available") and "\n" not in err
    with pytest.raises(EngineError, match="no ONNX export found"):
        load_engine(tmp_path, "tensorrt")
    Path(tmp_path / "x").mkdir()
    with pytest.raises(EngineError, match="on_miss must be one of build, error"):
        load_engine(tmp_path / "x", "tensorrt", on_miss="sometimes")
