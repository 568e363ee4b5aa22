"""Chunk executor: smoothness, tracking and cost per tick, naive replacement against each merge rule.

A smooth synthetic reference motion (two sines per joint) is predicted by a simulated policy: each chunk is
the reference from its observation stamp on, plus a per-chunk offset and drift (``--noise``, rad) and a little
white noise, and arrives ``--delay`` +- ``--delay-jitter`` seconds after its observation. The policy runs one
inference at a time and re-plans every ``--replan-period`` seconds. The same chunk stream goes through:

- ``naive``: each arriving chunk replaces the previous one and is played from its first point on arrival
  (no latency compensation, no limits), linearly interpolated at the control rate;
- each merge rule of the ChunkExecutor (``replace``, ``crossfade`` linear and cosine, ``ensemble`` newest-
  and oldest-favoured), ticked at the control rate with ``--tick-jitter``.

Per variant, on the commanded positions at the control rate: ``tracking_error`` (RMS to the reference, rad,
after a 1 s warm-up), ``max_boundary_velocity_jump`` (largest change of the finite-difference velocity,
rad/s, within two ticks of a chunk arrival after the warm-up; the catch-up to the first chunk is not a
boundary) and ``mean_boundary_velocity_jump`` (its mean over arrivals), ``limit_violations`` (ticks where a
position, velocity or acceleration limit is exceeded on any joint), ``starvation_events`` and ``tick_us``
(mean cost of one tick in microseconds, re-planning after a chunk included, on the thread's CPU clock so
other load on the machine does not inflate it; ``tick_us_p99`` the slow ticks after a chunk; chunk merges
are reported apart as ``merge_us``). The executor bounds every velocity change by ``max_acceleration *
control_period``, so with noisy chunks the largest jump of every rule tends to sit at that bound.
``best_rule`` has the smallest boundary jump among the rules without violations (ties: the smaller mean
jump); ``boundary_jump_ratio`` is its jump over naive's (goal <= 0.1 with 0 violations).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

WARM_UP_S = 1.0
RULES = {
    "replace": {"rule": "replace"},
    "crossfade_linear": {"rule": "crossfade", "crossfade_shape": "linear"},
    "crossfade_cosine": {"rule": "crossfade", "crossfade_shape": "cosine"},
    "ensemble_newest": {"rule": "ensemble", "ensemble_favour": "newest"},
    "ensemble_oldest": {"rule": "ensemble", "ensemble_favour": "oldest"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated duration")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the motion and the policy noise")
    parser.add_argument("--joints", type=int, default=6, help="number of joints")
    parser.add_argument("--control-period", type=float, default=0.01, help="executor tick period, s")
    parser.add_argument("--chunk-dt", type=float, default=0.05, help="time between chunk points, s")
    parser.add_argument("--horizon", type=int, default=20, help="points per chunk")
    parser.add_argument("--delay", type=float, default=0.15, help="mean observation-to-arrival delay, s")
    parser.add_argument("--delay-jitter", type=float, default=0.05, help="uniform +- jitter of the delay, s")
    parser.add_argument("--replan-period", type=float, default=0.2, help="seconds between inference requests")
    parser.add_argument("--noise", type=float, default=0.01, help="per-chunk offset and drift of predictions, rad")
    parser.add_argument("--tick-jitter", type=float, default=0.002, help="lateness of a tick, uniform 0..this, s")
    parser.add_argument("--max-velocity", type=float, default=2.0, help="joint velocity limit, rad/s")
    parser.add_argument("--max-acceleration", type=float, default=10.0, help="joint acceleration limit, rad/s^2")


def _reference(rng, joints: int):
    import numpy as np

    amplitude = np.array([0.3, 0.15])[:, None] * rng.uniform(0.7, 1.0, (2, joints))
    frequency = np.stack([rng.uniform(0.15, 0.35, joints), rng.uniform(0.4, 0.7, joints)])
    phase = rng.uniform(0, 2 * np.pi, (2, joints))

    def reference(t):
        t = np.asarray(t, dtype=float)[..., None, None]
        return (amplitude * np.sin(2 * np.pi * frequency * t + phase)).sum(axis=-2)

    return reference


def _chunk_stream(args, reference, rng, names):
    """(arrival time, ActionChunk) of a policy that runs one inference at a time."""
    import numpy as np

    from dream_vla_ros.chunking import ActionChunk

    events = []
    steps = np.arange(1, args.horizon + 1)[:, None]
    request = 0.0
    while request < args.seconds:
        delay = args.delay + rng.uniform(-args.delay_jitter, args.delay_jitter)
        t0 = request
        error = rng.normal(0, args.noise, len(names)) + rng.normal(0, args.noise, len(names)) * steps / args.horizon
        white = rng.normal(0, args.noise / 5, (args.horizon, len(names)))
        positions = reference(t0 + args.chunk_dt * steps[:, 0]) + error + white
        events.append((t0 + delay, ActionChunk(names, t0, args.chunk_dt, positions)))
        request = max(request + args.replan_period, t0 + delay)
    return events


def _metrics(args, times, positions, reference, arrivals, limits) -> dict[str, Any]:
    import numpy as np

    period = args.control_period
    velocity = np.diff(positions, axis=0) / period  # velocity[i] between samples i and i + 1
    jump = np.abs(np.diff(velocity, axis=0)).max(axis=1)  # jump[i] changes at sample i + 1
    ticks = np.searchsorted(times, arrivals[arrivals >= WARM_UP_S])  # first sample at or after each arrival
    around = np.clip(ticks[:, None] + np.arange(-2, 3)[None, :], 0, len(jump) - 1)
    settled = times >= WARM_UP_S
    error = positions[settled] - reference(times[settled])
    lo, hi, vmax, amax = limits
    tol = 1e-6
    bad = (positions < lo - tol) | (positions > hi + tol)
    bad_tick = bad.any(axis=1)
    bad_tick[1:] |= (np.abs(velocity) > vmax * (1 + tol)).any(axis=1)
    bad_tick[2:] |= (np.abs(np.diff(velocity, axis=0)) / period > amax * (1 + tol)).any(axis=1)
    return {
        "tracking_error": float(np.sqrt(np.mean(error**2))),
        "max_boundary_velocity_jump": float(jump[around].max()) if len(around) else 0.0,
        "mean_boundary_velocity_jump": float(jump[around].max(axis=1).mean()) if len(around) else 0.0,
        "max_velocity_jump": float(jump.max()),
        "limit_violations": int(bad_tick.sum()),
    }


def _run_naive(args, events, reference, q0, times):
    import numpy as np

    positions = np.empty((len(times), len(q0)))
    cost_ns = 0
    starvation = 0
    active, arrival, exhausted = None, 0.0, False
    index = 0
    for k, t in enumerate(times):
        while index < len(events) and events[index][0] <= t:
            arrival, active = events[index]
            exhausted = False
            index += 1
        start = time.thread_time_ns()
        if active is None:
            positions[k] = q0
        else:
            s = (t - arrival) / active.dt  # point i plays at arrival + i * dt: no latency compensation
            last = active.positions.shape[0] - 1
            if s >= last and not exhausted:
                exhausted = True
                starvation += 1
            i = min(int(s), last - 1) if last > 0 else 0
            frac = min(max(s - i, 0.0), 1.0) if last > 0 else 0.0
            positions[k] = active.positions[i] + frac * (active.positions[min(i + 1, last)] - active.positions[i])
        cost_ns += time.thread_time_ns() - start
    return positions, starvation, cost_ns / len(times) / 1e3


def _run_rule(args, events, config, q0, times):
    import numpy as np

    from dream_vla_ros.chunking import ChunkExecutor

    executor = ChunkExecutor(config)
    executor.reset(0.0, q0)
    positions = np.empty((len(times), len(q0)))
    tick_ns, merge_ns = [], []
    index = 0
    for k, t in enumerate(times):
        while index < len(events) and events[index][0] <= t:
            arrival, chunk = events[index]
            start = time.thread_time_ns()
            executor.add_chunk(chunk, arrival)
            merge_ns.append(time.thread_time_ns() - start)
            index += 1
        start = time.thread_time_ns()
        executor.tick(t)
        tick_ns.append(time.thread_time_ns() - start)
        positions[k] = executor.state.positions
    stats = executor.stats
    return positions, stats, np.array(tick_ns) / 1e3, np.array(merge_ns) / 1e3


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from dream_vla_ros.chunking import ExecutorConfig, JointLimits, MergeConfig
    from dream_vla_ros.errors import ConfigError

    if args.joints < 1 or args.horizon < 1 or args.seconds <= WARM_UP_S or args.control_period <= 0:
        raise ConfigError("bench executor: needs --joints >= 1, --horizon >= 1, --seconds > 1, --control-period > 0")
    if not 0 <= args.tick_jitter < args.control_period:
        raise ConfigError("bench executor: --tick-jitter must be in [0, --control-period)")
    rng = np.random.default_rng(args.seed)
    names = tuple(f"joint_{i + 1}" for i in range(args.joints))
    reference = _reference(rng, args.joints)
    events = _chunk_stream(args, reference, rng, names)
    arrivals = np.array([arrival for arrival, _ in events])
    n_ticks = round(args.seconds / args.control_period)
    grid = np.arange(n_ticks) * args.control_period
    tick_times = grid + rng.uniform(0, args.tick_jitter, n_ticks)
    q0 = reference(0.0)
    bound = 1.0
    limits = JointLimits(
        position_min=(-bound,),
        position_max=(bound,),
        max_velocity=(args.max_velocity,),
        max_acceleration=(args.max_acceleration,),
    )
    limit_arrays = (-bound, bound, args.max_velocity, args.max_acceleration)

    naive_q, naive_starved, naive_us = _run_naive(args, events, reference, q0, tick_times)
    naive = _metrics(args, tick_times, naive_q, reference, arrivals, limit_arrays)
    naive.update(starvation_events=naive_starved, tick_us=round(naive_us, 2))

    rules: dict[str, dict[str, Any]] = {}
    for name, merge in RULES.items():
        config = ExecutorConfig(
            joint_names=names, limits=limits, control_period=args.control_period, merge=MergeConfig(**merge)
        )
        positions, stats, tick_us, merge_us = _run_rule(args, events, config, q0, tick_times)
        result = _metrics(args, grid, positions, reference, arrivals, limit_arrays)
        jump = result["max_boundary_velocity_jump"]
        result.update(
            starvation_events=stats.starvation_events,
            tick_us=round(float(tick_us.mean()), 2),
            tick_us_p99=round(float(np.quantile(tick_us, 0.99)), 2),
            merge_us=round(float(merge_us.mean()), 2) if merge_us.size else 0.0,
            limit_clamps=dict(stats.limit_clamps),
            chunks_accepted=stats.chunks_accepted,
            boundary_jump_ratio=jump / naive["max_boundary_velocity_jump"]
            if naive["max_boundary_velocity_jump"]
            else 0.0,
        )
        rules[name] = result

    clean = [n for n, r in rules.items() if r["limit_violations"] == 0] or list(rules)
    best = min(
        clean,
        key=lambda n: (round(rules[n]["max_boundary_velocity_jump"], 9), rules[n]["mean_boundary_velocity_jump"]),
    )
    return {
        "naive": naive,
        "rules": rules,
        "best_rule": best,
        "boundary_jump_ratio": rules[best]["boundary_jump_ratio"],
        "most_accurate_rule": min(clean, key=lambda n: rules[n]["tracking_error"]),
        "limit_violations": sum(r["limit_violations"] for r in rules.values()),
        "setup": {
            "seconds": args.seconds,
            "joints": args.joints,
            "control_period": args.control_period,
            "chunk_dt": args.chunk_dt,
            "horizon": args.horizon,
            "delay": args.delay,
            "delay_jitter": args.delay_jitter,
            "replan_period": args.replan_period,
            "noise": args.noise,
            "chunks": len(events),
            "max_velocity": args.max_velocity,
            "max_acceleration": args.max_acceleration,
        },
    }


def summary(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"{setup['chunks']} chunks of {setup['horizon']} x {setup['chunk_dt']} s, delay {setup['delay']} +- "
        f"{setup['delay_jitter']} s, re-planning every {setup['replan_period']} s, tick {setup['control_period']} s",
        f"{'variant':<18}{'track rad':>10}{'jump rad/s':>12}{'ratio':>8}{'violations':>12}{'starved':>9}{'tick us':>9}",
    ]
    naive = result["naive"]
    lines.append(
        f"{'naive':<18}{naive['tracking_error']:>10.4f}{naive['max_boundary_velocity_jump']:>12.3f}{1.0:>8.3f}"
        f"{naive['limit_violations']:>12}{naive['starvation_events']:>9}{naive['tick_us']:>9.1f}"
    )
    for name, r in result["rules"].items():
        lines.append(
            f"{name:<18}{r['tracking_error']:>10.4f}{r['max_boundary_velocity_jump']:>12.3f}"
            f"{r['boundary_jump_ratio']:>8.3f}{r['limit_violations']:>12}{r['starvation_events']:>9}{r['tick_us']:>9.1f}"
        )
    lines.append(
        f"best rule: {result['best_rule']} (jump ratio {result['boundary_jump_ratio']:.3f}, goal <= 0.1); "
        f"limit violations over all rules: {result['limit_violations']}"
    )
    return "\n".join(lines)
