"""Evaluate a model closed loop through ROS 2 on the simulated arm (or replay the scripted experts through it).

Starts the sim_arm, policy_node and chunk_executor nodes of config/sim_arm.yaml as separate processes in a
private ROS domain, runs seeded episodes (episode i of every task uses seed SEED + i; the default 100000 keeps
evaluation scenes apart from the training demonstrations), and reports per-task success, mean steps, the
recurrent-core iterations k (mean and histogram) and the observation-to-chunk latency. Progress goes to
stderr; --json prints one JSON object on stdout. results.json, results.md and plots go to --out.

Time: every node runs on the simulated arm's /clock at a real-time factor this host sustains, chosen from
measured CPU headroom (an episode that still lags is run again slower), so a slow or busy machine slows the
whole loop down instead of corrupting it; --real-time-factor R fixes the factor; --real-time-factor 1
--wall-clock runs on the wall clock as a robot does (docs/evaluation.md). The factor, the lag events (0, or
the result says it does not count) and the host go into the results.

examples:
  dream-vla-ros eval --model models/metaworld_mt10 --tasks mt10 --episodes 20 --json
  dream-vla-ros eval --model metaworld_mt10 --episodes 20 --phrasings heldout --out runs/eval/heldout
  dream-vla-ros eval --model metaworld_mt10 --episodes 10 --k-sweep
  dream-vla-ros eval --model metaworld_mt10 --episodes 5 --delay-sweep --json
  dream-vla-ros eval --model metaworld_mt10 --episodes 20 --real-time-factor 1 --wall-clock
  dream-vla-ros eval --model metaworld_mt10 --episodes 20 --controller-interface action --json
  dream-vla-ros eval --expert --tasks mt10 --episodes 5
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dream_vla_ros.evaluation.config import DEFAULT_SEED
    from dream_vla_ros.nodes.executor_config import CONTROLLER_INTERFACES

    parser.add_argument("--model", default="", metavar="DIR", help="model directory or shipped model name")
    parser.add_argument("--tasks", default="mt10", help="'mt10' or a comma list of task names")
    parser.add_argument("--episodes", type=int, default=20, metavar="N", help="episodes per task")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of episode 0 (episode i: seed + i)")
    parser.add_argument("--phrasings", choices=("train", "heldout"), default="train",
                        help="instruction phrasings: those of the training data or the held-out ones")
    parser.add_argument("--controller-interface", choices=CONTROLLER_INTERFACES, default="topic",
                        help="how the executor commands the arm: topic (JointTrajectory), action "
                             "(FollowJointTrajectory goals) or servo (JointJog through a MoveIt Servo stand-in); "
                             "action and servo need control_msgs (see docs/moveit.md)")
    parser.add_argument("--k-sweep", action="store_true",
                        help="evaluate fixed k = 1, 2, 4, 8, K_max and adaptive halting")
    parser.add_argument("--delay-sweep", action="store_true",
                        help="evaluate with each chunk held back by 0, 50, 100, 200 and 300 ms (policy_node "
                             "added_delay): success against latency")
    parser.add_argument("--delays", default="", metavar="MS,MS",
                        help="the delays of --delay-sweep in ms (default 0,50,100,200,300)")
    parser.add_argument("--delay-jitter", type=float, default=0.0, metavar="MS",
                        help="each added delay is drawn uniformly from delay +- this (ms)")
    parser.add_argument("--real-time-factor", type=float, default=0.0, metavar="R",
                        help="simulated seconds per wall second (default 0: chosen from the host's measured "
                             "headroom, so that no lag events happen)")
    parser.add_argument("--wall-clock", action="store_true",
                        help="run every node on the wall clock, as on a robot (needs --real-time-factor 1)")
    parser.add_argument("--expert", action="store_true",
                        help="replay the scripted experts' joint targets through the arm's trajectory topic")
    parser.add_argument("--max-steps", type=int, default=500, help="physics steps (12.5 ms) per episode")
    parser.add_argument("--config", default="sim_arm", help="params file describing the graph (name or path)")
    parser.add_argument("--device", default="cpu", help="policy backend device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the policy backend")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: random 120..229)")
    parser.add_argument("--out", default="", metavar="DIR",
                        help="directory for results.json, results.md and plots (default runs/eval/<name>)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--verbose", action="store_true", help="echo the nodes' output")


def _default_out(args: argparse.Namespace) -> str:
    from pathlib import Path

    name = "expert" if args.expert else Path(args.model.rstrip("/")).name or "model"
    suffix = "_ksweep" if args.k_sweep else ("_delaysweep" if args.delay_sweep else "")
    suffix += "_wallclock" if args.wall_clock else ""
    interface = "" if args.controller_interface == "topic" else f"_{args.controller_interface}"
    return f"runs/eval/{name}_{args.phrasings}{interface}{suffix}"


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dream_vla_ros.errors import ConfigError
    from dream_vla_ros.evaluation import report, runner
    from dream_vla_ros.evaluation.config import ADAPTIVE, EvalConfig
    from dream_vla_ros.evaluation.pacing import PacingConfig
    from dream_vla_ros.sim.tasks import parse_tasks

    runner.interrupt_on_sigterm()
    if args.expert and (args.k_sweep or args.delay_sweep):
        raise ConfigError("--k-sweep and --delay-sweep evaluate a model; they do not apply to --expert")
    if args.k_sweep and args.delay_sweep:
        raise ConfigError("choose one of --k-sweep and --delay-sweep")
    if args.delays and not args.delay_sweep:
        raise ConfigError("--delays goes with --delay-sweep")
    pacing = PacingConfig(real_time_factor=args.real_time_factor, wall_clock=args.wall_clock)
    config = EvalConfig(
        model=args.model, tasks=parse_tasks(args.tasks), episodes=args.episodes, seed=args.seed,
        phrasings=args.phrasings, controller_interface=args.controller_interface, config=args.config,
        max_steps=args.max_steps, threads=args.threads, device=args.device, expert=args.expert,
        domain_id=args.domain_id, pacing=pacing, added_delay_jitter=args.delay_jitter / 1e3,
    )
    out = Path(args.out or _default_out(args))
    echo = sys.stderr if args.verbose else None
    if args.expert:
        result = runner.evaluate_expert(config, echo=echo)
    elif args.k_sweep:
        result = runner.evaluate_k_sweep(config, out, echo=echo)
    elif args.delay_sweep:
        delays = parse_delays(args.delays) if args.delays else runner.DELAY_SWEEP_MS
        result = runner.evaluate_delay_sweep(config, out, delays, echo=echo)
    else:
        result = runner.evaluate_policy(config, ADAPTIVE, out, echo=echo)
    result["files"] = report.write_outputs(result, out)
    if result.get("lag_events"):
        print(report.lag_warning(result), file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "episodes"}))
    else:
        print(report.markdown_report(result))
        print(f"written: {', '.join([result['files']['markdown'], *result['files']['plots']])}")
    return 0


def parse_delays(text: str) -> tuple[float, ...]:
    """'0,50,100' -> (0.0, 50.0, 100.0) milliseconds."""
    from dream_vla_ros.errors import ConfigError

    try:
        delays = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--delays: expected comma-separated milliseconds, got {text!r}") from None
    if not delays or any(not 0.0 <= d <= 10_000.0 for d in delays):
        raise ConfigError(f"--delays: expected delays in [0, 10000] ms, got {text!r}")
    return delays
