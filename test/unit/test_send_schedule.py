"""When the executor sends a window (topic) or a goal (action): nodes/controller_outputs.SendSchedule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("rclpy")

from dream_vla_ros.chunking import CommandedState, Window
from dream_vla_ros.nodes.controller_outputs import Command, SendSchedule


def command(now: float, version: int, mode: str) -> Command:
    window = Window(joint_names=("a",), positions=np.zeros((2, 1)), velocities=np.zeros((2, 1)),
                    time_from_start=np.array([0.1, 0.2]), stamp=0.0, start_time=now, planned_points=2, mode=mode)
    return Command(now, window, CommandedState(time=now, positions=np.zeros(1), velocities=np.zeros(1)), version, None)


def test_a_new_plan_goes_at_once_and_an_unchanged_one_at_the_period():
    schedule = SendSchedule(0.05, while_holding=False)
    first = command(0.0, 1, "running")
    assert schedule.due(first)
    schedule.sent(first)
    assert not schedule.due(command(0.0125, 1, "running"))
    assert schedule.due(command(0.0125, 2, "running"))  # a chunk merged: the new plan goes now
    assert schedule.due(command(0.0125, 1, "stopping"))  # a mode change too
    assert schedule.due(command(0.05, 1, "running"))
    schedule.sent(command(0.05, 1, "holding"))
    assert not schedule.due(command(10.0, 1, "holding"))  # at rest: the last window already ends here
    schedule.forget()
    assert schedule.due(command(10.0, 1, "holding"))  # after an activation everything starts afresh
    streaming = SendSchedule(0.05, while_holding=True)  # the topic: a hold is streamed at the period
    streaming.sent(command(0.0, 1, "holding"))
    assert not streaming.due(command(0.025, 1, "holding")) and streaming.due(command(0.05, 1, "holding"))


@given(steps=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["running", "holding", "starved"])),
                      min_size=1, max_size=60), period=st.sampled_from([0.0, 0.025, 0.05, 0.1]),
       while_holding=st.booleans())
def test_moving_plans_are_never_left_unsent_longer_than_the_period(steps, period, while_holding):
    schedule, tick = SendSchedule(period, while_holding), 0.0125
    last_sent, previous = None, None
    for i, (version, mode) in enumerate(steps):
        now = i * tick
        cmd = command(now, version, mode)
        due = schedule.due(cmd)
        if period == 0.0 or previous is None or previous != (version, mode):
            assert due  # every tick at period 0; a changed plan or mode always
        if due:
            schedule.sent(cmd)
            last_sent = now
        elif mode != "holding" or while_holding:
            assert now - last_sent < period - 1e-9
        previous = (version, mode)
