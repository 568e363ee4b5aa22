"""Soak: the whole graph in closed loop for many minutes, with two 30 Hz cameras and 500 Hz joint states.

The ``sim_arm`` graph (simulated arm with its two 30 Hz cameras, policy node with the shipped model, chunk
executor; each its own process, started like ``dream-vla-ros up sim_arm``) runs seeded episodes back to back
through ``--tasks`` (default three, so every scene is built within the first minute), each with its
instruction as the goal. The arm publishes its joint states on
``/sim/joint_states``; a relay process republishes the newest one on ``/joint_states`` at 500 Hz (its own
stamp kept, so staleness means what it means), the load a real arm's driver puts on both nodes.

Figures:

- ``missed_tick_percent``: control ticks the executor counted as missed (its timer late by more than half a
  period) in per cent of the ticks due over the run (wall time / control period);
- ``tick_jitter_p99_ms``: p99 of how late the executor's control ticks started against their schedule, over
  every tick of the run (its /diagnostics value ``tick lateness p99_ms``; windows do not go out every tick,
  ``chunk_executor.topic_period``, so their arrival intervals do not measure the ticks);
- ``rss_growth_percent``: per node, resident memory at the end vs. at the end of the first minute (of the
  first half for runs shorter than two minutes);
- ``lag_events``: times the simulation fell behind the wall clock (its /diagnostics counter);
- ``real_time_factor``: simulated seconds per wall second over the run (physics steps x 12.5 ms; the scene
  rebuild of each reset counts as wall time without simulated time);
- ``seconds``: the measured wall time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from dream_vla_ros.benchmarks import standalone_main
from dream_vla_ros.benchmarks.closed_loop import (
    add_graph_arguments,
    counter_change,
    run_graph,
    session_overrides,
)
from dream_vla_ros.process_stats import growth_percent

SIM_TOPIC = "/sim/joint_states"
RELAY_RATE = 500.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration (min)")
    parser.add_argument("--relay-rate", type=float, default=RELAY_RATE, help="joint-state rate seen by the nodes (Hz)")
    add_graph_arguments(parser)
    parser.set_defaults(tasks="reach,push,pick-place")
    parser.add_argument("--role", choices=["relay"], help=argparse.SUPPRESS)


def _relay(args: argparse.Namespace) -> dict[str, Any]:
    """Republish the newest message of SIM_TOPIC on /joint_states at ``relay_rate`` Hz, unchanged.

    Like a driver written in C++, the relay costs little: no executor (the newest sample is polled, see
    ``nodes/polling.py``) and no (de)serialisation (it is taken and republished as CDR bytes)."""
    import rclpy
    from sensor_msgs.msg import JointState

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.nodes.polling import PolledInputs

    rclpy.init()
    node = rclpy.create_node("joint_state_relay")
    inputs = PolledInputs(node)
    source = inputs.subscribe(JointState, SIM_TOPIC, qos.SENSOR, raw=True)
    publisher = node.create_publisher(JointState, "/joint_states", qos.SENSOR)
    period, sent, latest = 1.0 / args.relay_rate, 0, None
    due = time.monotonic()
    try:
        while rclpy.ok():
            latest = source.take_newest() or latest
            if latest is not None:
                publisher.publish(latest)
                sent += 1
            due = max(due + period, time.monotonic() - period)  # never burst to catch up
            time.sleep(max(0.0, due - time.monotonic()))
    except (KeyboardInterrupt, Exception):  # noqa: BLE001 - external shutdown ends the relay
        pass
    finally:
        inputs.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return {"sent": sent}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.role == "relay":
        return _relay(args)
    from dream_vla_ros.sim.joint_arm import CONTROL_DT

    seconds = args.minutes * 60.0
    baseline = 60.0 if seconds >= 120.0 else seconds / 2.0
    overrides = session_overrides(args, {"sim_arm": {"joint_states_topic": SIM_TOPIC}})

    def start_relay(session) -> None:
        session.start_process("joint_state_relay", [sys.executable, "-m", "dream_vla_ros.benchmarks.soak",
                                                    "--role", "relay", "--relay-rate", str(args.relay_rate)])

    result = run_graph(args, overrides, seconds, marks=(baseline,), on_start=start_relay)
    samples = result["samples"]
    base, end = samples[1], samples[-1]
    first, last = result["counters"]
    missed = counter_change(first, last, "chunk_executor", "missed_ticks")
    steps = counter_change(first, last, "sim_arm", "steps")
    wall = result["seconds"]
    due = wall / result["control_period"]  # ticks the control timer owed over the run
    return {
        "missed_tick_percent": round(100.0 * missed / due, 4) if due > 0 else math.nan,
        "tick_jitter_p99_ms": round(last.get("chunk_executor", {}).get("tick lateness p99_ms", math.nan), 3),
        "rss_growth_percent": {node: round(growth_percent(base[node], end[node]), 2) for node in end},
        "lag_events": counter_change(first, last, "sim_arm", "lag_events"),
        "real_time_factor": round(steps * CONTROL_DT / wall, 4) if wall > 0 else math.nan,
        "seconds": round(wall, 1),
        "rss_mb": {node: round(end[node].rss_kb / 1024, 1) for node in end},
        "joint_state_rate_hz": last.get("chunk_executor", {}).get("joint_states rate_hz", math.nan),
        "episodes": result["episodes"],
    }


def summary(result: dict[str, Any]) -> str:
    growth = ", ".join(f"{node} {value:+.2f} %" for node, value in result["rss_growth_percent"].items())
    return "\n".join([
        f"soak of {result['seconds']:.0f} s, {result['episodes']} episodes, joint states at "
        f"{result['joint_state_rate_hz']:.0f} Hz at the executor",
        f"missed control ticks {result['missed_tick_percent']:.3f} % (goal < 1 %), tick jitter p99 "
        f"{result['tick_jitter_p99_ms']:.2f} ms",
        f"RSS growth after the first minute: {growth} (goal < 5 % each)",
        f"lag events {result['lag_events']:g} (goal 0), real-time factor {result['real_time_factor']:.3f}",
    ])


def main(argv: list[str] | None = None) -> int:
    return standalone_main(argv, prog="dream-vla-ros bench soak", description=__doc__,
                           add_arguments=add_arguments, run=run, summary=summary)


if __name__ == "__main__":
    raise SystemExit(main())
