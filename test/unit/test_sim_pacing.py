"""The simulated arm's physics clock (sim/pacing.py): wall-clock and simulated time, real-time factor, lag."""

from __future__ import annotations

import threading

import pytest

from dream_vla_ros.sim.pacing import Pacer

DT = 0.0125


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_wall_clock_ticks_are_stamped_with_the_wall_time_and_due_one_step_apart():
    clock = FakeClock()
    pacer = Pacer(DT, max_lag=0.1, clock=clock)
    assert pacer.now() == 1000.0
    assert pacer.next() == pytest.approx(DT)
    assert pacer.now() == pytest.approx(1000.0 + DT)
    clock.t += 0.5 * DT
    assert pacer.next() == pytest.approx(1.5 * DT)
    assert pacer.now() == pytest.approx(1000.0 + 2 * DT)


def test_a_small_delay_is_caught_up_and_a_large_one_skipped_as_a_lag_event():
    clock = FakeClock()
    pacer = Pacer(DT, max_lag=0.1, clock=clock)
    clock.t += 0.05  # behind, but within max_lag: run the missed ticks at once
    assert pacer.next() == 0.0 and pacer.lag_events == 0
    assert pacer.now() == pytest.approx(1000.0 + DT)
    clock.t += 0.5  # far behind: skip the missed time
    assert pacer.next() == 0.0 and pacer.lag_events == 1
    assert pacer.now() == pytest.approx(clock.t)  # never ahead of the wall clock, and not left behind it
    assert pacer.next() == pytest.approx(DT)


def test_simulated_time_starts_at_one_step_and_keeps_its_time_through_lag_and_reanchor():
    clock = FakeClock()
    pacer = Pacer(DT, max_lag=0.1, real_time_factor=2.0, use_sim_time=True, clock=clock)
    assert pacer.now() == DT
    assert pacer.next() == pytest.approx(DT / 2.0)  # twice as fast as the wall clock
    clock.t += 5.0
    assert pacer.next() == 0.0 and pacer.lag_events == 1
    assert pacer.now() == pytest.approx(3 * DT)  # no simulated time is skipped
    pacer.reanchor()
    assert pacer.now() == pytest.approx(3 * DT)
    assert pacer.next() == pytest.approx(DT / 2.0)


def test_the_real_time_factor_changes_at_the_next_tick():
    clock = FakeClock()
    pacer = Pacer(DT, max_lag=0.1, use_sim_time=True, clock=clock)
    pacer.next()
    pacer.real_time_factor = 0.5  # as a parameter change from another thread
    assert pacer.pace == 1.0
    assert pacer.next() == 0.0  # the schedule restarts at this tick, due now
    assert pacer.pace == 0.5
    assert pacer.next() == pytest.approx(2 * DT)  # the new pace
    assert pacer.now() == pytest.approx(4 * DT) and pacer.lag_events == 0  # simulated time runs on


def test_run_ticks_until_stopped_and_waits_between_ticks():
    clock = FakeClock()
    pacer = Pacer(0.001, max_lag=0.1, clock=clock)
    stop = threading.Event()
    ticks = []

    def tick() -> None:
        ticks.append(pacer.now())
        if len(ticks) == 3:
            stop.set()

    pacer.run(tick, stop)
    assert ticks == pytest.approx([1000.0, 1000.001, 1000.002])
