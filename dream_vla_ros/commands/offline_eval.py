"""A model's loss on a dataset, without simulator or ROS: compare checkpoints on the same held-out episodes,
see which tasks fit worst, and measure how much a camera exposure change costs (--exposure).

The loss is the trainer's val_loss (the training objective at a fixed seed). --split val takes the episodes
that `train` held out (same --val-fraction and --seed as the training run); --split all every episode, for a
dataset the model never trained on (for example, bags recorded on your robot and built with `dataset build`).

examples:
  dream-vla-ros offline-eval --model models/metaworld_mt10 --dataset data/mt10_2cam_200
  dream-vla-ros offline-eval --model runs/my_arm --dataset data/my_arm_new --split all --exposure -16 -8 0 8 16
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--dataset", required=True, help="dataset directory (see docs/dataset_format.md)")
    parser.add_argument("--split", default="val", choices=["val", "all"],
                        help="val: the episodes training held out; all: every episode")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="the training run's --val-fraction")
    parser.add_argument("--seed", type=int, default=0, help="the training run's --seed (split and loss noise)")
    parser.add_argument("--samples", type=int, default=1024, help="frames evaluated, evenly spread")
    parser.add_argument("--exposure", type=int, nargs="+", default=[0], metavar="LEVEL",
                        help="grey-level offsets added to every pixel, one loss each (e.g. --exposure -8 0 8)")
    parser.add_argument("--batch-size", type=int, default=128, help="samples per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    from dream_vla_ros.train.offline_eval import OfflineEvalConfig, offline_eval, summary

    config = OfflineEvalConfig(
        model=args.model, dataset=args.dataset, split=args.split, val_fraction=args.val_fraction, seed=args.seed,
        samples=args.samples, exposure_levels=tuple(args.exposure), batch_size=args.batch_size,
    )
    result = offline_eval(config)
    print(json.dumps(result) if args.json else summary(result))
    return 0
