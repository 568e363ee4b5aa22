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


def test_roc_report_table_and_plot(scorer, tmp_path):
    from dream_vla_ros.evaluation.goal_report import goal_sets, roc_report

    accept, refuse = goal_sets(scorer, UNRELATED)
    assert len(accept["held-out phrasings"]) == 20 and len(refuse["other unrelated goals"]) == len(UNRELATED)
    table = roc_report(scorer, accept, refuse, tmp_path / "roc.png")
    default = next(line for line in table.splitlines() if "(default)" in line)
    cells = [c.strip() for c in default.strip("|").split("|")]
    assert cells[1:3] == ["100.0%", "100.0%"] and cells[-1] == "100.0%"  # train, held-out accepted; test refused
    assert (tmp_path / "roc.png").stat().st_size > 10_000


def test_goal_check_command_prints_one_json_object_per_goal(tmp_path):
    import dataclasses
    import json
    import subprocess
    import sys

    from dream_vla_ros.policy.checkpoint import save_checkpoint
    from dream_vla_ros.policy.config import GoalConfig, preset
    from dream_vla_ros.policy.model import build_model

    config = dataclasses.replace(preset("tiny"), goals=GoalConfig((("drawer-open", "open the drawer"),), 0.6))
    model = save_checkpoint(build_model(config), tmp_path / "m")
    out = subprocess.run([sys.executable, "-m", "dream_vla_ros.cli", "goal-check", "--model", str(model),
                          "please open the drawer", "make me a coffee"], capture_output=True, text=True, timeout=120,
                         check=True).stdout.splitlines()
    first, second = (json.loads(line) for line in out)
    assert first["accepted"] and first["nearest_instruction"] == "open the drawer" and first["threshold"] == 0.6
    assert not second["accepted"] and second["confidence"] < 0.6 and "not understood" in second["reason"]


def test_a_dataset_outside_mt10_gets_a_threshold_from_its_own_phrasings_typed_freely():
    goals = goal_config({"pick-block": ["pick up the block"], "stack": ["stack the red cube on the blue one"]}, 400)
    assert goals.known == (("pick-block", "pick up the block"), ("stack", "stack the red cube on the blue one"))
    scorer = GoalScorer(goals.known, goals.min_confidence)
    assert scorer.verdict("Robot, could you please PICK UP THE BLOCK for me?").accepted
    assert scorer.verdict("stack the red cube on the blue one carefully").nearest_task == "stack"
    refused = [g for g in UNRELATED if not scorer.verdict(g).accepted]
    assert len(refused) >= 0.9 * len(UNRELATED)
