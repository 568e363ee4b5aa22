"""The simulated arm's episodes (sim/episode.py): reset sequence, success latch, truncation, reset hand-over."""

from __future__ import annotations

import threading

import pytest

from dream_vla_ros.sim.episode import (
    ACTIVE,
    OFFLINE,
    RESET,
    SETTLING,
    SUCCESS,
    TRUNCATED,
    EpisodeCycle,
    ResetRequests,
)

PAUSE = 0.25
CHOICE = {"task": "push", "seed": 7, "phrasing_split": "heldout", "phrasing_index": 1}


def begun(max_steps: int = 500, now: float = 10.0) -> EpisodeCycle:
    cycle = EpisodeCycle(PAUSE, max_steps)
    cycle.begin("push", 7, "push the puck", "heldout", 1, now)
    return cycle


def active(max_steps: int = 500, lag_events: int = 0) -> EpisodeCycle:
    cycle = begun(max_steps)
    assert cycle.settle(10.25)
    assert cycle.activate(10.5, lag_events) is not None
    return cycle


def test_reset_sequence_goes_offline_then_settles_then_activates_with_the_reset_event():
    cycle = begun()
    assert cycle.phase == OFFLINE and cycle.episode.number == 1
    assert not cycle.settle(10.2)
    assert cycle.settle(10.25) and cycle.phase == SETTLING
    assert cycle.activate(10.4, 0) is None and cycle.phase == SETTLING
    event = cycle.activate(10.5, 3)
    assert cycle.phase == ACTIVE
    assert event == {"event": RESET, "episode": 1, "task": "push", "seed": 7, "instruction": "push the puck",
                     "phrasing_split": "heldout", "phrasing_index": 1, "stamp": 10.5, "max_steps": 500}
    cycle.begin("reach", 0, "reach", "train", 0, 20.0)
    assert cycle.phase == OFFLINE and cycle.episode.number == 2 and cycle.count == 2


def test_success_ends_the_episode_once_with_its_steps_lag_events_and_distances():
    cycle = active(lag_events=2)
    assert cycle.step(10.5125, False, 0.3, 2, 1.0) is None
    assert cycle.step(10.525, False, 0.12345, 3, 1.0) is None
    event = cycle.step(10.5375, True, 0.2, 5, 0.5)
    assert event == {"event": SUCCESS, "episode": 1, "task": "push", "seed": 7, "steps": 3, "stamp": 10.5375,
                     "lag_events": 3, "real_time_factor": 0.5, "goal_distance": 0.2,
                     "closest_goal_distance": 0.1235}
    assert cycle.step(10.55, True, 0.2, 5, 0.5) is None  # latched: nothing more this episode
    assert cycle.episode.steps == 3


def test_truncation_at_max_steps_and_never_with_zero():
    cycle = active(max_steps=3)
    events = [cycle.step(10.5 + i * 0.0125, False, 0.1, 0, 1.0) for i in range(1, 6)]
    assert events[:2] == [None, None] and events[3:] == [None, None]
    assert events[2]["event"] == TRUNCATED and events[2]["steps"] == 3
    endless = active(max_steps=0)
    assert all(endless.step(11.0, False, 0.1, 0, 1.0) is None for _ in range(2000))


def test_no_episode_no_steps():
    assert EpisodeCycle(PAUSE, 10).step(1.0, True, 0.0, 0, 1.0) is None


def simulation(resets: ResetRequests, stop: threading.Event, started: list) -> threading.Thread:
    """A stand-in simulation thread: runs every reset asked for, numbering the episodes."""

    def run() -> None:
        while not stop.wait(0.001):
            request = resets.current
            if request is not None:
                started.append(request.task)
                resets.complete(request, {"event": RESET, "episode": len(started), "task": request.task})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_reset_request_answers_with_the_reset_event_once_the_episode_runs():
    resets, stop, started = ResetRequests(), threading.Event(), []
    resets.post(CHOICE)
    assert resets.current.task == "push" and resets.current.seed == 7
    thread = simulation(resets, stop, started)
    try:
        event, reason = resets.request(lambda: {**CHOICE, "task": "reach"}, timeout=5.0)
    finally:
        stop.set()
        thread.join()
    assert reason == "" and event == {"event": RESET, "episode": 2, "task": "reach"}
    assert started == ["push", "reach"] and resets.current is None


def test_a_reset_waits_for_the_one_in_progress_and_reads_the_choice_after_it():
    resets = ResetRequests()
    resets.post(CHOICE)
    first = resets.current
    choice = {"task": "push"}
    threading.Timer(0.05, lambda: (choice.update(task="reach"), resets.complete(first, {"n": 1}))).start()
    threading.Timer(0.3, lambda: resets.complete(resets.current, {"n": 2})).start()
    event, reason = resets.request(lambda: {**CHOICE, **choice}, timeout=5.0)
    assert (event, reason) == ({"n": 2}, "")
    assert first.result == {"n": 1}


@pytest.mark.parametrize(("earlier", "reason"), [(True, "an earlier reset did not finish in time"),
                                                 (False, "reset timed out (is the simulation running?)")])
def test_reset_timeouts(earlier, reason):
    resets = ResetRequests()
    if earlier:
        resets.post(CHOICE)
    assert resets.request(lambda: CHOICE, timeout=0.05) == (None, reason)


def test_a_failed_simulation_ends_the_waiting_reset_and_refuses_the_next():
    resets = ResetRequests()
    resets.post(CHOICE)
    waiting = resets.current
    resets.fail("RuntimeError: boom")
    assert waiting.done.is_set() and waiting.error == "simulation failed: RuntimeError: boom"
    assert resets.current is None
    assert resets.request(lambda: CHOICE, timeout=1.0) == (None, "simulation failed: RuntimeError: boom")
