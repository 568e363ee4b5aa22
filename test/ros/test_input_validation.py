"""The input-validation contract over real DDS (docs/input_validation.md): the bad inputs that moved the arm
or went unreported before it, and their neighbours.

Same probe and checks as ``test_faults.py`` (cause on /diagnostics and logged once, no chunk from bad data,
the executor holding, limits kept, processes alive, control resuming), plus **no motion**: every controller
window for ``STILL`` seconds after the hold is at rest at one position. The rig is stricter than the fault
table's: age limits of 0.2 s (so a 3 Hz stream crosses them), a model that records a joint envelope, and a
small limit on compressed bytes.
"""

from __future__ import annotations

import os
import signal
import struct
import zlib

import numpy as np
import pytest
from node_rig import HOME, ROBOT_JOINTS, Rig, executor_params, make_model, policy_params, start_node, write_params
from test_faults import BOTH, GRACE, Case, check_case, compressed, encoded, restore, running, set_image, set_joints

from dream_vla_ros.process_stats import sample

pytestmark = pytest.mark.ros

GOAL = "pick up the block"
STILL = 1.5  # s of windows checked for motion after the hold
AGE = 0.2  # s: max image / joint state age of both nodes in this rig
ENVELOPE = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))  # the model's; the policy's joint_fault_margin is 1.0
MAX_COMPRESSED = 200_000


# -- bad inputs ----------------------------------------------------------------------------------------------
def bad_stamp(producer, nanosec: int = 1_500_000_000, sec_offset: int = 0):
    """``producer`` with an invalid stamp: ``nanosec`` >= 1e9 (in the current second), or a negative sec."""
    from builtin_interfaces.msg import Time

    return lambda stamp: producer(Time(sec=stamp.sec + sec_offset, nanosec=nanosec))


def every(producer, ticks: int):
    """``producer`` on every ``ticks``-th feed tick only (the feed runs at 50 Hz), with fresh stamps."""
    count = [0]

    def make(stamp):
        count[0] += 1
        return producer(stamp) if count[0] % ticks == 0 else None

    return make


def png_header(width: int, height: int, bits: int = 8) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds one compressed row of zeros (a decompression bomb
    when the size is large: the decoder would allocate it all)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bits, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(width * 3 + 1)))
            + chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is rewritten to declare ``width`` x ``height``."""
    data = bytearray(encoded(".jpg"))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def stop_process(rig: Rig, process: str, sig: int) -> None:
    os.killpg(rig.ros.processes.processes[process].popen.pid, sig)


def starve_then_chunks(coverage: float):
    """Freeze the policy process (the executor starves and brakes to a hold), then publish a chunk every 0.2 s
    (until the case restores) whose points reach only ``coverage`` s past now on arrival (8 points, 0.05 s
    apart, towards HOME + 0.3 rad)."""

    def publish(rig: Rig) -> None:
        rig.publish_chunk([[h + 0.3 for h in HOME]] * 8, t0=rig.now() - 8 * 0.05 + coverage, dt=0.05)

    def inject(rig: Rig) -> None:
        stop_process(rig, "policy", signal.SIGSTOP)
        rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), what="hold after the policy froze")
        rig.chunk_timer = rig.node.create_timer(0.2, lambda: publish(rig))

    return inject


def continue_policy(rig: Rig) -> None:
    rig.node.destroy_timer(rig.__dict__.pop("chunk_timer"))
    stop_process(rig, "policy", signal.SIGCONT)
    restore(rig)


def goal_flood(rig: Rig) -> None:
    rig.flood_mark = len(rig.log_lines("policy"))
    for i in range(300):
        rig.set_goal("" if i % 3 == 2 else f"goal number {i}")
        rig.wait_until(rig.now() + 0.01)
    rig.set_goal("")


def bad_stamp_chunk(rig: Rig) -> None:
    """Pause the policy (the executor holds), then publish chunks whose stamp has nanosec >= 1e9."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from dream_vla_ros.nodes.conversions import seconds_to_duration

    assert rig.call_trigger("/policy_node/stop").success
    rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), what="hold after the policy stopped")
    rig.accepted_before = rig.value("chunk_executor", "chunks_accepted")
    for _ in range(3):
        msg = JointTrajectory(joint_names=list(ROBOT_JOINTS))
        msg.header.stamp = rig.node.get_clock().now().to_msg()
        msg.header.stamp.nanosec = 1_200_000_000
        msg.points = [JointTrajectoryPoint(positions=[0.4, 0.0, 0.0], time_from_start=seconds_to_duration(0.05 * i))
                      for i in range(1, 5)]
        rig.chunk_pub.publish(msg)
        rig.wait_until(rig.now() + 0.05)


def resume_policy(rig: Rig) -> None:
    assert rig.call_trigger("/policy_node/resume").success


def far(positions):
    return set_joints(lambda r: r.good_joints(positions=positions))


