"""Check goals against a model the way the policy node does: accepted or refused, the confidence (best match
with the instructions the model was trained on) and the nearest known instruction, as one JSON object per goal.

examples:
  dream-vla-ros goal-check --model metaworld_mt10 "please open the drawer"
  dream-vla-ros goal-check --model metaworld_mt10 "make me a coffee" "shut the drawer"
  dream-vla-ros goal-check --model runs/my_model --min-confidence 0.5 "slide the window to the left"
  dream-vla-ros goal-check --model metaworld_mt10 --roc --unrelated my_goals.txt --plot roc.png

--roc prints how the threshold trades accepting the model's task phrasings (training, held-out and fresh
generated ones) against refusing unrelated goals (a built-in list and, with --unrelated, one goal per line).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("goals", nargs="*", metavar="GOAL", help="goal text (quote it)")
    parser.add_argument("--roc", action="store_true", help="print the threshold's ROC table (Markdown)")
    parser.add_argument("--unrelated", default="", metavar="FILE", help="--roc: more goals to refuse, one a line")
    parser.add_argument("--plot", default="", metavar="PNG", help="--roc: also write the ROC curve")
    parser.add_argument("--model", default="metaworld_mt10", help="model directory or shipped model name")
    parser.add_argument("--min-confidence", type=float, default=-1.0,
                        help="threshold (-1: the model's measured default, as policy_node's min_goal_confidence)")


def main(args: argparse.Namespace) -> int:
    from dream_vla_ros.engines.base import ModelMetadata
    from dream_vla_ros.paths import resolve_model
    from dream_vla_ros.policy.config import model_config_from_mapping, read_checkpoint_config
    from dream_vla_ros.policy.goals import GoalScorer

    config = model_config_from_mapping(read_checkpoint_config(resolve_model(args.model))["model"])
    meta = ModelMetadata.from_model_config(config)  # what the node sees (no weights, no torch)
    threshold = meta.goals.min_confidence if args.min_confidence == -1.0 else args.min_confidence
    scorer = GoalScorer(meta.goals.known, threshold, meta.max_goal_tokens)
    for goal in args.goals:
        verdict = scorer.verdict(goal)
        print(json.dumps({**verdict.to_dict(), "checked": bool(meta.goals.known), "threshold": threshold}))
    if args.roc:
        from pathlib import Path

        from dream_vla_ros.errors import ConfigError
        from dream_vla_ros.evaluation.goal_report import goal_sets, roc_report

        if not meta.goals.known:
            raise ConfigError(f"{args.model}: the model records no known instructions (nothing to measure)")
        lines = Path(args.unrelated).read_text().splitlines() if args.unrelated else []
        extra = [g.strip() for g in lines if g.strip()]
        accept, refuse = goal_sets(scorer, extra)
        print(roc_report(scorer, accept, refuse, Path(args.plot) if args.plot else None))
    elif not args.goals:
        print("nothing to check: give goals or --roc (see --help)")
        return 2
    return 0
