"""The MT10 task list and its phrasing split (no simulator needed)."""

from __future__ import annotations

import pytest

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.sim.tasks import MT10, TASKS, instruction, parse_tasks, phrasing_table, task_spec


def test_mt10_has_ten_tasks_with_disjoint_phrasing_splits():
    assert len(MT10) == 10 and "peg-insert-side" in MT10
    for spec in TASKS.values():
        assert spec.env_name == f"{spec.name}-v3"
        assert len(spec.train) >= 3 and len(spec.heldout) >= 2
        assert not set(spec.train) & set(spec.heldout)
        assert spec.phrasings("all") == spec.train + spec.heldout
    table = phrasing_table()
    assert set(table) == set(MT10) and table["reach"]["heldout"] == list(TASKS["reach"].heldout)


def test_parse_tasks():
    assert parse_tasks("mt10") == MT10
    assert parse_tasks("push, reach-v3,push") == ("push", "reach")
    assert parse_tasks(["drawer-open"]) == ("drawer-open",)
    with pytest.raises(ConfigError, match="unknown task 'fly'"):
        parse_tasks("reach,fly")
    with pytest.raises(ConfigError, match="no task"):
        parse_tasks(" , ")


def test_instruction_cycles_through_a_split():
    spec = task_spec("push")
    assert [instruction("push", i) for i in range(len(spec.train) + 1)] == [*spec.train, spec.train[0]]
    assert instruction("push", 1, "heldout") == spec.heldout[1]
    with pytest.raises(ConfigError, match="phrasings"):
        instruction("push", 0, "test")
