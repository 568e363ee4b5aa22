"""The policy node in its own process: lifecycle, chunks with the observation's stamp and the robot's joint
order, stop/resume, goal handling. The probe plays the cameras, the joint states and the chunk executor."""

from __future__ import annotations

import math

import pytest
from node_rig import ROBOT_JOINTS, Rig, make_model, policy_params, start_node, write_params

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("tiny_model"))


def test_lifecycle_chunks_stop_resume_and_goal(ros, model_dir, tmp_path):
    params = write_params(tmp_path / "params.yaml", policy_node=policy_params(model_dir, autostart=False))
    rig = Rig(ros, act_as_executor=True)
    rig.set_goal("pick up the red block")  # published before the node exists: transient local delivers it
    # Joint states in another order, with a joint the model does not use: mapped by name.
    rig.joint_producer = rig.good_joints(("finger", "wheel", "elbow", "shoulder"), (0.0, 9.9, -0.2, 0.1))
    start_node(ros, "policy", "dream_vla_ros.nodes.policy_node", params)

    assert rig.lifecycle_state() == "unconfigured"
    assert rig.lifecycle("configure")
    assert rig.lifecycle_state() == "inactive"
    requests = lambda: int(rig.value("policy_node", "requests", "0"))  # noqa: E731
    rig.wait(lambda: requests() >= 5, what="requests reaching the inactive node")
    assert not rig.chunks, "an inactive policy node published a chunk"

    assert rig.lifecycle("activate")
    rig.wait(lambda: len(rig.chunks) >= 3, what="chunks from the active node")
    chunk = rig.chunks[-1]
    assert chunk.stamp in rig.published_stamps, "header.stamp must be the observation (camera frame) stamp"
    assert chunk.received - chunk.stamp < 0.5
    assert list(chunk.msg.joint_names) == list(ROBOT_JOINTS)
    assert len(chunk.msg.points) == 4
    for i, point in enumerate(chunk.msg.points):
        t = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
        assert t == pytest.approx((i + 1) * 0.05, abs=1e-6)
        assert len(point.positions) == 3 and all(math.isfinite(p) for p in point.positions)
        assert not point.velocities
    rig.wait(lambda: int(rig.value("policy_node", "chunks_published", "0")) >= 3, what="diagnostics of the chunks")
    assert rig.value("policy_node", "goal") == "pick up the red block"
    assert rig.value("policy_node", "backend") == "torch cpu fp32"
    assert float(rig.value("policy_node", "latency engine ms (median)", "nan")) > 0
    assert int(rig.value("policy_node", "iterations k", "0")) >= 1

    # ~/stop: an empty trajectory (the stop signal), then nothing while requests keep coming.
    assert rig.call_trigger("/policy_node/stop").success
    rig.wait(lambda: not rig.chunks[-1].msg.points, what="the stop signal")
    count, seen = len(rig.chunks), requests()
    rig.wait(lambda: requests() >= seen + 5, what="requests while stopped")
    assert len(rig.chunks) == count
    assert rig.call_trigger("/policy_node/resume").success
    rig.wait(lambda: len(rig.chunks) > count + 2 and rig.chunks[-1].msg.points, what="chunks after resume")

    # An empty goal stops as well; a new goal resumes.
    rig.set_goal("")
    rig.wait(lambda: not rig.chunks[-1].msg.points and rig.cause_status("policy_node", "empty goal"),
             what="the stop signal after an empty goal")
    count = len(rig.chunks)
    rig.set_goal("open the drawer")
    rig.wait(lambda: len(rig.chunks) > count + 2, what="chunks for the new goal")
    assert rig.value("policy_node", "goal") == "open the drawer"

    # Deactivate: the stop signal and no chunks; cleanup and configure again work.
    assert rig.lifecycle("deactivate")
    assert rig.lifecycle_state() == "inactive"
    rig.wait(lambda: not rig.chunks[-1].msg.points, what="the stop signal on deactivate")
    count, seen = len(rig.chunks), requests()
    rig.wait(lambda: requests() >= seen + 5, what="requests while inactive")
    assert len(rig.chunks) == count
    assert rig.lifecycle("cleanup")
    assert rig.lifecycle_state() == "unconfigured"
    assert rig.lifecycle("configure") and rig.lifecycle("activate")
    rig.wait(lambda: len(rig.chunks) > count + 2, what="chunks after a cleanup/configure cycle")
    assert rig.lifecycle("active_shutdown")
    assert rig.lifecycle_state() == "finalized"
    assert rig.alive("policy")
    for line in rig.log_lines("policy"):
        assert "Traceback" not in line, rig.ros.outputs()


