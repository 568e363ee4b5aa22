"""Recorded bags -> dataset: alignment, action derivation, refusal reasons, the report; plus the bag layer under it
(episode writer, salvage of a killed recorder's file) and the recorder core without ROS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("rosbags")

from dream_vla_ros.record.bag import EpisodeWriter, TopicInfo, message_definition, repair, typestore_for
from dream_vla_ros.record.episode import (
    INCOMPLETE_DIR,
    RECORDING_FORMAT,
    STATUS_COMPLETE,
    list_episodes,
    read_info,
)
from dream_vla_ros.train import bag_dataset as bd
from dream_vla_ros.train.bag_alignment import at_or_before, gaps, idle_prefix, missing_messages
from dream_vla_ros.train.bag_config import BuildConfig
from dream_vla_ros.train.bag_reading import resize_short_side
from dream_vla_ros.train.dataset import Dataset

TS = typestore_for("kilted")
T0 = 1_700_000_000 * 10**9
JOINTS = ("j0", "j1", "gripper")
CAMERA = "/camera/image_raw"
TRAJECTORY = "/arm_controller/joint_trajectory"
LEADER = "/leader/joint_states"
S = 10**9


def _time(ns: int):
    return TS.types["builtin_interfaces/msg/Time"](sec=ns // S, nanosec=ns % S)


def _header(ns: int):
    return TS.types["std_msgs/msg/Header"](stamp=_time(ns), frame_id="")


def image(ns: int, value: int, size: int = 8) -> bytes:
    msg = TS.types["sensor_msgs/msg/Image"](header=_header(ns), height=size, width=size, encoding="rgb8",
                                            is_bigendian=0, step=size * 3,
                                            data=np.full(size * size * 3, value % 256, dtype=np.uint8))
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def joint_state(ns: int, names, positions) -> bytes:
    msg = TS.types["sensor_msgs/msg/JointState"](
        header=_header(ns), name=list(names), position=np.asarray(positions, dtype=np.float64),
        velocity=np.zeros(len(names)), effort=np.zeros(0))
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def trajectory(names, rows, spacing: float) -> bytes:
    point = TS.types["trajectory_msgs/msg/JointTrajectoryPoint"]
    duration = TS.types["builtin_interfaces/msg/Duration"]
    points = [point(positions=np.asarray(row, dtype=np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
                    effort=np.zeros(0), time_from_start=duration(sec=int(t), nanosec=round((t % 1) * 1e9)))
              for row, t in zip(rows, spacing * np.arange(1, len(rows) + 1), strict=True)]
    msg = TS.types["trajectory_msgs/msg/JointTrajectory"](header=_header(0), joint_names=list(names), points=points)
    return bytes(TS.serialize_cdr(msg, "trajectory_msgs/msg/JointTrajectory"))


def string(text: str) -> bytes:
    return bytes(TS.serialize_cdr(TS.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))


def q_of(t: float) -> np.ndarray:
    """The measured joint positions at t seconds after T0."""
    return np.array([0.1 + 0.2 * t, -0.3 * t, 0.5 * np.sin(t)])


def write_episode(root: Path, name: str = "episode_000000", *, seconds: float = 2.0, camera_rate: float = 30.0,
                  joint_rate: float = 100.0, joint_names=JOINTS, joint_gap: tuple[float, float] | None = None,
                  command_at: float = 0.5, source: str = "trajectory", leader_names=JOINTS,
                  skip_topics: tuple[str, ...] = (), status: str = STATUS_COMPLETE, instruction: str = "pick the cube",
                  close: bool = True) -> Path:
    """A recorded episode as the recorder writes it: cameras at camera_rate (pixel value = frame index), joint
    states at joint_rate following q_of, one trajectory command at command_at s (from q_of(command_at) moving
    +0.5 rad/s on every joint for 1 s in 0.1 s points), or a leader at 50 Hz following 0.5 * q_of."""
    action = TRAJECTORY if source == "trajectory" else LEADER
    types = {CAMERA: "sensor_msgs/msg/Image", "/joint_states": "sensor_msgs/msg/JointState",
             action: "trajectory_msgs/msg/JointTrajectory" if source == "trajectory" else "sensor_msgs/msg/JointState",
             "/goal": "std_msgs/msg/String"}
    topics = [TopicInfo(t, ty, *message_definition(TS, ty)) for t, ty in types.items() if t not in skip_topics]
    info = {"format": RECORDING_FORMAT, "version": 1, "episode": name, "task": "pick", "instruction": instruction,
            "success": True, "start_ns": T0, "cameras": {"camera": CAMERA}, "joint_states": "/joint_states",
            "action": {"source": source, "topics": [action]}, "goal": "/goal",
            "topics": {t.topic: {"role": "x", "type": t.msgtype, "type_hash": t.type_hash} for t in topics}}
    writer = EpisodeWriter(root, name, topics, info)
    messages: list[tuple[int, str, bytes]] = [(T0, "/goal", string(instruction))]
    for i in range(int(seconds * camera_rate) + 1):
        ns = T0 + round(i * S / camera_rate)
        messages.append((ns + 3_000_000, CAMERA, image(ns, i)))
    for i in range(int(seconds * joint_rate) + 1):
        t = i / joint_rate
        if joint_gap and joint_gap[0] <= t < joint_gap[1]:
            continue
        ns = T0 + round(i * S / joint_rate)
        messages.append((ns + 1_000_000, "/joint_states", joint_state(ns, joint_names, q_of(t))))
    if source == "trajectory":
        start = q_of(command_at)
        rows = [start + 0.5 * 0.1 * (i + 1) for i in range(10)]
        messages.append((T0 + round(command_at * S), TRAJECTORY, trajectory(JOINTS, rows, 0.1)))
    else:
        for i in range(int(seconds * 50) + 1):
            ns = T0 + round(i * S / 50)
            messages.append((ns + 1_000_000, LEADER, joint_state(ns, leader_names, 0.5 * q_of(i / 50))))
    for ns, topic, raw in sorted(messages, key=lambda m: m[0]):
        if topic not in skip_topics:
            writer.write(topic, ns, raw)
    if not close:
        writer.flush()
        return writer.incomplete
    stop = T0 + round(seconds * S)
    return writer.close({**info, "status": status, "complete": status == STATUS_COMPLETE, "stop_ns": stop,
                         "duration_s": seconds})


def build(paths, out: Path, **changes) -> bd.BuildResult:
    config = BuildConfig(out=str(out), **{"min_frames": 5, **changes})
    return bd.build_dataset([str(p) for p in paths], config, log=lambda _: None)


# -- alignment and actions ------------------------------------------------------------------------------------
def test_frames_take_the_newest_image_and_joint_state_at_or_before_each_grid_time(tmp_path):
    bag = write_episode(tmp_path / "bags", command_at=0.0)
    result = build([bag], tmp_path / "ds", trim_idle=False)
    episode = Dataset(tmp_path / "ds").episode(0)
    dt = 1 / 40
    assert result.meta.dt == pytest.approx(dt) and episode.length == 81  # 0 .. 2.0 s inclusive
    for k in range(episode.length):
        t = k * dt
        frame = max(i for i in range(61) if i / 30 <= t + 1e-12)  # camera frames at i / 30 s
        sample = max(i for i in range(201) if i / 100 <= t + 1e-12)  # joint states at i / 100 s
        assert episode.images["camera"][k, 0, 0, 0] == frame
        np.testing.assert_allclose(episode.proprio[k], q_of(sample / 100), atol=1e-6)
    np.testing.assert_allclose(episode.timestamps, dt * np.arange(81))
    assert result.report["episodes"][0]["misaligned_frames"] == {"camera": 0}


def test_trajectory_actions_are_the_controller_reference_one_step_ahead(tmp_path):
    bag = write_episode(tmp_path / "bags", command_at=0.5)
    result = build([bag], tmp_path / "ds")
    entry = result.report["episodes"][0]
    episode = Dataset(tmp_path / "ds").episode(0)
    dt = 1 / 40
    # Before the command the controller holds the measured position at the first target time (the joint state
    # of 0.02 s); the command received at 0.5 s starts from the measured q(0.5). Frames 0..17 hold (their
    # targets lie before 0.5 s); trimming keeps the last of them.
    assert entry["trimmed_frames"] == 18
    for j in range(episode.length):
        s = (entry["trimmed_frames"] + j) * dt + dt  # the target's time
        progress = np.clip(s - 0.5, 0.0, 1.0)  # linear from q(0.5) at receipt, +0.5 rad/s for 1 s, then hold
        expected = q_of(0.5) + 0.5 * progress if s >= 0.5 - 1e-9 else q_of(0.02)
        np.testing.assert_allclose(episode.actions[j], expected, atol=1e-5, err_msg=f"frame {j}, t={s:.3f}")
    assert entry["action"] == {"source": "trajectory", "topics": [TRAJECTORY], "messages": 1, "rejected": {}}


def test_leader_actions_interpolate_the_leader_at_the_next_frame(tmp_path):
    bag = write_episode(tmp_path / "bags", source="leader", leader_names=("l0", "l1", "lg"))
    build([bag], tmp_path / "ds", trim_idle=False, leader_joint_names=("l0", "l1", "lg"))
    episode = Dataset(tmp_path / "ds").episode(0)
    dt = 1 / 40
    stamps = np.arange(101) / 50
    leader = np.stack([0.5 * q_of(t) for t in stamps])
    assert episode.length == 80  # the grid ends dt before the leader's last sample
    for k in range(episode.length):
        expected = [np.interp(k * dt + dt, stamps, leader[:, j]) for j in range(3)]
        np.testing.assert_allclose(episode.actions[k], expected, atol=1e-6)


def test_images_are_resized_keeping_the_aspect_ratio():
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    assert resize_short_side(frame, 24).shape == (24, 32, 3)
    assert resize_short_side(frame, 0) is frame


# -- refusals and the report ----------------------------------------------------------------------------------
def test_unusable_bags_are_refused_with_reasons_and_the_rest_is_built(tmp_path):
    root = tmp_path / "bags"
    write_episode(root, "episode_000000")
    write_episode(root, "episode_000001", skip_topics=(CAMERA,))
    write_episode(root, "episode_000002", joint_gap=(0.8, 1.4))
    write_episode(root, "episode_000003", joint_names=("a", "b", "c"))
    write_episode(root, "episode_000004", status="interrupted")
    write_episode(root, "episode_000005", close=False)  # a killed recorder: stays in incomplete/
    write_episode(root, "episode_000006", instruction="")
    result = build([root], tmp_path / "ds")
    refused = {Path(r["bag"]).name: " ".join(r["reasons"]) for r in result.report["refused"]}
    assert [Path(e["bag"]).name for e in result.report["episodes"]] == ["episode_000000"]
    assert f"missing topic {CAMERA}" in refused["episode_000001"]
    assert "gap of 0.6" in refused["episode_000002"] and "/joint_states" in refused["episode_000002"]
    assert "joint-name mismatch" in refused["episode_000003"] and "lacks ['gripper', 'j0', 'j1']" in \
        refused["episode_000003"]
    assert "status 'interrupted'" in refused["episode_000004"]
    assert "incomplete/" in refused["episode_000005"] and "record repair" in refused["episode_000005"]
    assert "no instruction" in refused["episode_000006"]
    assert len(Dataset(tmp_path / "ds")) == 1
    assert build([root / "episode_000004"], tmp_path / "ds2", allow_incomplete=True).meta is not None


def test_commands_for_other_joints_are_refused(tmp_path):
    bag = write_episode(tmp_path / "bags")
    result = build([bag], tmp_path / "ds", joint_names=("j0", "j1"))
    assert result.meta is None
    (refusal,) = result.report["refused"]
    assert any("commands ['gripper']" in r for r in refusal["reasons"]), refusal
    assert not (tmp_path / "ds").exists()  # nothing usable: nothing written


def test_report_lists_durations_rates_ranges_and_the_split(tmp_path):
    root = tmp_path / "bags"
    for i in range(4):
        write_episode(root, f"episode_{i:06d}", seconds=1.5 + 0.5 * i, command_at=0.0)
    result = build([root], tmp_path / "ds", trim_idle=False, val_fraction=0.25)
    report = json.loads((tmp_path / "ds" / bd.REPORT_JSON).read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["totals"]["episodes"] == 4 and report["totals"]["refused"] == 0
    assert [e["duration_s"] for e in report["episodes"]] == [1.5, 2.0, 2.5, 3.0]
    streams = report["episodes"][0]["streams"]
    assert streams[CAMERA]["rate_hz"] == pytest.approx(30, abs=0.5)
    assert streams["/joint_states"]["rate_hz"] == pytest.approx(100, abs=1)
    assert streams["/joint_states"]["missing"] == 0
    data = np.concatenate([Dataset(tmp_path / "ds").episode(i).proprio for i in range(4)])
    for i, joint in enumerate(JOINTS):
        lo, hi = report["joint_ranges"]["proprio"][joint]
        assert lo == pytest.approx(data[:, i].min(), abs=1e-4) and hi == pytest.approx(data[:, i].max(), abs=1e-4)
    assert sorted(report["split"]["train"] + report["split"]["validation"]) == [0, 1, 2, 3]
    assert len(report["split"]["validation"]) == 1
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["source"]["split"] == report["split"] and meta["phrasings"]["pick"]["train"] == ["pick the cube"]
    assert "| joint |" in (tmp_path / "ds" / bd.REPORT_MD).read_text()
    assert report["throughput"]["frames_per_s"] > 0


# -- pure helpers (properties) --------------------------------------------------------------------------------
@given(st.lists(st.floats(0, 100), min_size=1, max_size=40), st.lists(st.floats(-5, 105), min_size=1, max_size=20))
def test_at_or_before_is_the_last_stamp_not_after(stamps, times):
    stamps = np.sort(np.asarray(stamps))
    for t, i in zip(times, at_or_before(stamps, np.asarray(times)), strict=True):
        expected = max((k for k, s in enumerate(stamps) if s <= t), default=-1)
        assert stamps[i] == stamps[expected] if expected >= 0 else i == -1


@given(st.integers(20, 200), st.sets(st.integers(1, 198), max_size=15))
def test_missing_messages_counts_dropped_samples_of_a_periodic_stream(count, dropped):
    dropped = {d for d in dropped if d < count - 1}
    stamps = np.array([i * 0.01 for i in range(count) if i not in dropped])
    if len(dropped) * 3 > count:
        return  # the median interval is no longer the period
    assert missing_messages(stamps) == len(dropped)


@given(st.lists(st.floats(0, 10), min_size=2, max_size=50), st.floats(0.05, 2.0))
def test_gaps_bound_every_interval_inside_the_span(stamps, max_gap):
    stamps = np.sort(np.asarray(stamps))
    start, end = float(stamps[0]), float(stamps[-1])
    found = gaps(stamps, start, end, max_gap)
    assert all(length > max_gap for _, length in found)
    assert len(found) == int(np.sum(np.diff(stamps) > max_gap))


def test_gap_counter_tells_losses_from_late_bursts():
    from dream_vla_ros.record.streams import GapCounter

    def count(stamps) -> int:
        counter = GapCounter()
        for stamp in stamps:
            counter.observe(stamp)
        return counter.missing

    regular = [2.0 * i for i in range(300)]
    assert count(regular) == 0
    assert count([t for i, t in enumerate(regular) if not 100 <= i < 105]) == 5  # five lost
    # Published late in a burst: messages 50..53 all stamped just after 106 ms, then on schedule again.
    late = [*regular[:50], 106.0, 106.05, 106.1, 106.15, *regular[54:]]
    assert count(late) == 0


def test_idle_prefix():
    actions = np.zeros((6, 2))
    assert idle_prefix(actions, 1e-3) is None
    actions[4:] = 0.1
    assert idle_prefix(actions, 1e-3) == 3
    actions[0] = 1.0
    assert idle_prefix(actions, 1e-3) == 0


# -- the bag layer: layout, salvage ---------------------------------------------------------------------------
def test_a_kept_episode_is_a_readable_bag_with_its_record(tmp_path):
    from rosbags.rosbag2 import Reader

    bag = write_episode(tmp_path, "episode_000003")
    assert bag == tmp_path / "episode_000003" and not (tmp_path / INCOMPLETE_DIR / "episode_000003").exists()
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert reader.storage.metadata.custom["instruction"] == "pick the cube"
    assert counts[CAMERA] == 61 and counts["/joint_states"] == 201 and counts[TRAJECTORY] == 1
    assert read_info(bag)["status"] == STATUS_COMPLETE
    (tmp_path / "episode_000003" / "episode.json").unlink()  # the record also lives in metadata.yaml
    assert read_info(bag)["instruction"] == "pick the cube"


def test_repair_salvages_what_a_killed_recorder_flushed(tmp_path):
    from rosbags.rosbag2 import Reader

    incomplete = write_episode(tmp_path, "episode_000001", close=False)
    assert read_info(incomplete)["status"] == "recording"
    listing = list_episodes(tmp_path)
    assert [(e.path.name, e.readable) for e in listing] == [("episode_000001", False)]
    mcap = incomplete / "episode_000001.mcap"
    with mcap.open("ab") as handle:  # a record torn by the kill
        handle.write(b"\x05" + (500).to_bytes(8, "little") + b"partial")
    result = repair(incomplete, TS)
    assert result.action == "salvaged" and result.truncated
    assert result.path == tmp_path / "episode_000001" and not incomplete.exists()
    with Reader(result.path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts[CAMERA] == 61 and counts["/joint_states"] == 201 and result.messages == 61 + 201 + 2
    info = read_info(result.path)
    assert info["status"] == "salvaged" and info["complete"] is False and info["instruction"] == "pick the cube"
    refused = build([tmp_path], tmp_path / "ds").report["refused"]
    assert "status 'salvaged'" in refused[0]["reasons"][0]
    assert build([tmp_path], tmp_path / "ds2", allow_incomplete=True).meta is not None


def test_repair_of_an_empty_file_removes_it(tmp_path):
    incomplete = tmp_path / INCOMPLETE_DIR / "episode_000000"
    incomplete.mkdir(parents=True)
    (incomplete / "episode_000000.mcap").write_bytes(b"\x89MCAP0\r\n")
    assert repair(incomplete, TS).action == "empty" and not incomplete.exists()


# -- the recorder core without ROS ----------------------------------------------------------------------------
def test_recorder_keeps_discards_and_interrupts_episodes(tmp_path):
    from dream_vla_ros.record.config import RecorderConfig
    from dream_vla_ros.record.episode import RecorderError
    from dream_vla_ros.record.recorder import Recorder

    config = RecorderConfig(out_dir=str(tmp_path), flush_period=0.05)
    recorder = Recorder(config, TS, log=lambda _: None)
    for topic, role in config.roles().items():
        recorder.add_topic(topic, config.message_type(topic), role)
    with pytest.raises(RecorderError, match="no instruction"):
        recorder.start()
    recorder.on_message("/goal", string("open the drawer"), T0)
    with pytest.raises(RecorderError, match="no publisher on /camera/image_raw"):
        recorder.start(publishers={})
    started = recorder.start()
    assert started["episode"] == "episode_000000" and started["instruction"] == "open the drawer"
    for i in range(30):
        recorder.on_message(CAMERA, image(T0 + i * S // 30, i), T0 + i * S // 30)
        recorder.on_message("/joint_states", joint_state(T0 + i * S // 30, JOINTS, q_of(i / 30)), T0 + i * S // 30)
    recorder.on_message("/joint_states", joint_state(T0 + 2 * S, JOINTS, q_of(2.0)), T0 + 2 * S)  # a 1 s gap
    with pytest.raises(RecorderError, match="already recording"):
        recorder.start()
    kept = recorder.stop()
    assert kept["status"] == "complete" and Path(kept["path"]).is_dir()
    assert kept["counts"][CAMERA]["written"] == 30 and kept["counts"]["/goal"]["written"] == 1
    assert kept["counts"]["/joint_states"]["missing"] == 30  # 29/30 s -> 2 s: estimated from the header stamps
    assert any("no messages on /arm_controller/joint_trajectory" in w for w in kept["warnings"])
    recorder.start()
    assert recorder.stop(keep=False)["status"] == "discarded"
    assert not (tmp_path / "episode_000001").exists() and not (tmp_path / INCOMPLETE_DIR / "episode_000001").exists()
    recorder.start()
    recorder.on_message(CAMERA, image(T0, 0), T0)
    closed = recorder.close()
    assert closed["status"] == "interrupted" and read_info(closed["path"])["status"] == "interrupted"
    with pytest.raises(RecorderError, match="not recording"):
        recorder.stop()
    snapshot = recorder.snapshot()
    assert snapshot["episodes kept"] == 2 and snapshot["episodes discarded"] == 1
    shutil.rmtree(tmp_path)
