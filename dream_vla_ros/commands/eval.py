"""Evaluate a model closed loop through ROS 2 on the simulated arm (or replay the scripted experts through it).

Starts the sim_arm, policy_node and chunk_executor nodes of config/sim_arm.yaml as separate processes in a
private ROS domain, runs seeded episodes (episode i of every task uses seed SEED + i; the default 100000 keeps
evaluation scenes apart from the training demonstrations), and reports per-task success, mean steps, the
recurrent-core iterations k (mean and histogram) and the observation-to-chunk latency. Progress goes to
stderr; --json prints one JSON object on stdout. results.json, results.md and plots go to --out.

examples:
  dream-vla-ros eval --model models/metaworld_mt10 --tasks mt10 --episodes 20 --json
  dream-vla-ros eval --model metaworld_mt10 --episodes 20 --phrasings heldout --out runs/eval/heldout
  dream-vla-ros eval --model metaworld_mt10 --episodes 10 --k-sweep
  dream-vla-ros eval --model metaworld_mt10 --episodes 20 --controller-interface action --json
  dream-vla-ros eval --expert --tasks mt10 --episodes 5
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dream_vla_ros.train.evaluation import CONTROLLER_INTERFACES, DEFAULT_SEED

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
    suffix = "_ksweep" if args.k_sweep else ""
    interface = "" if args.controller_interface == "topic" else f"_{args.controller_interface}"
    return f"runs/eval/{name}_{args.phrasings}{interface}{suffix}"


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dream_vla_ros.errors import ConfigError
    from dream_vla_ros.sim.tasks import parse_tasks
    from dream_vla_ros.train import evaluation

    evaluation.interrupt_on_sigterm()
    if args.expert and args.k_sweep:
        raise ConfigError("--k-sweep evaluates a model; it does not apply to --expert")
    config = evaluation.EvalConfig(
        model=args.model, tasks=parse_tasks(args.tasks), episodes=args.episodes, seed=args.seed,
        phrasings=args.phrasings, controller_interface=args.controller_interface, config=args.config,
        max_steps=args.max_steps, threads=args.threads, device=args.device, expert=args.expert,
        domain_id=args.domain_id,
    )
    out = Path(args.out or _default_out(args))
    echo = sys.stderr if args.verbose else None
    if args.expert:
        result = evaluation.evaluate_expert(config, echo=echo)
    elif args.k_sweep:
        result = evaluation.evaluate_k_sweep(config, out, echo=echo)
    else:
        result = evaluation.evaluate_policy(config, evaluation.ADAPTIVE, out, echo=echo)
    result["files"] = evaluation.write_outputs(result, out)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "episodes"}))
    else:
        print(evaluation.markdown_report(result))
        print(f"written: {', '.join([result['files']['markdown'], *result['files']['plots']])}")
    return 0
