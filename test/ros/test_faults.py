"""Bad input and faults, each over real DDS: the one table of cases (``CASES``) and the checks every case gets.

One rig for the whole table: the policy node (with a torch engine whose failures the goal can trigger) and
the chunk executor, each in its own process; the probe plays two cameras (Image + CompressedImage), the joint
states, the goal and two controllers. Each case starts from a running loop, injects its fault and checks:

- the cause shows on ``/diagnostics`` (WARN/ERROR) of every node named in the case, and appears exactly once in
  that node's log although the bad input keeps coming (``repeats``);
- no motion is derived from the bad data: the policy publishes no chunk once the cause is known (after a
  grace period for an inference already running) and the executor brakes to a hold (zero-velocity windows),
  or, for bad chunks, the executor accepts none and keeps holding;
- every window ever sent stays within the joint limits and finite (checked on every message);
- the processes stay alive, and control resumes (fresh chunks, executor running) when good inputs return.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from node_rig import (
    HEIGHT,
    HOME,
    ROBOT_JOINTS,
    WIDTH,
    Rig,
    executor_params,
    make_model,
    policy_params,
    start_node,
    write_params,
)

pytestmark = pytest.mark.ros

GOAL = "pick up the block"
GRACE = 0.3  # s: an inference already running when the cause appeared may still publish
NODES = {"policy": "policy_node", "executor": "chunk_executor"}
BOTH = ("policy", "executor")


# -- bad inputs ----------------------------------------------------------------------------------------------
def image(width=WIDTH, height=HEIGHT, encoding="rgb8", channels=3, step=None, size=None):
    from sensor_msgs.msg import Image

    def make(stamp):
        row = step if step is not None else width * channels
        n = size if size is not None else row * height
        msg = Image(width=width, height=height, encoding=encoding, step=row, data=bytes(n))
        msg.header.stamp = stamp
        return msg

    return make


def compressed(data: bytes):
    from sensor_msgs.msg import CompressedImage

    def make(stamp):
        msg = CompressedImage(format="png", data=data)
        msg.header.stamp = stamp
        return msg

    return make


def encoded(extension: str, width=WIDTH, height=HEIGHT) -> bytes:
    import cv2

    ok, data = cv2.imencode(extension, np.full((height, width, 3), 90, np.uint8))
    assert ok
    return data.tobytes()


def shifted(rig: Rig, producer, offset: float):
    """``producer`` with its stamp moved by ``offset`` seconds (0 offset + zero=True: a zero stamp)."""
    from dream_vla_ros.nodes.conversions import seconds_to_stamp

    def make(stamp):
        t = stamp.sec + stamp.nanosec * 1e-9
        return producer(seconds_to_stamp(t + offset) if offset else seconds_to_stamp(0.0))

    return make


def set_image(camera: str, make: Callable[[Rig], Callable]):
    def inject(rig: Rig) -> None:
        rig.image_producers[camera] = make(rig)

    return inject


def set_images(make: Callable[[Rig, str], Callable | None]):
    def inject(rig: Rig) -> None:
        for camera in list(rig.image_producers):
            rig.image_producers[camera] = make(rig, camera)

    return inject


def set_joints(make: Callable[[Rig], Callable | None]):
    def inject(rig: Rig) -> None:
        rig.joint_producer = make(rig)

    return inject


def set_goal(text: str):
    return lambda rig: rig.set_goal(text)


def reconfigure_with(**parameters):
    def inject(rig: Rig) -> None:
        assert rig.lifecycle("deactivate") and rig.lifecycle("cleanup")
        rig.set_parameters(**parameters)
        assert not rig.lifecycle("configure"), "configure must fail"
        assert rig.lifecycle_state() == "unconfigured"

    return inject


def bad_chunk(**chunk):
    """Pause the policy (the executor holds), then publish a bad chunk three times."""

    def inject(rig: Rig) -> None:
        assert rig.call_trigger("/policy_node/stop").success
        rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), what="hold after the policy stopped")
        rig.accepted_before = rig.value("chunk_executor", "chunks_accepted")
        rig.wait_until(rig.now() + 0.3)  # observations from now on are newer than the stop
        for _ in range(3):
            positions = chunk.get("positions", [[0.1, -0.2, 0.0]] * 4)
            t0 = rig.now() + chunk.get("t0_offset", 0.0)
            rig.publish_chunk(positions, names=chunk.get("names", ROBOT_JOINTS), t0=t0, times=chunk.get("times"),
                              dt=chunk.get("dt", 0.05))
            rig.wait_until(rig.now() + 0.05)

    return inject


def unsubscribe(controller: str):
    return lambda rig: rig.unsubscribe_controller(controller)


def kill_policy(rig: Rig) -> None:
    rig.kill("policy")


# -- restoring -----------------------------------------------------------------------------------------------
def restore(rig: Rig) -> None:
    rig.restore_producers()
    rig.set_goal(GOAL)


def restore_model(rig: Rig) -> None:
    rig.set_parameters(model=str(rig.model), backend=rig.backend, camera_topics=rig.camera_topics)
    assert rig.lifecycle("configure") and rig.lifecycle("activate")


def resume_policy(rig: Rig) -> None:
    assert rig.call_trigger("/policy_node/resume").success


def resubscribe(controller: str):
    return lambda rig: rig.subscribe_controller(controller)


def restart_policy(rig: Rig) -> None:
    rig.start_policy()


# -- the table -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """name: what goes wrong. causes: process -> text of its cause (on /diagnostics and once in its log).
    kind: "hold" (no chunk from the bad data, the executor holds), "bad_chunk" (the executor rejects the
    chunks and keeps holding), "still" (the executor holds; chunks may still come) or "accepted" (a valid
    variant: control continues). repeats: how often the
    bad input must have been seen before the log is checked (1 for one-shot faults)."""

    name: str
    inject: Callable[[Rig], None]
    causes: dict[str, str] = field(default_factory=dict)
    kind: str = "hold"
    restore: Callable[[Rig], None] = restore
    repeats: int = 3


CASES = [
    # camera frames (sensor_msgs/Image on "main", CompressedImage on "wrist")
    Case("image encoding rgba8", set_image("main", lambda r: image(encoding="rgba8", channels=4)),
         {"policy": "unsupported encoding 'rgba8'"}),
    Case("image encoding 16UC1 (depth)", set_image("main", lambda r: image(encoding="16UC1", channels=2)),
         {"policy": "unsupported encoding '16UC1'"}),
    Case("image of the wrong size", set_image("main", lambda r: image(width=32, height=24)),
         {"policy": "size 32x24, expected 64x48"}),
    Case("image data truncated", set_image("main", lambda r: image(size=WIDTH * HEIGHT * 3 // 2)),
         {"policy": "data truncated"}),
    Case("image data oversized", set_image("main", lambda r: image(size=WIDTH * HEIGHT * 3 + 7)),
         {"policy": "data oversized"}),
    Case("image step shorter than a row", set_image("main", lambda r: image(step=WIDTH * 3 - 1)),
         {"policy": "is smaller than width * channels"}),
    Case("image of zero size", set_image("main", lambda r: image(width=0, height=0)),
         {"policy": "invalid size 0x0"}),
    Case("compressed frame undecodable", set_image("wrist", lambda r: compressed(b"\x89PNG" + bytes(64))),
         {"policy": "cannot decode compressed image"}),
    Case("compressed frame empty", set_image("wrist", lambda r: compressed(b"")),
         {"policy": "compressed image without data"}),
    Case("compressed frame of the wrong size", set_image("wrist", lambda r: compressed(encoded(".png", 32, 24))),
         {"policy": "camera 'wrist': size 32x24"}),
    Case("image stamps stale", set_image("main", lambda r: shifted(r, r.good_image("main"), -3.0)),
         {"policy": "camera 'main' frame is"}),
    Case("image stamps in the future", set_image("main", lambda r: shifted(r, r.good_image("main"), 3.0)),
         {"policy": "camera 'main' frame stamp is"}),
    Case("image stamps zero", set_image("main", lambda r: shifted(r, r.good_image("main"), 0.0)),
         {"policy": "camera 'main' frame has no header stamp"}),
    Case("images stop", set_images(lambda r, camera: None), {"policy": "camera 'main' frame is"}),
    Case("frames out of sync with the joint states",
         set_images(lambda r, camera: shifted(r, r.good_image(camera), -0.5)), {"policy": "out of sync"}),
    Case("bgr8 frames", set_image("main", lambda r: r.good_image("main", "bgr8")), kind="accepted"),
    Case("mono8 frames", set_image("main", lambda r: r.good_image("main", "mono8")), kind="accepted"),
    Case("JPEG compressed frames", set_image("wrist", lambda r: compressed(encoded(".jpg"))), kind="accepted"),
    # joint states (both nodes read them)
    Case("joint state with NaN", set_joints(lambda r: r.good_joints(positions=(0.1, float("nan"), 0.0))),
         dict.fromkeys(BOTH, "non-finite position for joint 'elbow'")),
    Case("joint state with inf", set_joints(lambda r: r.good_joints(positions=(float("inf"), 0.0, 0.0))),
         dict.fromkeys(BOTH, "non-finite position for joint 'shoulder'")),
    Case("joint missing", set_joints(lambda r: r.good_joints(ROBOT_JOINTS[:2], HOME[:2])),
         dict.fromkeys(BOTH, "missing joint 'finger'")),
    Case("unknown joint instead of a known one",
         set_joints(lambda r: r.good_joints(("shoulder", "elbow", "claw"), HOME)),
         dict.fromkeys(BOTH, "missing joint 'finger'")),
    Case("extra unknown joint (strict policy)",
         set_joints(lambda r: r.good_joints((*ROBOT_JOINTS, "wheel"), (*HOME, 1.0))),
         {"policy": "unknown joint 'wheel'"}),
    Case("duplicate joint names", set_joints(lambda r: r.good_joints((*ROBOT_JOINTS, "elbow"), (*HOME, 0.0))),
         dict.fromkeys(BOTH, "duplicate joint name 'elbow'")),
    Case("fewer positions than names", set_joints(lambda r: r.good_joints(ROBOT_JOINTS, HOME[:2])),
         dict.fromkeys(BOTH, "3 names but 2 positions")),
    Case("joints reordered", set_joints(lambda r: r.good_joints(ROBOT_JOINTS[::-1], HOME[::-1])), kind="accepted"),
    Case("joint state stamps stale", set_joints(lambda r: shifted(r, r.good_joints(), -3.0)),
         dict.fromkeys(BOTH, "joint state is")),
    Case("joint state stamps in the future", set_joints(lambda r: shifted(r, r.good_joints(), 3.0)),
         dict.fromkeys(BOTH, "joint state stamp is")),
    Case("joint states stop", set_joints(lambda r: None), dict.fromkeys(BOTH, "joint state is")),
    # the language goal
    Case("empty goal", set_goal(""), {"policy": "empty goal"}, repeats=1),
    Case("whitespace goal", set_goal("  \t "), {"policy": "empty goal"}, repeats=1),
    Case("1 MB goal", set_goal("x" * (1 << 20)), {"policy": "goal: too long"}, repeats=1),
    Case("goal not valid UTF-8", lambda r: r.publish_raw_goal(b"open \xff\xfe the drawer"),
         {"policy": "goal: not valid UTF-8"}, repeats=1),
    Case("goal with control characters", set_goal("open\x07\x1b[2J the drawer"),
         {"policy": "goal: contains control characters"}, repeats=1),
    # the engine and the model
    Case("engine raises", set_goal("raise now"), {"policy": "injected engine failure"}),
    Case("engine returns NaN", set_goal("nan please"), {"policy": "NaN or infinite positions"}),
    Case("engine returns a chunk of the wrong shape", set_goal("shape please"), {"policy": "chunk of shape"}),
    Case("corrupt checkpoint", lambda r: reconfigure_with(model=str(r.corrupt))(r),
         {"policy": "sha256 mismatch"}, restore=restore_model, repeats=1),
    Case("unknown backend", reconfigure_with(backend="tensorflow"), {"policy": "unknown backend 'tensorflow'"},
         restore=restore_model, repeats=1),
    Case("cameras do not match the model", reconfigure_with(camera_topics=["/cam/main/image_raw"]),
         {"policy": "1 topic(s) for the model's 2 camera(s)"}, restore=restore_model, repeats=1),
    # chunks reaching the executor
    Case("chunk with NaN", bad_chunk(positions=[[0.1, float("nan"), 0.0]] * 4),
         {"executor": "contains NaN or infinite values"}, kind="bad_chunk", restore=resume_policy, repeats=1),
    Case("chunk with an unknown joint", bad_chunk(names=("shoulder", "elbow", "claw")),
         {"executor": "unknown joint 'claw'"}, kind="bad_chunk", restore=resume_policy, repeats=1),
    Case("chunk missing a joint", bad_chunk(names=ROBOT_JOINTS[:2], positions=[[0.1, -0.2]] * 4),
         {"executor": "missing joint 'finger'"}, kind="bad_chunk", restore=resume_policy, repeats=1),
    Case("chunk unevenly spaced", bad_chunk(times=[0.05, 0.1, 0.3, 0.35]),
         {"executor": "not evenly spaced"}, kind="bad_chunk", restore=resume_policy, repeats=1),
    Case("chunk stamped in the future", bad_chunk(t0_offset=2.0), {"executor": "from_future"},
         kind="bad_chunk", restore=resume_policy, repeats=1),
    Case("chunk entirely in the past", bad_chunk(t0_offset=-0.1, dt=0.01), {"executor": "(stale)"},
         kind="bad_chunk", restore=resume_policy, repeats=1),
    # the graph
    Case("controller topic without subscriber", unsubscribe("gripper_controller"),
         {"executor": "no subscriber on /gripper_controller/joint_trajectory"},
         restore=resubscribe("gripper_controller"), repeats=1),
    Case("policy process killed mid-chunk", kill_policy, {"executor": "no chunk arrived in time"},
         restore=restart_policy, repeats=1),
]


# -- the rig and the checks ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    pytest.importorskip("rclpy")
    from ros_harness import RosTestBed

    folder = tmp_path_factory.mktemp("faults")
    model = make_model(folder / "model")
    corrupt = folder / "corrupt"
    shutil.copytree(model, corrupt)
    weights = corrupt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    backend = "faulty_engine:FaultyEngine"
    policy = policy_params(model, backend=backend, strict_joint_names=True, max_goal_bytes=4096)
    params = write_params(folder / "params.yaml", policy_node=policy, chunk_executor=executor_params())
    bed = RosTestBed()
    try:
        probe = Rig(bed)
        probe.model, probe.corrupt, probe.backend = model, corrupt, backend
        probe.camera_topics = policy["camera_topics"]
        probe.start_policy = lambda: start_node(bed, "policy", "dream_vla_ros.nodes.policy_node", params)
        probe.set_goal(GOAL)
        probe.start_policy()
        start_node(bed, "executor", "dream_vla_ros.nodes.executor_node", params)
        yield probe
    finally:
        bed.close()


def running(rig: Rig, after: float, timeout: float = 20.0) -> None:
    rig.wait(lambda: rig.mode() == "running" and any(c.stamp > after and c.msg.points for c in rig.chunks[-5:]),
             timeout, "control running on fresh chunks")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(rig: Rig, case: Case):
    check_case(rig, case)


def check_case(rig: Rig, case: Case, on_hold: Callable[[Rig, float], None] | None = None) -> None:
    """Run ``case`` from a running loop and check it (see the module docstring); ``on_hold(rig, t_block)``
    runs extra checks once the executor holds (a case of kind "still" skips the no-chunk check)."""
    running(rig, rig.now() - 0.5, timeout=40.0)
    marks = {p: len(rig.log_lines(p)) for p in BOTH}
    t_inject = rig.now()
    case.inject(rig)
    if case.kind == "accepted":
        running(rig, t_inject + 0.1)
        for process in BOTH:
            assert not [line for line in rig.log_lines(process)[marks[process]:] if "[ERROR]" in line], rig.report()
    else:
        seen = []
        for process, needle in case.causes.items():
            node = NODES[process]
            rig.wait(lambda node=node, needle=needle: rig.cause_status(node, needle, after=t_inject),
                     what=f"{needle!r} on /diagnostics of {node}")
            seen.append(rig.now())
            rig.wait(lambda node=node, needle=needle: int(rig.cause_status(node, needle).values.get("count", 0))
                     >= case.repeats, what=f"{needle!r} seen {case.repeats} times")
        t_block = max(seen)
        rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(after=t_block), what="the executor holding")
        rig.wait_until(t_block + GRACE + 0.1)
        if on_hold is not None:
            on_hold(rig, t_block)
        if case.kind == "bad_chunk":
            assert rig.value("chunk_executor", "chunks_accepted") == rig.accepted_before
        elif case.kind == "hold":
            late = [c for c in rig.chunks if c.received > t_block + GRACE and c.msg.points]
            assert not late, f"{len(late)} chunk(s) published after the cause was known\n{rig.report()}"
        for process, needle in case.causes.items():
            lines = rig.cause_lines(process, needle, marks[process])
            assert len(lines) == 1, f"{needle!r} logged {len(lines)} times by {process}:\n{rig.report()}"
    assert not rig.violations, rig.violations[:5]
    for process in BOTH:
        if case.restore is not restart_policy or process != "policy":
            assert rig.alive(process), rig.report()
    t_restore = rig.now()
    case.restore(rig)
    running(rig, t_restore)
