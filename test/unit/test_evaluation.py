"""The ROS-free parts of the closed-loop evaluation: settings, chunk profile parsing, statistics, reports."""

from __future__ import annotations

import json
import time

import pytest

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.evaluation import report
from dream_vla_ros.evaluation.config import ADAPTIVE, EvalConfig, fixed_k, sweep_settings
from dream_vla_ros.evaluation.episodes import last_step_time
from dream_vla_ros.evaluation.graph import camera_wiring, checkpoint_cameras, clock_overrides
from dream_vla_ros.evaluation.pacing import PacingConfig
from dream_vla_ros.evaluation.runner import DELAY_SWEEP_MS
from dream_vla_ros.evaluation.session import RosSession
from dream_vla_ros.evaluation.statistics import ChunkProfile, EpisodeResult, chunk_statistics, summarize


def test_sweep_settings_cover_fixed_k_and_adaptive():
    assert [h.label for h in sweep_settings(12)] == ["k=1", "k=2", "k=4", "k=8", "k=12", "adaptive"]
    assert [h.label for h in sweep_settings(8)] == ["k=1", "k=2", "k=4", "k=8", "adaptive"]
    assert fixed_k(4).overrides() == {"halting_k_max": 4, "halting_delta": 0.0}
    assert ADAPTIVE.overrides() == {"halting_k_max": 0, "halting_delta": -1.0}


def test_config_checks():
    with pytest.raises(ConfigError, match="controller_interface"):
        EvalConfig(model="m", controller_interface="carrier-pigeon")
    with pytest.raises(ConfigError, match="controller_interface"):
        EvalConfig(expert=True, controller_interface="action")
    assert EvalConfig(model="m", controller_interface="action").controller_interface == "action"
    with pytest.raises(ConfigError, match="model"):
        EvalConfig()
    assert EvalConfig(expert=True).seed >= 100_000  # never a training demonstration's seed


