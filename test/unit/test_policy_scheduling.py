"""When the policy node infers, and its work around the engine (no ROS node needed): which chunk request is
due, the job handed to the inference thread (lifecycle, stop, goal epochs, fresh inputs), the checks of the
engine's chunk, the latency account and the added delay."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy")

from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes.health import FaultTracker
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig
from dream_vla_ros.nodes.policy_frames import Frame
from dream_vla_ros.nodes.policy_inference import (
    AddedDelay,
    ChunkRequests,
    InferenceScheduler,
    Job,
    LatencyAccount,
    check_prediction,
    chunk_message,
    latency_stages,
)
from dream_vla_ros.policy.config import JointEnvelope

NOW = 10.0


class FakeDiagnostics:
    def __init__(self) -> None:
        self.faults = FaultTracker()

    def report(self, slot: str, key: str, message: str, level: str = "error") -> bool:
        return self.faults.report(slot, key, message, level)

    def clear(self, slot: str) -> None:
        self.faults.clear(slot)


# -- requests ------------------------------------------------------------------------------------------------
def test_a_request_is_answered_once_and_again_only_when_still_repeated_after_the_timeout():
    requests = ChunkRequests()
    assert requests.due(NOW, 1.0) is None
    requests.ask("s/1", NOW)
    assert requests.due(NOW + 0.5, 1.0) == "s/1"
    requests.answered("s/1", NOW + 0.5)
    requests.ask("s/1", NOW + 1.0)
    assert requests.due(NOW + 1.0, 1.0) is None  # answered 0.5 s ago
    requests.ask("s/1", NOW + 1.6)
    assert requests.due(NOW + 1.6, 1.0) == "s/1"  # still repeated a timeout later: the chunk was lost
    requests.ask("s/2", NOW + 1.7)
    assert requests.due(NOW + 1.7, 1.0) == "s/2"  # a new request at once
    assert requests.due(NOW + 2.8, 1.0) is None  # the executor stopped asking
    requests.reset()
    assert requests.due(NOW + 1.7, 1.0) is None


# -- scheduling ----------------------------------------------------------------------------------------------
class Rig:
    """A scheduler whose jobs wait until released (so 'busy' can be seen), with fresh inputs at hand."""

    def __init__(self) -> None:
        self.diagnostics = FakeDiagnostics()
        self.jobs: list[Job] = []
        self.release = threading.Event()
        self.errors: list[BaseException] = []
        self.scheduler = InferenceScheduler(self.diagnostics, self._run, self.errors.append)

    def _run(self, job: Job) -> None:
        self.jobs.append(job)
        self.release.wait(5.0)

    def ready(self, goal: str = "reach") -> None:
        self.scheduler.configure(PolicyNodeConfig())
        self.scheduler.activate()
        self.scheduler.set_goal(goal)
        self.scheduler.ask("s/1", NOW)

    def offer(self, frames=None, joints=None, now: float = NOW) -> bool:
        frames = frames if frames is not None else {"main": Frame(None, NOW - 0.05, NOW - 0.04, False)}
        joints = joints if joints is not None else (np.array([0.1, 0.2]), NOW - 0.02)
        return self.scheduler.offer(now, frames, joints)

    def finish(self) -> None:
        self.release.set()
        deadline = time.monotonic() + 5.0
        while self.scheduler.busy and time.monotonic() < deadline:
            time.sleep(0.005)
        self.release.clear()


@pytest.fixture
def rig():
    rig = Rig()
    yield rig
    rig.release.set()
    rig.scheduler.close()
    assert rig.errors == []


def test_a_job_starts_only_configured_active_with_a_goal_and_a_request(rig):
    assert not rig.offer()
    rig.scheduler.configure(PolicyNodeConfig())
    rig.scheduler.ask("s/1", NOW)
    assert not rig.offer()  # inactive
    rig.scheduler.activate()
    assert not rig.offer()  # no goal
    rig.scheduler.set_goal("reach")
    frames = {"main": Frame(None, NOW - 0.05, NOW - 0.04, False)}
    assert rig.offer(frames)
    rig.finish()
    job = rig.jobs[0]
    assert (job.request, job.goal, job.stamp, job.submitted, job.first) == ("s/1", "reach", NOW - 0.05, NOW,
                                                                            frames["main"])
    np.testing.assert_array_equal(job.proprio, [0.1, 0.2])
    assert frames["main"].used


def test_one_job_at_a_time_one_per_frame_and_none_once_released(rig):
    rig.ready()
    assert rig.offer()
    rig.scheduler.ask("s/2", NOW)
    assert not rig.offer()  # busy: dropped (the executor repeats its request)
    rig.finish()
    used = {"main": Frame(None, NOW - 0.05, NOW - 0.04, False, used=True)}
    assert not rig.offer(used)  # one chunk per observation
    assert rig.offer()
    rig.finish()
    rig.scheduler.release()
    assert not rig.offer()
    assert len(rig.jobs) == 2


def test_bad_or_stale_inputs_start_no_job_and_are_reported(rig):
    rig.ready()
    assert not rig.offer({"main": Frame(None, NOW - 0.05, NOW - 0.04, False, error="bad")})
    assert not rig.offer({"main": Frame(None, NOW - 1.0, NOW - 0.04, False)})
    assert rig.diagnostics.faults.active("camera main timing").key == "stale"
    assert not rig.offer({"main": None})
    rig.diagnostics.report("joint_states", "missing joint", "missing joint")
    assert not rig.offer()
    rig.diagnostics.clear("joint_states")
    assert not rig.offer()  # fresh again, but not yet for input_recovery_time
    assert rig.offer(now=NOW + 0.3, frames={"main": Frame(None, NOW + 0.25, NOW + 0.26, False)},
                     joints=(np.zeros(2), NOW + 0.28))
    assert rig.diagnostics.faults.is_healthy("camera main timing")
    rig.finish()
    assert len(rig.jobs) == 1


def test_a_chunk_is_wanted_only_in_the_epoch_it_was_asked_for(rig):
    rig.ready()
    assert rig.offer()
    rig.finish()
    job = rig.jobs[0]
    assert rig.scheduler.wanted(job)
    rig.scheduler.deactivate(discard=False)
    assert not rig.scheduler.wanted(job)
    rig.scheduler.activate()
    assert rig.scheduler.wanted(job)  # the same epoch
    rig.scheduler.deactivate()
    rig.scheduler.activate()
    assert not rig.scheduler.wanted(job)


def test_stop_resume_and_goal_changes(rig):
    assert rig.scheduler.resume() == (False, False, "")
    assert not rig.scheduler.stop()
    assert rig.scheduler.stop()
    assert rig.scheduler.resume() == (False, True, "")  # inactive: the stop stays
    rig.ready()
    assert not rig.offer()  # stopped
    assert rig.scheduler.resume() == (True, True, "reach")
    assert rig.scheduler.resume() == (True, False, "reach")
    assert not rig.scheduler.set_goal("reach") and rig.scheduler.set_goal("push")
    assert rig.offer()
    rig.finish()
    job = rig.jobs[0]
    rig.scheduler.set_goal("push")  # the same goal again is a new epoch too
    assert not rig.scheduler.wanted(job)
    rig.scheduler.answered(job, NOW)
    rig.scheduler.set_goal("")
    rig.scheduler.ask("s/2", NOW)
    assert not rig.offer()  # no goal


# -- the engine's chunk --------------------------------------------------------------------------------------
META = SimpleNamespace(chunk_length=2, joint_names=("a", "b"), envelope=JointEnvelope((-1.0, -1.0), (1.0, 1.0)))


def prediction(positions=((0.0, 0.5), (1.5, -0.2)), names=("a", "b"), dt=0.1, **timings):
    return SimpleNamespace(positions=np.array(positions), joint_names=names, dt=dt, timings_ms=timings,
                           iterations=3, halt_reason="converged")


@pytest.mark.parametrize(("change", "message"), [
    ({"positions": ((0.0, 0.5),)}, r"shape \[1, 2\], expected \[2, 2\]"),
    ({"names": ("b", "a")}, r"joints \['b', 'a'\], expected \['a', 'b'\]"),
    ({"positions": ((0.0, np.nan), (0.0, 0.0))}, "NaN or infinite"),
    ({"dt": 0.0}, "dt 0.0"),
])
def test_a_chunk_the_model_cannot_have_made_is_refused(change, message):
    with pytest.raises(InputError, match=message):
        check_prediction(prediction(**change), META)


def test_the_chunk_message_is_confined_to_the_envelope_plus_margin():
    from builtin_interfaces.msg import Time

    msg, confined = chunk_message(prediction(), META, 0.25, ("j1", "j2"), Time(sec=4, nanosec=5))
    assert confined == 1 and list(msg.joint_names) == ["j1", "j2"]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (4, 5)
    np.testing.assert_allclose(msg.points[1].positions, [1.25, -0.2])
    assert msg.points[1].time_from_start.nanosec == 200_000_000


# -- latency and delay ---------------------------------------------------------------------------------------
def _job() -> Job:
    first = Frame(None, stamp=1.0, received=1.01, compressed=False)
    return Job("s/1", {"main": first}, np.zeros(2), "reach", 0, 1.0, 1.03)


def test_latency_stages_split_the_engines_own_timings():
    marks = (5.000, 5.002, 5.012, 5.013)  # conversion 2 ms, engine call 10 ms, publish 1 ms
    stages = latency_stages(_job(), prediction(preprocess=1.0, postprocess=0.5, total=9.0), marks)
    expected = {"transport": 10.0, "wait": 20.0, "conversion": 2.0, "preprocessing": 1.0, "engine": 7.5,
                "postprocessing": 1.5, "publish": 1.0}
    assert stages == pytest.approx(expected)
    assert latency_stages(_job(), prediction(), marks)["engine"] == pytest.approx(10.0)  # no engine timings


def test_the_latency_account_shows_recent_stages_and_writes_the_profile(tmp_path):
    account = LatencyAccount()
    assert account.values() == {"iterations k": 0, "halting reason": ""}
    path = tmp_path / "profile.jsonl"
    account.open_profile(str(path))
    for ms in (1.0, 3.0, 8.0):
        account.add(_job(), prediction(), (0.0, 0.0, 0.0, ms * 1e-3), published_at=2.0)
    account.close_profile()
    values = account.values()
    assert values["latency publish ms (median)"] == pytest.approx(3.0)
    assert values["latency publish ms (last)"] == pytest.approx(8.0)
    assert (values["iterations k"], values["halting reason"]) == (3, "converged")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["request"] == "s/1" and lines[0]["published"] == 2.0
    assert lines[2]["publish_ms"] == pytest.approx(8.0) and lines[0]["iterations"] == 3


def test_the_added_delay_waits_its_time_and_returns_when_cancelled():
    cancel = threading.Event()
    delay = AddedDelay(time.monotonic, cancel)
    start = time.monotonic()
    delay.wait(0.03, 0.0)
    assert time.monotonic() - start >= 0.03
    cancel.set()
    start = time.monotonic()
    delay.wait(5.0, 1.0)
    assert time.monotonic() - start < 1.0
