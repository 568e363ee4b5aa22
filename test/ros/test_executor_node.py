"""The chunk executor in its own process: chunk requests, windows on the controller topics (reliable QoS,
joints split by controller, within the limits), stop/resume, holding on stale joint states. The probe plays
the policy node (chunks), the joint states and the controllers."""

from __future__ import annotations

import pytest
from node_rig import HOME, Rig, executor_params, start_node, write_params

pytestmark = pytest.mark.ros


def ramp(start, step, rows=10):
    return [[s + step * (i + 1) for s in start] for i in range(rows)]


def test_windows_requests_stop_resume_and_stale_joint_states(ros, tmp_path):
    from rclpy.qos import ReliabilityPolicy

    params = write_params(tmp_path / "params.yaml", chunk_executor=executor_params())
    rig = Rig(ros)
    rig.joint_producer = None  # no joint states yet: nothing may be sent
    start_node(ros, "executor", "dream_vla_ros.nodes.executor_node", params)
    ros.wait_for_publisher("/arm_controller/joint_trajectory", timeout=20)
    for controller in ("arm_controller", "gripper_controller"):
        (info,) = ros.node.get_publishers_info_by_topic(f"/{controller}/joint_trajectory")
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    rig.wait(lambda: rig.cause_status("chunk_executor", "no joint state received yet"), what="waiting cause")
    assert not rig.windows["arm_controller"], "windows sent before any joint state"
    assert not rig.requests

    # Joint states arrive: hold where the arm is, ask for a chunk.
    rig.restore_producers()
    rig.wait(lambda: rig.windows["arm_controller"] and rig.windows["gripper_controller"] and rig.requests,
             what="hold windows and a chunk request")
    arm = rig.windows["arm_controller"][-1][1]
    assert list(arm.joint_names) == ["shoulder", "elbow"]
    assert list(rig.windows["gripper_controller"][-1][1].joint_names) == ["finger"]
    assert arm.points[0].positions.tolist() == pytest.approx(HOME[:2])
    assert rig.at_rest("arm_controller")
    session, n = rig.requests[-1].frame_id.split("/")
    assert n == "0"

    # A chunk (rows in another joint order) is executed: the windows move toward it within the limits.
    t0 = rig.now()
    rig.publish_chunk(ramp([0.0, 0.1, -0.2], 0.02), names=("finger", "shoulder", "elbow"), t0=t0)
    rig.wait(lambda: rig.mode() == "running", what="running on the chunk")
    rig.wait(lambda: rig.requests[-1].frame_id == f"{session}/1", what="the next request after a chunk")
    rig.wait(lambda: any(p.velocities[0] > 0 for _, w in rig.windows["arm_controller"][-3:] for p in w.points),
             what="motion toward the chunk")
    assert rig.requests[-1].stamp.sec > 0

    # Running dry: brake to a hold (starvation is a cause, reported once).
    rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), timeout=10, what="hold after the chunk ran out")
    assert rig.cause_status("chunk_executor", "no chunk arrived in time")

    # ~/stop latches a hold: chunks are not executed until ~/resume.
    assert rig.call_trigger("/chunk_executor/stop").success
    accepted = rig.value("chunk_executor", "chunks_accepted")
    rig.publish_chunk(ramp([0.1, -0.2, 0.0], 0.05))
    rig.wait(lambda: rig.value("chunk_executor", "rejected stopped") == "1", what="the chunk rejected while stopped")
    assert rig.value("chunk_executor", "chunks_accepted") == accepted and rig.mode() == "holding"
    assert rig.call_trigger("/chunk_executor/resume").success
    rig.publish_chunk(ramp([0.1, -0.2, 0.0], 0.01))
    rig.wait(lambda: rig.mode() == "running", what="running after resume")

    # Stale joint states: brake to a hold, resume from the measured state when they return.
    stale_lines = len(rig.cause_lines("executor", "joint state is"))  # a loaded machine may have logged one
    rig.joint_producer = None
    rig.wait(lambda: rig.cause_status("chunk_executor", "joint state is"), what="the stale joint state cause")
    rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), what="hold on stale joint states")
    assert not rig.requests or rig.requests[-1].stamp.sec <= rig.now()
    requests = len(rig.requests)
    rig.wait_until(rig.now() + 0.3)
    assert len(rig.requests) == requests, "chunks requested while holding on a fault"
    rig.restore_producers()
    rig.wait(lambda: rig.cause_status("chunk_executor", "joint state is") is None and len(rig.requests) > requests,
             what="recovery and new requests")
    rig.publish_chunk(ramp(HOME, -0.01))
    rig.wait(lambda: rig.mode() == "running", what="running after the joint states returned")
    assert len(rig.cause_lines("executor", "joint state is")) == stale_lines + 1  # logged once for this outage
    assert not rig.violations, rig.violations[:5]
    assert rig.alive("executor")


def test_composed_process_runs_both_nodes_under_their_own_names(ros, tmp_path):
    """``up --composed`` / ``composed:=true``: one process, both nodes, each with its own params section."""
    from node_rig import make_model, policy_params

    from dream_vla_ros.bringup import describe
    from dream_vla_ros.nodes.composed import compose
    from dream_vla_ros.process_group import node_argv

    model = make_model(tmp_path / "model")
    params = write_params(tmp_path / "params.yaml", policy_node=policy_params(model), chunk_executor=executor_params())
    graph = compose(describe(params, overrides={"chunk_executor": {"request_period": 0.04}}), tmp_path)
    (node,) = graph.nodes
    assert node.executable == "composed"
    rig = Rig(ros)
    rig.set_goal("stack the blocks")
    ros.start("composed", node_argv(node.module, node.ros_args()), graph.environment)
    rig.wait(lambda: len(rig.chunks) >= 3 and rig.mode() == "running", timeout=60, what="the composed loop running")
    names = {name for name, _ in ros.node.get_node_names_and_namespaces()}
    assert {"policy_node", "chunk_executor"} <= names
    rig.wait(lambda: any(p.velocities and any(p.velocities) for _, w in rig.windows["arm_controller"][-5:]
                         for p in w.points), what="windows in motion")
    assert not rig.violations, rig.violations[:5]
