"""Goal understanding: every MT10 phrasing is accepted, unrelated goals are refused, the threshold rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unrelated_goals import UNRELATED

from dream_vla_ros.policy.goals import CALIBRATION_UNRELATED, GoalScorer, choose_threshold, roc
from dream_vla_ros.sim.tasks import MT10, TASKS
from dream_vla_ros.train.instructions import goal_config


@pytest.fixture(scope="module")
def scorer():
    goals = goal_config({task: list(TASKS[task].train) for task in MT10}, paraphrases=400)
    assert 0.3 < goals.min_confidence < 0.9
    return GoalScorer(goals.known, goals.min_confidence, max_tokens=128)


def test_every_training_and_heldout_phrasing_is_accepted(scorer):
    for task in MT10:
        for phrasing in TASKS[task].phrasings("all"):
            verdict = scorer.verdict(phrasing)
            assert verdict.accepted, verdict
            assert verdict.nearest_instruction and verdict.nearest_task in MT10
    assert not set(UNRELATED) & set(CALIBRATION_UNRELATED)


def test_unrelated_goals_are_refused_with_the_nearest_known_instruction(scorer):
    assert len(UNRELATED) >= 30
    for goal in UNRELATED:
        verdict = scorer.verdict(goal)
        assert not verdict.accepted, verdict
        assert verdict.reason.startswith(f"goal {goal.lower()[:60]!r} not understood: closest known ")
        assert verdict.confidence < scorer.min_confidence and verdict.nearest_instruction


def test_politeness_and_case_cost_nothing_and_long_goals_are_refused_whole(scorer):
    plain = scorer.verdict("open the drawer")
    assert plain.confidence == pytest.approx(1.0) and plain.nearest_task == "drawer-open"
    polite = scorer.verdict("Hey robot, could you please OPEN THE DRAWER for me? Thanks!")
    assert polite.accepted and polite.nearest_task == "drawer-open"
    long_goal = "open the drawer " + "carefully and " * 30  # 436 bytes: read whole
    assert scorer.verdict(long_goal).accepted
    too_long = "open the drawer " * 40
    verdict = scorer.verdict(too_long)
    assert not verdict.accepted and "639 bytes, at most 512" in verdict.reason  # normalised: stripped
    tokens = scorer.verdict("a-" * 200)
    assert not tokens.accepted and "tokens" in tokens.reason
    assert not scorer.verdict("   ").accepted and "empty" in scorer.verdict("").reason
    assert scorer.verdict("make me a coffee", min_confidence=-1.0).accepted  # a per-call threshold


def test_without_known_instructions_everything_is_accepted():
    assert GoalScorer((), 0.9).verdict("make me a coffee").accepted


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=1, max_size=40), st.lists(st.floats(-1, 1), min_size=1, max_size=40))
def test_threshold_keeps_the_accept_rate_and_refuses_the_most(accept, refuse):
    threshold = choose_threshold(accept, refuse, min_accept=0.9)
    rates = roc(accept, refuse, [threshold])[0]
    if min(accept) > max(refuse):  # separable: everything right, strictly between the two sets
        assert rates == {"threshold": threshold, "accepted": 1.0, "refused": 1.0}
        assert max(refuse) < threshold <= min(accept)
    else:
        assert rates["accepted"] >= 0.9 or threshold < min(accept)
