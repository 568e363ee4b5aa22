"""The policy node while an engine is prepared at configure (a TensorRT build on a cache miss takes minutes):
progress messages on /diagnostics (WARN, slot ``engine build``) and on the ROS log while configure runs, the
slot OK once the engine is loaded, the engine's status and the node's engine parameters (``engine_cache_dir``,
``halting_check_every``) reaching the backend, and ``engine_on_miss: error`` refusing to configure with the
cause. The backend is a torch engine that reports progress like a build (test/ros/peers/slow_build_engine.py)."""

from __future__ import annotations

import pytest
from node_rig import Rig, make_model, policy_params, start_node, write_params

pytestmark = pytest.mark.ros

BACKEND = "slow_build_engine:SlowBuildEngine"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("progress_model"))


def test_engine_build_progress_on_diagnostics_and_the_log_then_running(ros, model, tmp_path):
    cache = tmp_path / "engines"
    params = write_params(tmp_path / "params.yaml", policy_node=policy_params(
        model, backend=BACKEND, engine_cache_dir=str(cache), halting_check_every=3))
    rig = Rig(ros, act_as_executor=True)
    rig.set_goal("pick up the block")
    start_node(ros, "policy", "dream_vla_ros.nodes.policy_node", params)
    status = rig.wait(lambda: rig.cause_status("policy_node", "s elapsed"), timeout=30,
                      what="build progress on /diagnostics")
    assert status.level == 1 and status.message.startswith("building the TensorRT fp16 engine for encode (1 of 1)")
    assert not rig.chunks  # still configuring: the progress comes before the engine exists
    rig.wait(lambda: len(rig.chunks) >= 2, timeout=30, what="chunks once the engine is loaded")
    rig.wait(lambda: rig.status.get("policy_node: engine build") is not None
             and rig.status["policy_node: engine build"].level == 0, what="the engine build slot OK")
    rig.wait(lambda: rig.value("policy_node", "check_every") == "3", what="the engine's status on /diagnostics")
    assert rig.value("policy_node", "engine cache") == f"1 of 1 engines built now ({cache})"
    lines = rig.log_lines("policy")
    progress = [line for line in lines if "engine build: building the TensorRT fp16 engine for encode" in line]
    assert len(progress) == 4, rig.ros.outputs()
    assert not any("Traceback" in line for line in lines), rig.ros.outputs()


def test_engine_on_miss_error_refuses_to_configure_with_the_cause(ros, model, tmp_path):
    params = write_params(tmp_path / "params.yaml", policy_node=policy_params(
        model, backend=BACKEND, engine_on_miss="error", engine_cache_dir=str(tmp_path / "empty")))
    rig = Rig(ros, act_as_executor=True)
    start_node(ros, "policy", "dream_vla_ros.nodes.policy_node", params)
    status = rig.wait(lambda: rig.cause_status("policy_node", "no usable TensorRT engine"), timeout=30,
                      what="the refusal on /diagnostics")
    assert "no cached encode engine in" in status.message and status.level == 2
    assert rig.lifecycle_state() == "unconfigured" and not rig.chunks and rig.alive("policy")