# -- the table -----------------------------------------------------------------------------------------------
# kind: "hold" (no chunk from the bad data, no motion), "still" (no motion; chunks may still come, the
# executor rejects them), "bad_chunk" (the executor accepts none), "accepted" (control continues).
CASES = [
    # 1. joint positions outside the limits (+ margin): a sensor fault, for both nodes
    Case("joint positions +100 rad", far((100.0, 100.0, 100.0)),
         dict.fromkeys(BOTH, "joint 'shoulder' at 100.000 is outside")),
    Case("one joint -100 rad", far((HOME[0], HOME[1], -100.0)), dict.fromkeys(BOTH, "joint 'finger' at -100.000")),
    Case("joint outside the model's envelope + margin, inside the limits", far((2.5, HOME[1], HOME[2])),
         {"policy": "joint 'shoulder' at 2.500 is outside [-2.000, 2.000]"}),
    Case("joint within the envelope margin", far((1.5, HOME[1], HOME[2])), kind="accepted"),
    # 2. header stamps that are not a valid builtin_interfaces/Time
    Case("joint state stamp nanosec >= 1e9", set_joints(lambda r: bad_stamp(r.good_joints())),
         dict.fromkeys(BOTH, "invalid header stamp (nanosec 1500000000")),
    Case("joint state stamp with a negative sec", set_joints(lambda r: bad_stamp(r.good_joints(), 0, -2 ** 31)),
         dict.fromkeys(BOTH, "invalid header stamp (negative sec")),
    Case("image stamp nanosec >= 1e9", set_image("main", lambda r: bad_stamp(r.good_image("main"), 1_000_000_000)),
         {"policy": "camera 'main': invalid header stamp"}),
    Case("compressed frame stamp nanosec >= 1e9",
         set_image("wrist", lambda r: bad_stamp(r.good_image("wrist"), 4_000_000_000)),
         {"policy": "camera 'wrist': invalid header stamp"}),
    Case("chunk stamp nanosec >= 1e9", bad_stamp_chunk, {"executor": "chunk: invalid header stamp"},
         kind="bad_chunk", restore=resume_policy, repeats=1),
    # 3. compressed frames bounded before decoding
    Case("PNG declaring 8000x8000 (decompression bomb)",
         set_image("wrist", lambda r: compressed(png_header(8000, 8000))),
         {"policy": "8000x8000 = 64000000 pixels (limit"}),
    Case("JPEG declaring 20000x20000", set_image("wrist", lambda r: compressed(jpeg_declaring(20000, 20000))),
         {"policy": "20000x20000 = 400000000 pixels"}),
    Case("compressed frame over the byte limit",
         set_image("wrist", lambda r: compressed(png_header(64, 48) + bytes(MAX_COMPRESSED))),
         {"policy": f"bytes (limit {MAX_COMPRESSED})"}),
    Case("16-bit PNG", set_image("wrist", lambda r: compressed(png_header(64, 48, bits=16))),
         {"policy": "16-bit samples, expected 8-bit"}),
    Case("compressed frame neither PNG nor JPEG", set_image("wrist", lambda r: compressed(b"RIFF\x00\x00WEBPVP8 ")),
         {"policy": "not a PNG or JPEG stream"}),
    Case("PNG whose pixels do not decode", set_image("wrist", lambda r: compressed(png_header(64, 48)[:40])),
         {"policy": "cannot decode compressed image"}),
    # 4. slow streams with fresh stamps: hysteresis holds them still
    Case("joint states at 3 Hz", set_joints(lambda r: every(r.good_joints(), 17)),
         dict.fromkeys(BOTH, "joint state is")),
    Case("camera frames at 3 Hz", set_image("main", lambda r: every(r.good_image("main"), 17)),
         {"policy": "camera 'main' frame is"}),
    Case("joint states at 10 Hz (inside the age limit)", set_joints(lambda r: every(r.good_joints(), 5)),
         kind="accepted"),
    Case("chunks that each cover 0.03 s after a starvation", starve_then_chunks(0.03),
         {"executor": "no chunk arrived in time"}, kind="still", restore=continue_policy, repeats=1),
    Case("chunks that cover 0.3 s after a starvation", starve_then_chunks(0.3), kind="accepted",
         restore=continue_policy),
]


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    pytest.importorskip("rclpy")
    from ros_harness import RosTestBed

    from dream_vla_ros.policy.config import JointEnvelope

    folder = tmp_path_factory.mktemp("validation")
    model = make_model(folder / "model", envelope=JointEnvelope(*ENVELOPE))
    policy = policy_params(model, max_image_age=AGE, max_joint_state_age=AGE, max_goal_bytes=4096,
                           max_compressed_bytes=MAX_COMPRESSED, input_recovery_time=0.5, joint_fault_margin=1.0)
    executor = executor_params(max_joint_state_age=AGE, input_recovery_time=0.5)
    params = write_params(folder / "params.yaml", policy_node=policy, chunk_executor=executor)
    bed = RosTestBed()
    try:
        probe = Rig(bed)
        probe.set_goal(GOAL)
        start_node(bed, "policy", "dream_vla_ros.nodes.policy_node", params)
        start_node(bed, "executor", "dream_vla_ros.nodes.executor_node", params)
        yield probe
    finally:
        bed.close()


