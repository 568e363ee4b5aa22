"""The ROS-free parts of the policy node: frame intake (checks, decoding, newest frame per camera), goal
verdicts and the operator's override, and the parameters checked against the model. Messages are read by
attribute, so plain namespaces stand in for them."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from dream_vla_ros.errors import ConfigError, InputError
from dream_vla_ros.nodes.health import FaultTracker
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig
from dream_vla_ros.nodes.policy_frames import Frame, FrameIntake
from dream_vla_ros.nodes.policy_goals import GoalDesk, goal_scorer
from dream_vla_ros.nodes.policy_model import joint_mapper, robot_joints
from dream_vla_ros.policy.config import JointEnvelope
from dream_vla_ros.policy.goals import GoalVerdict


class FakeDiagnostics:
    """What the parts use of ``Diagnostics``: report / clear on a FaultTracker, with the reports kept."""

    def __init__(self) -> None:
        self.faults = FaultTracker()
        self.reported: list[tuple[str, str]] = []

    def report(self, slot: str, key: str, message: str, level: str = "error") -> bool:
        self.reported.append((slot, message))
        return self.faults.report(slot, key, message, level)

    def clear(self, slot: str) -> None:
        self.faults.clear(slot)


def stamp(seconds: float) -> SimpleNamespace:
    return SimpleNamespace(sec=int(seconds), nanosec=round((seconds % 1) * 1e9))


def image(seconds: float = 1.5, width: int = 4, height: int = 3, encoding: str = "rgb8", nanosec: int | None = None):
    header = SimpleNamespace(stamp=stamp(seconds) if nanosec is None else SimpleNamespace(sec=1, nanosec=nanosec))
    data = np.arange(width * height * 3, dtype=np.uint8).tobytes()
    return SimpleNamespace(header=header, encoding=encoding, width=width, height=height, step=width * 3, data=data)


def png(seconds: float = 1.5, width: int = 4, height: int = 3) -> SimpleNamespace:
    import cv2

    ok, encoded = cv2.imencode(".png", np.full((height, width, 3), 9, np.uint8))
    assert ok
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp(seconds)), format="png", data=encoded.tobytes())


@pytest.fixture
def intake():
    diagnostics = FakeDiagnostics()
    woken: list[int] = []
    errors: list[BaseException] = []
    frames = FrameIntake(diagnostics, lambda: 2.0, lambda: woken.append(1), errors.append)
    frames.configure(("main", "wrist"), PolicyNodeConfig(camera_topics=("a", "b"), image_width=4, image_height=3))
    yield SimpleNamespace(frames=frames, diagnostics=diagnostics, woken=woken, errors=errors)
    frames.close()
    assert errors == []


# -- frames --------------------------------------------------------------------------------------------------
def test_a_good_frame_is_kept_and_one_of_the_first_camera_wakes_the_caller(intake):
    intake.frames.image_callback("wrist", False)(image())
    assert intake.woken == []  # only the first camera's frames start an observation
    intake.frames.image_callback("main", False)(image(1.25))
    frame = intake.frames.snapshot()["main"]
    assert (frame.stamp, frame.received, frame.error, frame.used) == (1.25, 2.0, "", False)
    assert list(intake.frames.snapshot()) == ["main", "wrist"] and intake.woken == [1]
    assert intake.frames.counts == {"frames_received": 2, "frames_rejected": 0, "frames_dropped": 0}
    assert intake.frames.rates["camera main"].last == 2.0


def test_a_bad_frame_blocks_until_a_good_one_replaces_it(intake):
    on_main = intake.frames.image_callback("main", False)
    on_main(image(width=5))
    frame = intake.frames.snapshot()["main"]
    assert frame.error == "camera 'main': size 5x3, expected 4x3"
    assert intake.diagnostics.faults.active("camera main").message == frame.error
    assert intake.frames.counts["frames_rejected"] == 1 and intake.woken == []
    on_main(image(nanosec=2_000_000_000))
    assert "invalid header stamp" in intake.frames.snapshot()["main"].error
    on_main(image())
    assert intake.diagnostics.faults.is_healthy("camera main") and intake.woken == [1]
    assert intake.frames.counts["frames_dropped"] == 0  # bad frames replaced are not counted as dropped
    on_main(image(1.75))
    assert intake.frames.counts["frames_dropped"] == 1  # a good, unused frame replaced


def test_nothing_is_taken_unconfigured_and_release_forgets_the_frames(intake):
    intake.frames.image_callback("main", False)(image())
    intake.frames.release()
    assert intake.frames.newest() == {} and intake.frames.snapshot() == {"main": None, "wrist": None}
    intake.frames.image_callback("main", False)(image())
    assert intake.frames.newest() == {} and intake.frames.counts["frames_received"] == 1


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_compressed_frames_are_decoded_off_the_callback_and_bounded_before(intake):
    pytest.importorskip("cv2")
    on_main = intake.frames.image_callback("main", True)
    on_main(png())
    _wait_for(lambda: intake.frames.snapshot()["main"] is not None)
    frame = intake.frames.snapshot()["main"]
    assert frame.compressed and frame.error == "" and frame.rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(intake.frames.images({"main": frame})["main"], frame.rgb)
    on_main(png(width=6))  # the declared size is checked before any decoding
    assert "6x3" in intake.frames.snapshot()["main"].error


def test_images_marks_and_reports_a_frame_that_cannot_be_converted(intake):
    pytest.importorskip("cv2")
    good = Frame(image(), 1.5, 2.0, False)
    undecoded = Frame(png(), 1.5, 2.0, True)
    assert intake.frames.images({"main": good, "wrist": undecoded}) is None
    assert undecoded.error == "camera 'wrist': compressed frame not decoded"
    assert intake.diagnostics.reported[-1] == ("camera wrist", undecoded.error)
    images = intake.frames.images({"main": good})
    assert images["main"].shape == (3, 4, 3)


def test_the_decoder_takes_the_newest_frame_of_each_camera(intake):
    pytest.importorskip("cv2")
    on_main = intake.frames.image_callback("main", True)
    for seconds in (1.0, 1.1, 1.2):
        on_main(png(seconds))
    _wait_for(lambda: (f := intake.frames.snapshot()["main"]) is not None and f.stamp == 1.2)


# -- goals ---------------------------------------------------------------------------------------------------
class FakeScorer:
    def __init__(self, accept: set[str]) -> None:
        self.accept = accept

    def verdict(self, goal: str) -> GoalVerdict:
        if goal in self.accept:
            return GoalVerdict(goal, True, 0.9, goal, "task")
        return GoalVerdict(goal, False, 0.1, "reach", "task", "not understood")


def test_unchecked_goals_are_accepted_and_an_empty_goal_stops():
    desk = GoalDesk()
    goal, verdict = desk.receive("  push the puck ", 512)
    assert goal == "push the puck" and verdict.accepted and verdict.reason.startswith("not checked")
    goal, verdict = desk.receive("", 512)
    assert goal == "" and verdict.reason == "empty goal: stopped"
    status = json.loads(desk.record(verdict))
    assert status == {"goal": "", "accepted": False, "confidence": -1.0, "nearest_instruction": "",
                      "nearest_task": "", "reason": "empty goal: stopped", "checked": False, "overridden": False}
    assert desk.values() == {"goal accepted": False, "goal confidence": -1.0, "goal nearest_instruction": "",
                             "goal overridden": False}


def test_an_invalid_goal_is_refused_with_its_cause():
    desk = GoalDesk()
    goal, verdict = desk.receive("x" * 20, 10)
    assert goal is None and verdict.reason == "goal: too long (20 bytes, limit 10)" and not verdict.accepted
    assert desk.accept_refused() is None  # an invalid goal is nothing the operator can accept


def test_the_operator_accepts_the_goal_refused_last_once():
    desk = GoalDesk()
    desk.use(FakeScorer({"reach"}))
    assert desk.receive("reach", 512)[0] == "reach"
    goal, verdict = desk.receive("make coffee", 512)
    assert goal is None and verdict.reason == "not understood"
    goal, verdict = desk.accept_refused()
    assert goal == "make coffee" and verdict.accepted and verdict.reason == "accepted by the operator"
    assert json.loads(desk.record(verdict, overridden=True))["overridden"] is True
    assert desk.values()["goal overridden"] is True
    assert desk.accept_refused() is None


def test_a_later_goal_leaves_nothing_to_accept():
    desk = GoalDesk()
    desk.use(FakeScorer({"reach"}))
    desk.receive("make coffee", 512)
    desk.receive("reach", 512)
    assert desk.accept_refused() is None
    assert json.loads(desk.record(desk.judge("reach")))["checked"] is True


def test_the_goal_scorer_takes_the_models_threshold_unless_one_is_set():
    known = (("reach", "reach the goal"), ("push", "push the puck"))
    meta = SimpleNamespace(goals=SimpleNamespace(known=known, min_confidence=0.6), max_goal_tokens=32)
    pytest.importorskip("dream_vla_ros.policy.wordllama")
    assert goal_scorer(meta, -1.0).min_confidence == 0.6
    assert goal_scorer(meta, 0.25).min_confidence == 0.25
    assert goal_scorer(SimpleNamespace(goals=SimpleNamespace(known=(), min_confidence=0.6)), -1.0) is None


# -- parameters against the model ----------------------------------------------------------------------------
def _meta(**changes):
    fields = {"cameras": ("main",), "joint_names": ("a", "b"), "image_size": 64, "crop_fraction": 0.9}
    return SimpleNamespace(**{**fields, **changes})


def test_robot_joints_default_to_the_models_and_must_match_its_count():
    assert robot_joints(PolicyNodeConfig(), _meta()) == ("a", "b")
    assert robot_joints(PolicyNodeConfig(joint_names=("j1", "j2")), _meta()) == ("j1", "j2")
    with pytest.raises(ConfigError, match=r"joint_names: 1 names for the model's 2 joints \['a', 'b'\]"):
        robot_joints(PolicyNodeConfig(joint_names=("j1",)), _meta())
    with pytest.raises(ConfigError, match=r"camera_topics: 2 topic\(s\) for the model's 1 camera\(s\)"):
        robot_joints(PolicyNodeConfig(camera_topics=("x", "y")), _meta())
    with pytest.raises(ConfigError, match="64x60 frames are smaller than the model's 64 px input"):
        robot_joints(PolicyNodeConfig(image_width=64, image_height=60), _meta())
    assert robot_joints(PolicyNodeConfig(image_width=80, image_height=72), _meta()) == ("a", "b")


def test_the_joint_mapper_faults_beyond_the_envelope_plus_margin_only_when_both_are_set():
    envelope = JointEnvelope((-1.0, -1.0), (1.0, 1.0))
    state = SimpleNamespace(name=["b", "a"], position=[0.0, 1.4], header=SimpleNamespace(stamp=stamp(3.0)))
    mapper = joint_mapper(PolicyNodeConfig(joint_fault_margin=0.5), ("a", "b"), envelope)
    positions, seconds = mapper.read(state)
    np.testing.assert_array_equal(positions, [1.4, 0.0])
    assert seconds == 3.0
    state.position = [0.0, 1.6]
    with pytest.raises(InputError, match="outside"):
        mapper.read(state)
    for config, env in ((PolicyNodeConfig(joint_fault_margin=-1.0), envelope),
                        (PolicyNodeConfig(joint_fault_margin=0.5), JointEnvelope())):
        assert joint_mapper(config, ("a", "b"), env).bounds is None
    assert joint_mapper(PolicyNodeConfig(strict_joint_names=True), ("a", "b"), envelope).strict

