"""The policy node's engine parameters reach the backends: ``halting_check_every``, ``engine_on_miss`` and
``engine_cache_dir`` become backend settings only when set, are validated, match what the onnxruntime and
tensorrt backends accept, and ``load_engine`` hands ``progress`` to factories that name it (ROS-free; the
node side over DDS is test/ros/test_engine_build_progress.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dream_vla_ros.configuration import from_mapping
from dream_vla_ros.engines import loader
from dream_vla_ros.errors import ConfigError, EngineError
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig


def test_engine_parameters_become_backend_settings_only_when_set():
    assert PolicyNodeConfig().engine_settings() == {"device": "cpu", "precision": "fp32"}
    config = PolicyNodeConfig(backend="tensorrt", device="cuda", precision="fp16", halting_check_every=2,
                              engine_on_miss="error", engine_cache_dir="/data/trt")
    assert config.engine_settings() == {"device": "cuda", "precision": "fp16", "check_every": 2, "on_miss": "error",
                                        "cache_dir": "/data/trt"}


def test_engine_parameters_are_validated():
    with pytest.raises(ConfigError, match="halting_check_every"):
        PolicyNodeConfig(halting_check_every=0)
    with pytest.raises(ConfigError, match="engine_on_miss: must be one of 'build', 'error'"):
        from_mapping(PolicyNodeConfig, {"engine_on_miss": "sometimes"})


def test_the_backends_accept_what_the_node_sends():
    pytest.importorskip("onnxruntime")
    settings = PolicyNodeConfig(halting_check_every=3, engine_on_miss="error", engine_cache_dir="/x").engine_settings()
    loader._check_settings(loader._factory("tensorrt"), "tensorrt", settings)
    ort_settings = {k: v for k, v in settings.items() if k != "on_miss"}  # ONNX Runtime builds inside a session
    loader._check_settings(loader._factory("onnxruntime"), "onnxruntime", ort_settings)
    with pytest.raises(EngineError, match="unknown setting 'on_miss'"):
        loader._check_settings(loader._factory("onnxruntime"), "onnxruntime", settings)
    with pytest.raises(EngineError, match="unknown setting 'cache_dir'"):
        loader._check_settings(loader._factory("torch"), "torch", {"cache_dir": "/x"})


class _Recorder:
    def __init__(self, model_dir, *, progress=None) -> None:
        self.model_dir, self.progress = model_dir, progress
        self.name, self.metadata = "recorder", None

    def infer(self, observation):
        raise NotImplementedError


class _Plain(_Recorder):
    def __init__(self, model_dir, **settings) -> None:  # forwards **settings: must not get progress unasked
        assert "progress" not in settings
        super().__init__(model_dir)


def test_progress_reaches_only_factories_that_name_it(tmp_path, monkeypatch):
    import sys
    import types

    module = types.ModuleType("fake_backends")
    module.Recorder, module.Plain = _Recorder, _Plain
    monkeypatch.setitem(sys.modules, "fake_backends", module)
    heard: list[str] = []
    engine = loader.load_engine(tmp_path, "fake_backends:Recorder", progress=heard.append)
    engine.progress("building")
    assert heard == ["building"] and Path(engine.model_dir) == tmp_path
    assert loader.load_engine(tmp_path, "fake_backends:Plain", progress=heard.append).progress is None
