"""Goal understanding over real DDS: the policy node and the chunk executor as processes, a model that records
the MT10 instructions it was trained on. Unrelated goals are refused (no chunk, the arm at rest, the cause on
/diagnostics and ~/goal_status, logged once), every MT10 training and held-out phrasing is accepted, and the
operator's ~/accept_goal overrides a refusal once."""

from __future__ import annotations

import json

import pytest
from node_rig import Rig, executor_params, make_model, policy_params, start_node, write_params
from unrelated_goals import UNRELATED

from dream_vla_ros.nodes.health import cause_key
from dream_vla_ros.sim.tasks import MT10, TASKS

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    pytest.importorskip("rclpy")
    from ros_harness import RosTestBed
    from std_msgs.msg import String

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.train.instructions import goal_config

    folder = tmp_path_factory.mktemp("goals")
    model = make_model(folder / "model", goals=goal_config({t: list(TASKS[t].train) for t in MT10}, 400))
    params = write_params(folder / "params.yaml", policy_node=policy_params(model), chunk_executor=executor_params())
    bed = RosTestBed()
    try:
        probe = Rig(bed)
        probe.verdicts = []
        probe.node.create_subscription(String, "/policy_node/goal_status",
                                       lambda m: probe.verdicts.append(json.loads(m.data)), qos.GOAL)
        probe.set_goal("open the drawer")
        start_node(bed, "policy", "dream_vla_ros.nodes.policy_node", params)
        start_node(bed, "executor", "dream_vla_ros.nodes.executor_node", params)
        yield probe
    finally:
        bed.close()


def verdict_of(rig: Rig, goal: str) -> dict:
    rig.set_goal(goal)
    return rig.wait(lambda: next((v for v in reversed(rig.verdicts) if v["goal"] == goal[:200]), None),
                    what=f"the verdict on {goal!r}")


def moving(rig: Rig, after: float) -> bool:
    return any(any(p.velocities) for t, w in rig.windows["arm_controller"] if t > after for p in w.points)


def test_unrelated_goals_are_refused_without_motion(rig: Rig):
    rig.wait(lambda: moving(rig, 0.0), timeout=60.0, what="motion under an understood goal")
    understood = [v for v in rig.verdicts if v["goal"] == "open the drawer"]
    assert understood and all(v["accepted"] and v["nearest_task"] == "drawer-open" for v in understood)
    first = verdict_of(rig, UNRELATED[0])
    assert not first["accepted"] and first["checked"] and "not understood: closest known" in first["reason"]
    rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), what="the hold after a refused goal")
    t_hold = rig.now()
    chunks = len([c for c in rig.chunks if c.msg.points])
    causes = {cause_key(first["reason"])}
    for goal in UNRELATED[1:]:
        verdict = verdict_of(rig, goal)
        causes.add(cause_key(verdict["reason"]))
        assert not verdict["accepted"] and verdict["confidence"] < 0.7, verdict
        assert verdict["nearest_instruction"] and "closest known" in verdict["reason"]
    rig.wait_until(rig.now() + 1.0)
    assert len([c for c in rig.chunks if c.msg.points]) == chunks, "a refused goal produced a chunk"
    assert not moving(rig, t_hold + 0.2), "the arm moved under refused goals"
    status = rig.wait(lambda: rig.cause_status("policy_node", UNRELATED[-1]), what="the cause on /diagnostics")
    assert "not understood: closest known" in status.message and status.message.endswith("holding")
    assert rig.value("policy_node", "goal accepted") == "False"
    refusals = [line for line in rig.log_lines("policy") if "not understood: closest known" in line]
    assert len(refusals) == len(causes), "each refused goal is logged once"
    rig.verdicts.clear()
    verdict_of(rig, UNRELATED[-1])  # the same goal again (a repeated publication): no second log line
    rig.wait_until(rig.now() + 0.3)
    assert len([line for line in rig.log_lines("policy") if "not understood" in line]) == len(refusals)


def test_every_mt10_phrasing_is_accepted_and_moves_the_arm(rig: Rig):
    for task in MT10:
        for phrasing in TASKS[task].phrasings("all"):
            verdict = verdict_of(rig, phrasing)
            assert verdict["accepted"], verdict
    t = rig.now()
    rig.wait(lambda: moving(rig, t), timeout=30.0, what="motion under the last phrasing")
    assert rig.value("policy_node", "goal accepted") == "True"


def test_operator_override_accepts_a_refused_goal_once(rig: Rig):
    assert not verdict_of(rig, "make me a coffee")["accepted"]
    rig.wait(lambda: rig.mode() == "holding" and rig.at_rest(), what="the hold")
    rig.verdicts.clear()
    answer = rig.call_trigger("/policy_node/accept_goal")
    assert answer.success and "make me a coffee" in answer.message
    verdict = rig.wait(lambda: rig.verdicts[-1] if rig.verdicts else None, what="the override's verdict")
    assert verdict["accepted"] and verdict["overridden"] and verdict["goal"] == "make me a coffee"
    t = rig.now()
    rig.wait(lambda: moving(rig, t), timeout=30.0, what="motion under the overridden goal")
    assert not rig.call_trigger("/policy_node/accept_goal").success  # once: nothing refused is left
    too_long = verdict_of(rig, "open the drawer " * 40)
    assert not too_long["accepted"] and "too long" in too_long["reason"]
