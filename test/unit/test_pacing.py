"""Choosing the real-time factor of a simulated evaluation from measured headroom (ROS-free)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.evaluation.pacing import (
    LoadMeter,
    LoadSample,
    Pacer,
    PacingConfig,
    host_busy_seconds,
    sustainable_factor,
)

AUTO = PacingConfig()


def sample(graph: float, arm: float, others: float = 0.0, sim_s: float = 5.0, wall_s: float = 5.0) -> LoadSample:
    """A sample of a graph needing ``graph`` cores (``arm`` of them the arm) per unit of real-time factor."""
    return LoadSample(sim_s=sim_s, wall_s=wall_s, graph_cpu_s=graph * sim_s, sim_cpu_s=arm * sim_s,
                      other_cpu_s=others * wall_s)


def test_an_idle_fast_host_runs_in_real_time():
    assert sustainable_factor([sample(graph=0.6, arm=0.3)], cores=2, config=AUTO) == 1.0


def test_the_factor_follows_the_busiest_limit():
    # 1.4 cores of graph on 2 free cores at 70 %: 1.0; the arm at 0.85 of a core, 80 % allowed: 0.94
    assert sustainable_factor([sample(1.4, 0.85)], 2, AUTO) == pytest.approx(0.8 / 0.85)
    # another program keeps one core busy: 0.7 * 1 / 1.4 = 0.5
    assert sustainable_factor([sample(1.4, 0.85, others=1.0)], 2, AUTO) == pytest.approx(0.5)


@given(graph=st.floats(0.01, 8.0), arm_share=st.floats(0.05, 1.0), others=st.floats(0.0, 4.0),
       cores=st.integers(1, 16))
def test_the_factor_keeps_the_planned_load_within_its_targets(graph, arm_share, others, cores):
    arm = graph * arm_share
    factor = sustainable_factor([sample(graph, arm, others)], cores, AUTO)
    assert AUTO.min_factor <= factor <= 1.0
    if factor > AUTO.min_factor:
        free = max(cores - others, 0.25 * cores)
        assert graph * factor <= AUTO.target_load * free + 1e-9
        assert arm * factor <= AUTO.single_core_load + 1e-9


@given(lags=st.lists(st.integers(0, 5), min_size=1, max_size=30), graph=st.floats(0.1, 3.0))
def test_auto_pacing_never_speeds_up_and_retries_only_lagged_episodes(lags, graph):
    pacer = Pacer(AUTO, cores=2)
    previous = pacer.factor
    for attempt, lag in enumerate(lags):
        decision = pacer.after_episode(sample(graph, graph / 2), lag, attempt % (AUTO.max_retries + 1))
        assert decision.factor <= previous and decision.factor >= AUTO.min_factor
        assert not decision.retry or lag > 0
        if lag and previous > AUTO.min_factor and attempt % (AUTO.max_retries + 1) < AUTO.max_retries:
            assert decision.retry and decision.factor < previous and decision.reason
        previous = decision.factor


def test_a_lagged_episode_runs_again_slower_until_retries_run_out():
    pacer = Pacer(AUTO, cores=2)
    light = sample(0.2, 0.1)
    first = pacer.after_episode(light, lag_events=3, attempt=0)
    assert first.retry and first.factor == pytest.approx(0.7)
    assert pacer.after_episode(light, 0, attempt=1) == type(first)(0.7, False)
    last = pacer.after_episode(light, lag_events=1, attempt=AUTO.max_retries)
    assert not last.retry and "kept, flagged" in last.reason


def test_fixed_and_wall_clock_pacing_never_change_the_factor():
    for config in (PacingConfig(real_time_factor=0.5), PacingConfig(real_time_factor=1.0, wall_clock=True)):
        pacer = Pacer(config, cores=2)
        decision = pacer.after_episode(sample(5.0, 1.0, others=2.0), lag_events=4, attempt=0)
        assert decision.factor == config.real_time_factor and not decision.retry
    assert PacingConfig(real_time_factor=0.5).mode == "fixed" and AUTO.mode == "auto"
    with pytest.raises(ConfigError, match="real_time_factor"):
        PacingConfig(real_time_factor=-1.0)


def test_load_meter_reads_this_process_from_proc():
    if host_busy_seconds() is None:
        pytest.skip("no /proc on this system")
    meter = LoadMeter([os.getpid()], os.getpid())
    meter.begin()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU in this process
        pass
    measured = meter.end(sim_s=1.0)
    assert measured is not None and measured.sim_s == 1.0
    assert 0.2 <= measured.graph_cpu_s <= measured.wall_s + 0.05
    assert measured.sim_cpu_s == pytest.approx(measured.graph_cpu_s, abs=0.02)
    assert LoadMeter([2**22 + 7], None).end(1.0) is None  # no such process: no sample rather than a wrong one


def test_the_arm_load_is_its_busiest_thread_with_the_rasterizer_it_waits_for():
    from dream_vla_ros.evaluation.pacing import _busiest_chain

    threads = {(1, "python"): 0.1, (2, "python"): 0.5, (3, "llvmpipe-0"): 0.2, (4, "dds.shm.1"): 0.05}
    assert _busiest_chain(threads) == pytest.approx(0.7)
    assert _busiest_chain({}) is None
    if host_busy_seconds() is None:
        pytest.skip("no /proc on this system")
    meter = LoadMeter([os.getpid()], os.getpid())
    meter.begin()
    done, release = threading.Barrier(3), threading.Event()
    workers = [threading.Thread(target=_burn, args=(0.2, done, release)) for _ in range(2)]
    for worker in workers:
        worker.start()
    done.wait()  # two threads of 0.2 s each, still alive: the process used 0.4 s, its busiest thread 0.2 s
    measured = meter.end(sim_s=1.0)
    release.set()
    for worker in workers:
        worker.join()
    assert measured.graph_cpu_s >= 0.35
    assert 0.15 <= measured.sim_cpu_s <= 0.3


def _burn(seconds: float, done: threading.Barrier, release: threading.Event) -> None:
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass
    done.wait()
    release.wait()
