"""From bytes on the wire to motion: the scripted expert drives the sim_arm node THROUGH ROS topics, the recorder
node records it into rosbag2 episodes, the bags become a dataset, a `tiny` model trains on it briefly, and that
model then drives the simulated arm closed loop through the policy node and the chunk executor.

Selected with `pytest -m record`; marked slow (about 25 s on a shared 2-core machine, most of it process start-up)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.record, pytest.mark.slow, pytest.mark.sim, pytest.mark.ros,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:lark.*")]

TASK = "reach"
SEEDS = (0, 1, 2, 3)
SIZE = 64


def graph_file(tmp_path: Path, out: Path) -> Path:
    """sim_arm (as in config/sim_arm.yaml, 64 px) and the recorder (config/recorder.yaml) in one params file."""
    from dream_vla_ros.configuration import node_section, read_yaml
    from dream_vla_ros.paths import config_dir

    sim = node_section(read_yaml(config_dir() / "sim_arm.yaml"), "sim_arm")
    recorder = node_section(read_yaml(config_dir() / "recorder.yaml"), "recorder")
    sim.update(task=TASK, width=SIZE, height=SIZE, max_steps=400)
    recorder.update(out_dir=str(out), flush_period=0.5, camera_names=["corner"])
    path = tmp_path / "record_graph.yaml"
    path.write_text(yaml.safe_dump({"sim_arm": {"ros__parameters": sim}, "recorder": {"ros__parameters": recorder}}))
    return path


class Recorder:
    """The recorder's services and parameters, from the session's client node."""

    def __init__(self, session) -> None:
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        self.session = session
        self.clients = {name: session.node.create_client(Trigger, f"/recorder/{name}")
                        for name in ("start", "stop", "discard")}
        self.parameters = session.node.create_client(SetParameters, "/recorder/set_parameters")

    def call(self, client, request, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():
            assert time.monotonic() < deadline, f"no {client.srv_name}"
            time.sleep(0.02)
        future = client.call_async(request)
        while not future.done():
            assert time.monotonic() < deadline, f"{client.srv_name} did not answer"
            time.sleep(0.01)
        return future.result()

    def label(self, task: str, instruction: str) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter("task", value=task).to_parameter_msg(),
                                                    Parameter("instruction", value=instruction).to_parameter_msg()])
        assert all(r.successful for r in self.call(self.parameters, request).results)

    def trigger(self, name: str) -> dict:
        from std_srvs.srv import Trigger

        response = self.call(self.clients[name], Trigger.Request())
        assert response.success, f"/recorder/{name}: {response.message}"
        return json.loads(response.message)


def record_expert_episodes(tmp_path: Path, out: Path) -> list[dict]:
    """Expert episodes through ROS topics, recorded by the recorder node; returns per kept episode its stop
    summary, the expert's targets and the episode's end event."""
    from ros_harness import allocate_domain_id
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    import dream_vla_ros.sim  # noqa: F401 - MUJOCO_GL before mujoco loads
    from dream_vla_ros.nodes.conversions import seconds_to_duration
    from dream_vla_ros.sim.expert import run_expert
    from dream_vla_ros.sim.joint_arm import CONTROL_DT, JOINT_NAMES, JointArm, SimArmConfig
    from dream_vla_ros.train.evaluation import RosSession

    arm = JointArm(SimArmConfig(task=TASK))
    session = RosSession(graph_file(tmp_path, out), domain_id=allocate_domain_id(), log=lambda _: None)
    kept = []
    try:
        session.start(timeout=180.0)
        recorder = Recorder(session)
        publisher = session.trajectory_publisher()
        for seed in SEEDS:
            demo = run_expert(arm, TASK, seed, max_steps=300)
            if not demo.success:
                continue
            event = session.reset(TASK, seed)
            session.set_goal(event["instruction"])  # what an operator's tool publishes; recorded with the episode
            recorder.label(TASK, event["instruction"])
            started = recorder.trigger("start")
            assert started["instruction"] == event["instruction"]
            time.sleep(0.2)  # the arm holding still: trimmed as the idle start
            msg = JointTrajectory(joint_names=list(JOINT_NAMES))
            msg.points = [JointTrajectoryPoint(positions=row, time_from_start=seconds_to_duration((i + 1) * CONTROL_DT))
                          for i, row in enumerate(demo.targets.tolist())]
            publisher.publish(msg)
            end = session.wait_episode_end(event["episode"], 30.0)
            time.sleep(0.3)
            assert end is not None and end["event"] == "success", (seed, end)
            kept.append({"stop": recorder.trigger("stop"), "targets": demo.targets, "end": end})
        session._check_alive()
    except Exception:
        print(session.outputs() if session.processes else "")
        raise
    finally:
        codes = session.close()
        arm.close()
    assert codes.get("recorder") == 0, codes  # the recorder shuts down cleanly on SIGINT
    return kept


def test_expert_over_ros_is_recorded_built_trained_and_drives_the_arm(tmp_path):
    from ros_harness import allocate_domain_id
    from sensor_msgs.msg import JointState

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.policy.checkpoint import load_checkpoint
    from dream_vla_ros.sim.joint_arm import JOINT_NAMES
    from dream_vla_ros.train import evaluation as ev
    from dream_vla_ros.train.bag_dataset import BuildConfig, build_dataset
    from dream_vla_ros.train.dataset import Dataset
    from dream_vla_ros.train.trainer import TrainConfig, train

    bags = tmp_path / "bags"
    kept = record_expert_episodes(tmp_path, bags)
    assert len(kept) >= 3, "the scripted expert solves reach"
    for episode in kept:
        counts = episode["stop"]["counts"]
        assert counts["/camera/image_raw"]["written"] >= 20 and counts["/joint_states"]["written"] >= 60, counts
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
        assert entry["streams"]["/camera/image_raw"]["rate_hz"] == pytest.approx(30, rel=0.2)
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
    config = ev.EvalConfig(model=str(model_dir), tasks=(TASK,), episodes=1, max_steps=120,
                           domain_id=allocate_domain_id())
    overrides = ev.policy_overrides(config, ev.ADAPTIVE, tmp_path / "profile.jsonl")
    overrides["sim_arm"].update(width=SIZE, height=SIZE)
    session = ev.RosSession(config.config, overrides=overrides, domain_id=config.domain_id, log=lambda _: None)
    positions: list[np.ndarray] = []
    try:
        session.start(timeout=180.0)
        session.node.create_subscription(JointState, "/joint_states", lambda m: positions.append(np.array(m.position)),
                                         qos.SENSOR)
        outcome = ev.run_policy_episode(session, config, ev.ChunkProfile(tmp_path / "profile.jsonl"), TASK,
                                        config.seed, 0)
        session._check_alive()
    except Exception:
        print(session.outputs() if session.processes else "")
        raise
    finally:
        session.close()
    assert not outcome.note, outcome.note
    assert len(outcome.k) >= 3, "chunks of the trained model arrive during the episode"
    moved = np.max(np.abs(np.array(positions)[:, :7] - positions[0][:7]))
    assert moved > 1e-3, "the arm moves under the trained model's chunks"
