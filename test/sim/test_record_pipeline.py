"""From bytes on the wire to motion: the scripted expert drives the sim_arm node THROUGH ROS topics, the recorder
node records it into rosbag2 episodes, the bags become a dataset, a `tiny` model trains on it briefly, and that
model then drives the simulated arm closed loop through the policy node and the chunk executor.

Selected alone with `pytest -m record`; part of `make test` (about 25 s on a shared 2-core machine, most of it process
start-up), since it is the only test of `record expert`'s generated graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.record, pytest.mark.sim, pytest.mark.ros,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:lark.*")]

TASK = "reach"
EPISODES = 4
SIZE = 64


def record_expert_episodes(out: Path) -> list[dict]:
    """Expert episodes through ROS topics (``record expert``), recorded by the recorder node; per kept episode
    its summary (seed, recorder counts) and the expert's targets."""
    from ros_harness import allocate_domain_id

    import dream_vla_ros.sim  # noqa: F401 - MUJOCO_GL before mujoco loads
    from dream_vla_ros.evaluation.ros_demos import RosDemoConfig, record_expert_demos
    from dream_vla_ros.sim.collect import CollectConfig
    from dream_vla_ros.sim.expert import run_expert
    from dream_vla_ros.sim.joint_arm import JointArm, SimArmConfig

    collect = CollectConfig(tasks=(TASK,), episodes_per_task=EPISODES, workers=1, max_attempts=2)
    summary = record_expert_demos(RosDemoConfig(out=str(out), collect=collect, image_size=SIZE, max_steps=400,
                                                domain_id=allocate_domain_id()), log=print, progress=False)
    arm = JointArm(SimArmConfig(task=TASK))
    try:  # the expert is deterministic per seed: its targets again, to compare with what the bags hold
        return [{**e, "targets": run_expert(arm, TASK, e["seed"], max_steps=400).targets} for e in summary["episodes"]]
    finally:
        arm.close()


def test_expert_over_ros_is_recorded_built_trained_and_drives_the_arm(tmp_path):
    from ros_harness import allocate_domain_id
    from sensor_msgs.msg import JointState

    from dream_vla_ros.evaluation.config import ADAPTIVE, EvalConfig
    from dream_vla_ros.evaluation.episodes import run_policy_episode
    from dream_vla_ros.evaluation.graph import policy_overrides
    from dream_vla_ros.evaluation.session import RosSession
    from dream_vla_ros.evaluation.statistics import ChunkProfile
    from dream_vla_ros.nodes import qos
    from dream_vla_ros.policy.checkpoint import load_checkpoint
    from dream_vla_ros.sim.joint_arm import JOINT_NAMES
    from dream_vla_ros.train.bag_config import BuildConfig
    from dream_vla_ros.train.bag_dataset import build_dataset
    from dream_vla_ros.train.dataset import Dataset
    from dream_vla_ros.train.trainer import TrainConfig, train

    bags = tmp_path / "bags"
    kept = record_expert_episodes(bags)
    assert len(kept) >= 3, "the scripted expert solves reach"
    for episode in kept:
        counts = episode["counts"]
        assert counts["/camera/corner/image_raw"]["written"] >= 20 and counts["/joint_states"]["written"] >= 60, counts
        assert counts["/arm_controller/joint_trajectory"]["written"] == 1
        assert all(c["dropped_backlog"] == 0 for c in counts.values())

    # Bags -> dataset at 40 Hz.
    result = build_dataset([bags], BuildConfig(out=str(tmp_path / "dataset"), rate=40.0, val_fraction=0.25),
                           log=lambda _: None)
    report = result.report
    assert not report["refused"], report["refused"]
    assert report["totals"]["episodes"] == len(kept) and result.meta.joint_names == JOINT_NAMES
    assert result.meta.cameras == {"corner": (SIZE, SIZE)}
    for entry in report["episodes"]:
        assert entry["streams"]["/camera/corner/image_raw"]["rate_hz"] == pytest.approx(30, rel=0.2)
        assert entry["streams"]["/joint_states"]["rate_hz"] == pytest.approx(80, rel=0.2)
        assert entry["action"]["rejected"] == {} and entry["trimmed_frames"] >= 4  # the idle start went
    dataset = Dataset(tmp_path / "dataset")
    for index, episode in enumerate(dataset.episodes()):
        targets = kept[index]["targets"]
        # The actions are the expert's targets as the controller followed them: the commanded path passes
        # within a control step of the recorded targets, and the arm tracks its actions.
        gap = np.min(np.abs(episode.actions[:, None, :7] - targets[None, :, :7]).max(axis=2), axis=1)
        assert np.quantile(gap, 0.9) < 0.05, np.quantile(gap, 0.9)
        tracking = np.abs(episode.proprio[2:, :7] - episode.actions[:-2, :7]).max()
        assert tracking < 0.15, tracking
        assert episode.instruction and episode.task == TASK

    # Train the tiny preset briefly on it.
    model_dir = tmp_path / "model"
    trained = train(TrainConfig(dataset=str(tmp_path / "dataset"), out=str(model_dir), preset="tiny", steps=40,
                                batch_size=16, lr=3e-3, warmup_steps=5, eval_every=20, eval_samples=32,
                                checkpoint_every=40, threads=1, val_fraction=0.25), log=lambda _: None)
    assert trained.steps == 40 and np.isfinite(trained.final["loss"])
    model = load_checkpoint(model_dir)
    assert model.config.joint_names == JOINT_NAMES and model.config.vision.cameras == ("corner",)

    # The trained model drives the simulated arm closed loop through ROS 2.
    config = EvalConfig(model=str(model_dir), tasks=(TASK,), episodes=1, max_steps=200,
                           domain_id=allocate_domain_id())
    overrides = policy_overrides(config, ADAPTIVE, tmp_path / "profile.jsonl")
    overrides["sim_arm"].update(width=SIZE, height=SIZE)
    session = RosSession(config.config, overrides=overrides, domain_id=config.domain_id, log=lambda _: None)
    positions: list[np.ndarray] = []
    try:
        session.start(timeout=180.0)
        session.node.create_subscription(JointState, "/joint_states", lambda m: positions.append(np.array(m.position)),
                                         qos.SENSOR)
        outcome = run_policy_episode(session, config, ChunkProfile(tmp_path / "profile.jsonl"), TASK,
                                        config.seed, 0)
        session.check_alive()
    except Exception:
        print(session.outputs() if session.processes else "")
        raise
    finally:
        session.close()
    assert not outcome.note, outcome.note
    assert len(outcome.k) >= 3, "chunks of the trained model arrive during the episode"
    moved = np.max(np.abs(np.array(positions)[:, :7] - positions[0][:7]))
    assert moved > 1e-3, "the arm moves under the trained model's chunks"
