"""A short closed-loop episode through ROS 2: sim_arm, policy_node and chunk_executor as separate processes, driven
the way `dream-vla-ros eval` drives them, with a random-weight `tiny` model reading two of the arm's cameras (the
loop runs; success is not asked)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.sim, pytest.mark.ros]


@pytest.fixture(scope="module")
def tiny_sawyer_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from dream_vla_ros.policy.checkpoint import save_checkpoint
    from dream_vla_ros.policy.config import SAWYER_JOINTS, NormalizationConfig, preset
    from dream_vla_ros.policy.model import build_model

    torch.manual_seed(0)
    config = preset("tiny", joint_names=SAWYER_JOINTS, normalization=NormalizationConfig(action_mode="delta"))
    config = dataclasses.replace(config, vision=dataclasses.replace(config.vision, cameras=("corner", "topview")))
    return save_checkpoint(build_model(config), tmp_path_factory.mktemp("models") / "tiny_sawyer")


def test_tiny_policy_drives_the_simulated_arm_through_ros(tiny_sawyer_model, tmp_path):
    from ros_harness import allocate_domain_id
    from sensor_msgs.msg import JointState

    from dream_vla_ros.errors import ConfigError
    from dream_vla_ros.evaluation.config import ADAPTIVE, EvalConfig
    from dream_vla_ros.evaluation.episodes import run_policy_episode
    from dream_vla_ros.evaluation.graph import policy_overrides
    from dream_vla_ros.evaluation.session import RosSession
    from dream_vla_ros.evaluation.statistics import ChunkProfile, summarize
    from dream_vla_ros.nodes import qos
    from dream_vla_ros.sim.joint_arm import CONTROL_DT

    config = EvalConfig(model=str(tiny_sawyer_model), tasks=("reach",), episodes=1, max_steps=200,
                           domain_id=allocate_domain_id())
    profile_path = tmp_path / "profile.jsonl"
    overrides = policy_overrides(config, ADAPTIVE, profile_path)
    assert overrides["sim_arm"]["cameras"] == ["corner", "topview"]
    assert overrides["policy_node"]["camera_topics"] == ["/camera/corner/image_raw", "/camera/topview/image_raw"]
    overrides["sim_arm"].update(width=64, height=64)
    session = RosSession(config.config, overrides=overrides, domain_id=config.domain_id, log=lambda _: None)
    positions: list[np.ndarray] = []
    try:
        session.start(timeout=120.0)
        session.node.create_subscription(JointState, "/joint_states", lambda m: positions.append(np.array(m.position)),
                                         qos.SENSOR)
        profile = ChunkProfile(profile_path)
        starts: list[dict] = []
        results = [run_policy_episode(session, config, profile, "reach", config.seed, 0, on_start=starts.append)]
        session.set_real_time_factor(0.8)  # live: the next physics step runs at the new pace
        with pytest.raises(ConfigError, match="real_time_factor"):
            session.set_real_time_factor(-1.0)
        results.append(run_policy_episode(session, config, profile, "reach", config.seed + 1, 1,
                                             on_start=starts.append, real_time_factor=0.8))
        verdict = session.judge_goal("make me a coffee")  # this model records no instructions: not checked
        assert verdict["accepted"] and not verdict["checked"] and session.joint_positions().shape == (8,)
        session.set_goal("")
        time.sleep(0.2)
        session.check_alive()  # no node crashed
        if any(r.note for r in results):
            print(session.outputs())  # why an episode did not end, while the processes are still there
    except Exception:
        print(session.outputs() if session.processes else "")
        raise
    finally:
        codes = session.close()
    assert [s["episode"] for s in starts] == [starts[0]["episode"], starts[0]["episode"] + 1]
    assert [r.real_time_factor for r in results] == [1.0, 0.8]  # as the arm reports it in its end events
    assert all(0.0 < s["stamp"] < 1e5 for s in starts)  # simulated time (/clock), not the wall clock
    for result in results:
        assert not result.note, result.note  # the episode ended with an event (truncated or success)
        assert 1 <= result.steps <= config.max_steps
        assert result.goal_distance is not None  # reach: hand to goal (m), at the end and at its closest
        assert 0.0 <= result.closest_goal_distance <= result.goal_distance < 1.5
        assert len(result.k) >= 3, "chunks arrive during the episode"
        assert all(1 <= k <= 12 for k in result.k)
        # On simulated time the nodes' clocks move in 12.5 ms physics steps: a chunk published within its
        # frame's step has latency 0, and one whose frame arrived before that step's /clock, -12.5 ms.
        assert result.latency_ms and all(-CONTROL_DT * 1e3 - 1e-6 <= v < 2000.0 for v in result.latency_ms)
    moved = np.max(np.abs(np.array(positions)[:, :7] - positions[0][:7]))
    assert moved > 1e-3, "the arm moves under the policy's chunks"
    assert set(codes.values()) == {0}, codes  # every node shuts down cleanly on SIGINT
    summary = summarize(results, config)
    assert summary["tasks"]["reach"]["episodes"] == 2 and summary["k_mean"] is not None
