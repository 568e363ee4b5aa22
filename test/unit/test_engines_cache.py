"""The TensorRT engine cache without TensorRT: keys change exactly when an engine would be invalid, entries are
written atomically, corrupt plans are refused, and a launch reuses, rebuilds (saying why) or refuses exactly as
documented (the TensorRT build itself is replaced by a stand-in; the real build runs in test/gpu)."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest

from dream_vla_ros.engines import tensorrt_engine
from dream_vla_ros.engines.engine_cache import CacheKey, EngineCache, make_key
from dream_vla_ros.engines.manifest import graph_digest
from dream_vla_ros.errors import EngineError

PROFILE = [("images", (1, 1, 3, 32, 32), (1, 1, 3, 32, 32), (8, 1, 3, 32, 32)), ("tokens", (1, 12), (1, 12), (8, 12))]


def _key(**changes) -> CacheKey:
    args = {"graph_digest": "a" * 64, "tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7",
            "precision": "fp16", "profile": PROFILE, "builder": {"workspace_mib": 1024, "optimization_level": 3}}
    args.update(changes)
    return make_key(**args)


@pytest.mark.parametrize(
    "change",
    [
        {"graph_digest": "b" * 64},
        {"tensorrt": "8.6.2"},
        {"gpu": "NVIDIA Jetson Orin NX"},
        {"compute_capability": "8.6"},
        {"precision": "fp32"},
        {"profile": [PROFILE[0], ("tokens", (1, 12), (1, 12), (16, 12))]},
        {"profile": [PROFILE[0], ("tokens", (1, 12), (2, 12), (8, 12))]},
        {"profile": PROFILE[:1]},
        {"builder": {"workspace_mib": 2048, "optimization_level": 3}},
        {"builder": {"workspace_mib": 1024, "optimization_level": 5}},
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
    assert cache.timing_cache_path("10.3.0", "Orin (nvgpu)", "8.7").name == "timing-trt10.3.0-Orin_nvgpu-sm8.7.cache"


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    """TensorRT 10.3 on an Orin, with a builder that records what it builds."""
    built: list[str] = []
    state = {"version": "10.3.0"}
    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda: types.SimpleNamespace(__version__=state["version"]))
    monkeypatch.setattr(tensorrt_engine, "cuda_device", lambda device: (None, 0, "Orin", "8.7"))

    def build(trt, export, spec, settings, cache, gpu, capability):
        built.append(f"{spec.role}:{settings.precision}:{trt.__version__}")
        return f"plan {spec.role} {settings.precision} {trt.__version__}".encode()

    monkeypatch.setattr(tensorrt_engine, "_build_plan", build)
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


def test_a_launch_reuses_rebuilds_with_a_reason_or_refuses(fake_trt, export, tmp_path):
    cache = EngineCache(tmp_path / "cache")
    settings = tensorrt_engine.BuildSettings("fp16")
    messages: list[str] = []
    tensorrt_engine.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.3.0", "step:fp16:10.3.0"]
    assert any("no cached encode engine" in m for m in messages)

    fake_trt.built.clear()
    messages.clear()
    entries = tensorrt_engine.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == [] and messages == []  # cached: nothing built, nothing to say
    assert entries["step"].plan.read_bytes() == b"plan step fp16 10.3.0"

    fake_trt.state["version"] = "10.7.0"  # a TensorRT upgrade invalidates every engine, and says so
    tensorrt_engine.build_engines(export, cache, settings, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.7.0", "step:fp16:10.7.0"]
    assert any("tensorrt: 10.3.0 -> 10.7.0" in m for m in messages)

    with pytest.raises(EngineError, match=r"no usable TensorRT engine for encode.*precision: fp16 -> fp32"):
        tensorrt_engine.build_engines(export, cache, dataclasses.replace(settings, precision="fp32"), on_miss="error")

    entries["step"].plan.write_bytes(b"garbage")  # the 10.3 entry is no longer current; corrupt the current one
    current = tensorrt_engine.build_engines(export, cache, settings)["step"].plan
    current.write_bytes(b"x" * current.stat().st_size)
    fake_trt.built.clear()
    with pytest.raises(EngineError, match="corrupt engine"):
        tensorrt_engine.build_engines(export, cache, settings)
    assert fake_trt.built == []  # refused, not silently rebuilt
    tensorrt_engine.build_engines(export, cache, settings, force=True, log=messages.append)
    assert fake_trt.built == ["encode:fp16:10.7.0", "step:fp16:10.7.0"]


def test_op_coverage_is_checked_before_building(fake_trt, export, tmp_path):
    fake_trt.state["version"] = "8.5.2"
    with pytest.raises(EngineError, match=r"LayerNormalization.*re-export with --opset 16"):
        tensorrt_engine.build_engines(export, EngineCache(tmp_path / "cache"), tensorrt_engine.BuildSettings())
    assert fake_trt.built == []


def test_versions_and_settings_are_checked():
    for ok in ("8.5.2.2", "8.6.2", "10.3.0", "10.13.1"):
        tensorrt_engine.check_version(ok)
    for bad in ("8.4.1", "9.2.0", "11.4.0"):
        with pytest.raises(EngineError, match="is not supported"):
            tensorrt_engine.check_version(bad)
    with pytest.raises(EngineError, match="int8 is ONNX Runtime only"):
        tensorrt_engine.BuildSettings("int8")
    with pytest.raises(EngineError, match="optimization_level"):
        tensorrt_engine.BuildSettings(optimization_level=7)


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