def assert_still(rig: Rig, start: float, end: float) -> None:
    """Every window received in [start, end] is at rest (zero velocity) at one position per controller, or at
    the measured one (HOME: a restart from the measured state after a hold, which a load spike can cause)."""
    windows = [w for controller in rig.windows for t, w in rig.windows[controller] if start <= t <= end]
    assert windows, f"no windows between {start:.2f} and {end:.2f}\n{rig.report()}"
    home = dict(zip(ROBOT_JOINTS, HOME, strict=True))
    held: dict[tuple[str, ...], set] = {}
    for w in windows:
        assert all(not any(p.velocities) for p in w.points), f"a moving window during the hold\n{rig.report()}"
        names = tuple(w.joint_names)
        if not np.allclose(w.points[0].positions, [home[n] for n in names], atol=1e-9):
            held.setdefault(names, set()).add(tuple(np.round(w.points[0].positions, 9)))
    moved = {names: positions for names, positions in held.items() if len(positions) > 1}
    assert not moved, f"the held position changed: {moved}"


def still_after_hold(rig: Rig, t_block: float) -> None:
    """No motion: every window for STILL seconds from the hold on is at rest at one position."""
    t_still = max(rig.now(), t_block + GRACE)
    rig.wait_until(t_still + STILL)
    assert_still(rig, t_still, rig.now())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(rig: Rig, case: Case):
    try:
        check_case(rig, case, on_hold=still_after_hold)
    except BaseException:
        recover(rig)  # the next case (or a rerun) starts from good inputs, not from this one's fault
        raise


def recover(rig: Rig) -> None:
    """Good inputs, the goal, and the policy running again, whatever a failed case left behind."""
    timer = rig.__dict__.pop("chunk_timer", None)
    if timer is not None:
        rig.node.destroy_timer(timer)
    if rig.alive("policy"):
        stop_process(rig, "policy", signal.SIGCONT)
        rig.call_trigger("/policy_node/resume")
    restore(rig)


def test_decompression_bomb_costs_no_memory(rig: Rig):
    """A 69 kB PNG that would decode to 8000x8000 x 3 bytes (192 MB) leaves the policy's memory as it was."""
    running(rig, rig.now() - 0.5, timeout=40.0)
    pid = rig.ros.processes.processes["policy"].popen.pid
    before = sample(pid).rss_kb
    rig.image_producers["wrist"] = compressed(png_header(8000, 8000))
    t_inject = rig.now()
    rig.wait(lambda: rig.cause_status("policy_node", "8000x8000", after=t_inject), what="the bomb rejected")
    rig.wait_until(rig.now() + 1.0)
    after = sample(pid).rss_kb
    assert after - before < 50_000, f"policy RSS rose from {before} to {after} kB"
    restore(rig)
    running(rig, rig.now())


def test_decode_error_clears_without_inference(rig: Rig):
    """A compressed-decode error leaves /diagnostics as soon as good frames return, even while the policy is
    stopped (no inference runs that could clear it)."""
    running(rig, rig.now() - 0.5, timeout=40.0)
    assert rig.call_trigger("/policy_node/stop").success
    t_inject = rig.now()
    rig.image_producers["wrist"] = compressed(png_header(64, 48)[:40])  # a good header, pixels cut short
    rig.wait(lambda: rig.cause_status("policy_node", "cannot decode compressed image", after=t_inject),
             what="the decode error on /diagnostics")
    t_good = rig.now()
    rig.restore_producers()
    rig.wait(lambda: (s := rig.status.get("policy_node: camera wrist")) is not None and s.level == 0
             and s.received > t_good, what="the decode error cleared")
    assert rig.call_trigger("/policy_node/resume").success
    running(rig, rig.now())


def test_goal_flood_logs_throttled(rig: Rig):
    """300 goal changes (every third one empty) in about 3 s: the policy stays up, writes a few dozen log
    lines at most, holds on the final empty goal and runs again on a new one."""
    rig.set_goal(GOAL)  # a rerun starts after the flood's final empty goal
    running(rig, rig.now() - 0.5, timeout=40.0)
    goal_flood(rig)
    rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), what="hold on the final empty goal")
    rig.wait_until(rig.now() + 0.5)
    lines = rig.log_lines("policy")[rig.flood_mark:]
    assert len(lines) <= 40, f"{len(lines)} log lines for 300 goal changes:\n" + "\n".join(lines[:60])
    assert rig.alive("policy")
    t_goal = rig.now()
    rig.set_goal(GOAL)
    running(rig, t_goal)