def test_autostart_and_refusal_to_configure_a_mismatched_model(ros, model_dir, tmp_path):
    """autostart configures and activates by itself; a model that does not match the configured cameras
    makes configure fail with the cause on /diagnostics, and the process stays up."""
    params = write_params(tmp_path / "params.yaml",
                          policy_node=policy_params(model_dir, camera_topics=["/cam/main/image_raw"]))
    rig = Rig(ros, act_as_executor=True)
    start_node(ros, "policy", "dream_vla_ros.nodes.policy_node", params)
    status = rig.wait(lambda: rig.cause_status("policy_node", "camera_topics"), what="the configure failure")
    assert "1 topic(s) for the model's 2 camera(s)" in status.message
    assert rig.lifecycle_state() == "unconfigured"
    assert len(rig.cause_lines("policy", "configure failed")) == 1
    rig.set_parameters(camera_topics=list(policy_params(model_dir)["camera_topics"]))
    rig.set_goal("push the button")
    assert rig.lifecycle("configure") and rig.lifecycle("activate")
    rig.wait(lambda: len(rig.chunks) >= 2, what="chunks once configured")
    assert rig.alive("policy")


def test_chunks_are_confined_to_the_models_joint_envelope(ros, tmp_path):
    """Predicted targets further than envelope_margin outside the joint range the model was trained on are
    clipped to it, and the node counts those chunks on /diagnostics."""
    from dream_vla_ros.policy.config import JointEnvelope

    # the random-weight model predicts targets near 0 rad; it was "trained" between 2 and 3 rad
    envelope = JointEnvelope(position_min=(2.0, 2.0, 2.5), position_max=(2.2, 3.0, 2.5))
    model = make_model(tmp_path / "enveloped", envelope=envelope)
    params = write_params(tmp_path / "params.yaml", policy_node=policy_params(model, envelope_margin=0.05))
    rig = Rig(ros, act_as_executor=True)
    rig.set_goal("open the drawer")
    start_node(ros, "policy", "dream_vla_ros.nodes.policy_node", params)
    rig.wait(lambda: len(rig.chunks) >= 3, what="chunks")
    for chunk in rig.chunks:
        for point in chunk.msg.points:  # robot order: shoulder, elbow, finger = model joints 0, 1, 2
            assert list(point.positions) == pytest.approx([1.95, 1.95, 2.45])
    rig.wait(lambda: int(rig.value("policy_node", "chunks_confined_to_envelope", "0")) >= 1,
             what="the count of confined chunks")


def test_added_delay_holds_every_chunk_back_on_the_nodes_clock(ros, model_dir, tmp_path):
    """The latency test setting: each chunk is published added_delay +- added_delay_jitter s after its
    inference, so its age on arrival grows by that much (eval --delay-sweep)."""
    params = write_params(tmp_path / "params.yaml", policy_node=policy_params(
        model_dir, added_delay=0.3, added_delay_jitter=0.05))
    rig = Rig(ros, act_as_executor=True)
    rig.set_goal("open the drawer")
    start_node(ros, "policy", "dream_vla_ros.nodes.policy_node", params)
    rig.wait(lambda: len(rig.chunks) >= 4, timeout=30.0, what="delayed chunks")
    ages = [c.received - c.stamp for c in rig.chunks[1:] if c.msg.points]
    assert ages and min(ages) >= 0.25, ages  # 0.3 - 0.05 at least, plus the inference itself
    assert max(ages) < 1.0, ages
    assert rig.alive("policy")
