"""The policy node with the onnxruntime backend: a corrupt export makes configure fail with the cause on
/diagnostics (the process stays up and publishes nothing); once the export is repaired, configure succeeds
and chunks flow with the backend named on /diagnostics."""

from __future__ import annotations

import shutil

import pytest
from node_rig import Rig, make_model, policy_params, start_node, write_params

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from dream_vla_ros.engines.export import export_model

    directory = make_model(tmp_path_factory.mktemp("ort_model"))
    export_model(directory, directory / "onnx")
    return directory


def test_corrupt_export_refuses_to_configure_then_repaired_export_runs(ros, exported_model, tmp_path):
    model = shutil.copytree(exported_model, tmp_path / "model")
    step = model / "onnx" / "step.onnx"
    good = step.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    step.write_bytes(bytes(damaged))

    params = write_params(tmp_path / "params.yaml", policy_node=policy_params(model, backend="onnxruntime"))
    rig = Rig(ros, act_as_executor=True)
    rig.set_goal("pick up the block")
    start_node(ros, "policy", "dream_vla_ros.nodes.policy_node", params)
    status = rig.wait(lambda: rig.cause_status("policy_node", "sha256 mismatch"), timeout=30,
                      what="the configure failure on /diagnostics")
    assert "step.onnx" in status.message and "corrupt or replaced" in status.message
    assert rig.lifecycle_state() == "unconfigured"
    assert not rig.chunks and rig.alive("policy")
    assert len(rig.cause_lines("policy", "configure failed")) == 1

    step.write_bytes(good)
    assert rig.lifecycle("configure") and rig.lifecycle("activate")
    rig.wait(lambda: len(rig.chunks) >= 2, timeout=20, what="chunks from the repaired export")
    rig.wait(lambda: rig.value("policy_node", "backend").startswith("onnxruntime"), what="the backend on /diagnostics")
    assert rig.value("policy_node", "backend") == "onnxruntime cpu fp32"
    for line in rig.log_lines("policy"):
        assert "Traceback" not in line, rig.ros.outputs()