def test_chunk_profile_reads_incrementally_and_by_stamp(tmp_path):
    path = tmp_path / "profile.jsonl"
    profile = ChunkProfile(path)
    assert profile.between(0.0, 10.0) == []
    records = [{"stamp": 1.0, "published": 1.05, "iterations": 3, "engine_ms": 10.0, "preprocessing_ms": 2.0},
               {"stamp": 2.0, "published": 2.02, "iterations": 5, "engine_ms": 12.0}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n" + '{"stamp": 3.0, "publ')  # partial line
    chosen = profile.between(0.5, 2.5)
    assert [r["stamp"] for r in chosen] == [1.0, 2.0]
    k, latency, inference = chunk_statistics(chosen)
    assert k == [3, 5]
    assert latency == pytest.approx([50.0, 20.0])
    assert inference == pytest.approx([12.0, 12.0])
    with path.open("a") as f:
        f.write('ished": 3.1, "iterations": 2}\n')
    assert [r["iterations"] for r in profile.between(2.5, 3.5)] == [2]


def test_summary_report_and_plots(tmp_path):
    config = EvalConfig(model="m", tasks=("reach", "push"), episodes=2)
    episodes = [
        EpisodeResult("reach", 100000, "reach the goal position", True, 40, 0.6, [2, 3], [30.0, 40.0], [5.0, 6.0]),
        EpisodeResult.ended("reach", 100001, "move the gripper to the target",
                               {"event": "truncated", "steps": 500, "lag_events": 1, "goal_distance": 0.081,
                                "closest_goal_distance": 0.034}, 6.3, k=[4], latency_ms=[50.0], inference_ms=[7.0]),
        EpisodeResult("push", 100000, "push the puck to the goal", True, 60, 0.9, [3], [35.0], [6.0]),
        EpisodeResult("push", 100001, "slide the puck to the target", True, 80, 1.1, [3, 3], [45.0, 55.0], [6.0]),
    ]
    result = summarize(episodes, config, wall_s=10.0)
    assert result["tasks"]["reach"]["success_rate"] == 0.5 and result["tasks"]["push"]["success_rate"] == 1.0
    assert result["mean_success"] == pytest.approx(0.75)
    assert result["episodes_per_task"] == 2 and result["controller_interface"] == "topic"
    assert result["k_histogram"] == {"2": 1, "3": 4, "4": 1}
    assert result["k_mean"] == pytest.approx(3.0)
    assert result["tasks"]["reach"]["latency_ms_median"] == pytest.approx(40.0)
    assert result["tasks"]["reach"]["steps_to_success_mean"] == 40.0
    assert result["tasks"]["reach"]["failed_goal_distance_median"] == pytest.approx(0.081)
    assert result["tasks"]["reach"]["failed_closest_goal_distance_median"] == pytest.approx(0.034)
    assert result["tasks"]["push"]["failed_goal_distance_median"] is None  # no failures
    assert result["lag_events"] == 1 and result["episodes"][1]["goal_distance"] == pytest.approx(0.081)
    json.dumps(result)
    result["k_sweep"] = [{"label": "k=1", "k_max": 1, "delta": 0.0, "mean_success": 0.5, "k_mean": 1.0,
                          "latency_ms_median": 20.0, "latency_ms_mean": 21.0, "inference_ms_median": 3.0,
                          "inference_ms_mean": 3.0, "tasks": {"reach": 0.5, "push": 0.5}}]
    text = report.markdown_report(result)
    assert "| reach | 50% | 2 |" in text and "## k-sweep" in text and "| k=1 | 50% |" in text
    assert "| 40.0 | 8.1 / 3.4 |" in text and "| 70.0 | - / - |" in text
    assert "8.1 cm from the goal, closest 3.4 cm" in report.episode_line(2, 4, episodes[1])
    assert "WARNING: 1 lag event(s) in 1 episode(s)" in text  # a lagged result says it does not count
    assert "simulation time (/clock), real-time factor 1 (auto), 1 lag event(s)" in text
    assert "does not count" in report.episode_line(2, 4, episodes[1])
    assert result["episodes_with_lag"] == 1 and result["real_time_factor"] == 1.0
    assert result["host"]["cores"] >= 1 and result["host"]["cpu_model"]
    files = report.write_outputs(result, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["mean_success"] == pytest.approx(0.75)
    assert {p.split("/")[-1] for p in files["plots"]} == {"success_per_task.png", "k_histogram.png", "k_sweep.png"}


def test_delay_sweep_report_and_plot(tmp_path):
    config = EvalConfig(model="m", tasks=("reach",), episodes=1, pacing=PacingConfig(real_time_factor=0.5))
    episodes = [EpisodeResult("reach", 100000, "reach", True, 40, 0.6, [2], [30.0], [5.0], real_time_factor=0.5)]
    result = summarize(episodes, config)
    assert result["pacing"] == "fixed" and result["real_time_factors"] == [0.5] and result["lag_events"] == 0
    result["delay_sweep"] = [
        {"added_delay_ms": d, "mean_success": s, "latency_ms_median": 30.0 + d, "k_mean": 2.0,
         "real_time_factors": [0.5], "lag_events": 0} for d, s in ((0.0, 1.0), (300.0, 0.25))]
    text = report.markdown_report(result)
    assert "| 300 | 25% | 330.0 | 2.00 | 0.5 | 0 |" in text and "WARNING" not in text
    files = report.write_outputs(result, tmp_path / "out")
    assert any(p.endswith("delay_sweep.png") for p in files["plots"])


def test_clock_overrides_put_every_node_on_sim_time_unless_wall_clock():
    auto = clock_overrides(PacingConfig(), {"policy_node": {"model": "m"}, "sim_arm": {"task": "push"}})
    assert auto["policy_node"] == {"model": "m", "use_sim_time": True}
    assert auto["sim_arm"] == {"task": "push", "use_sim_time": True, "real_time_factor": 1.0}
    wall = clock_overrides(PacingConfig(real_time_factor=1.0, wall_clock=True), {"chunk_executor": {}})
    assert wall["chunk_executor"] == {"use_sim_time": False} and wall["sim_arm"]["use_sim_time"] is False
    with pytest.raises(ConfigError, match="wall-clock"):
        PacingConfig(wall_clock=True)  # the wall clock cannot be slowed down: it needs an explicit factor <= 1
    with pytest.raises(ConfigError, match="added_delay"):
        EvalConfig(model="m", added_delay=-0.1)


def test_camera_wiring_gives_each_model_camera_its_own_topic():
    cameras, topics = camera_wiring(("corner", "topview"))
    assert cameras == ["corner", "topview"]
    assert topics == ["/camera/corner/image_raw", "/camera/topview/image_raw"]
    with pytest.raises(ConfigError, match="wrist"):
        camera_wiring(("corner", "wrist"))  # a real robot's camera: the simulated arm has none of that name
    with pytest.raises(ConfigError):
        camera_wiring(())


def test_checkpoint_cameras_are_read_without_loading_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": {"vision": {"cameras": ["corner", "topview"]}}}))
    assert checkpoint_cameras(tmp_path) == ("corner", "topview")
    assert checkpoint_cameras("metaworld_mt10")  # the shipped model, by name


def test_delay_sweep_settings_from_the_command_line():
    from dream_vla_ros.commands.eval import parse_delays

    assert DELAY_SWEEP_MS == (0.0, 50.0, 100.0, 200.0, 300.0)
    assert parse_delays("0, 150,300") == (0.0, 150.0, 300.0)
    for bad in ("", "fast", "-50", "0,20000"):
        with pytest.raises(ConfigError, match="--delays"):
            parse_delays(bad)


class _Clock:
    """Stands in for the polled /clock subscription: each take gives the next simulated time (or None)."""

    def __init__(self, times):
        self.times = list(times)

    def take_newest(self):
        import types

        if not self.times:
            return None
        t = self.times.pop(0)
        stamp = types.SimpleNamespace(sec=int(t), nanosec=int(t % 1 * 1e9)) if t is not None else None
        return None if stamp is None else types.SimpleNamespace(clock=stamp)


def _waiting_session(events, clock_times):
    import queue
    import types

    session = RosSession.__new__(RosSession)  # the waiting logic only: no graph, no DDS
    session._events = queue.Queue()
    for event in events:
        session._events.put(event)
    session._clock = _Clock(clock_times)
    session._sim_time = None
    session.processes = types.SimpleNamespace(processes={})
    return session


def test_episode_end_wait_follows_the_simulated_clock():
    start = {"stamp": 10.0, "max_steps": 200}
    assert last_step_time(start) == pytest.approx(12.5) and last_step_time({"stamp": 1.0, "max_steps": 0}) is None
    # The event arrives: returned at once, other episodes' events skipped.
    end = {"event": "truncated", "episode": 3}
    session = _waiting_session([{"event": "success", "episode": 2}, end], [10.0])
    assert session.wait_episode_end(3, 0.2, 12.5) == end and session.wait_failure == ""
    # A slow simulation (the clock moves in every poll, never reaching the last step) outlives the timeout.
    session = _waiting_session([], [10.0 + 0.001 * i for i in range(40)] + [None] * 1000)
    started = time.monotonic()
    assert session.wait_episode_end(3, 0.3, 12.5) is None
    assert time.monotonic() - started > 0.3 + 0.5  # 40 polls of 50 ms, then 0.3 s of a clock standing still
    assert "stood still" in session.wait_failure
    # A clock past the last step with no event: the wait ends one timeout later, and says so.
    session = _waiting_session([], [13.0] + [None] * 1000)
    assert session.wait_episode_end(3, 0.2, 12.5) is None and "after the episode's last step" in session.wait_failure
    # On the wall clock (no /clock) the timeout is plain.
    session = _waiting_session([], [None] * 1000)
    assert session.wait_episode_end(3, 0.1, 12.5) is None and "within" in session.wait_failure


def test_graph_endpoints_come_from_the_node_configs():
    from dream_vla_ros.bringup import describe
    from dream_vla_ros.evaluation.graph import GraphEndpoints

    graph = GraphEndpoints.of(describe("sim_arm", overrides={"chunk_executor": {"controller_interface": "servo"}}))
    assert (graph.sim, graph.policy, graph.executor) == ("/sim_arm", "/policy_node", "/chunk_executor")
    assert not graph.recorder
    assert graph.trajectory_topic == "/arm_controller/joint_trajectory" and graph.goal_topic == "/goal"
    assert graph.joint_states_topic == "/joint_states" and graph.camera_topic.startswith("/camera/")
    assert graph.controller_interface == "servo" and graph.jog_topic == "/servo_node/delta_joint_cmds"
    assert graph.lifecycle == (("policy_node", "/policy_node"), ("chunk_executor", "/chunk_executor"))
    # In a namespace, relative names follow it (as the nodes resolve them); a node that waits for its
    # lifecycle transitions is not waited for.
    arm = GraphEndpoints.of(describe("sim_arm", namespace="left", overrides={
        "sim_arm": {"controller": "ctl"}, "policy_node": {"autostart": False, "goal_topic": "goal"}}))
    assert arm.sim == "/left/sim_arm" and arm.trajectory_topic == "/left/ctl/joint_trajectory"
    assert arm.goal_topic == "/left/goal" and arm.lifecycle == (("chunk_executor", "/left/chunk_executor"),)
    alone = GraphEndpoints.of(describe("sim_arm", only=("sim_arm",)))
    assert (alone.policy, alone.executor, alone.lifecycle, alone.goal_topic) == ("", "", (), "/goal")
    with pytest.raises(ConfigError, match="controller_interface"):
        GraphEndpoints.of(describe("sim_arm", overrides={"chunk_executor": {"controller_interface": "pigeon"}}))
