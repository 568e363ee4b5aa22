"""Build a training dataset from recorded episodes (rosbag2 directories of `dream-vla-ros record`), or merge datasets.

  build BAGS... --out DIR   time-align cameras and joints at the policy rate, derive action targets from the
                            action source, compute normalisation statistics, split train/validation by episode,
                            and write the dataset format the simulation demos use (docs/dataset_format.md),
                            with report.json and report.md. Unusable bags are refused with their reasons.
  merge DATASETS... --out DIR
                            one dataset from several with the same joints, dt and cameras (episode files
                            hard-linked, statistics recomputed, repeated (task, seed) episodes skipped).

Run 'dream-vla-ros dataset build --help' (or merge --help) for the options. See docs/recording.md for the whole path
(teleoperate -> record -> dataset -> train -> export -> deploy).
"""

from __future__ import annotations

import argparse
import json
import sys

BUILD_HELP = """Build a dataset from recorded episodes.

BAGS are episode directories (OUT/episode_NNNNNN) or recordings directories (every episode in them, also
those left in incomplete/, which are refused with the reason). Each episode becomes one dataset episode:

  frames      a grid at --rate Hz from the latest first message to the earliest last message of the camera
              and joint-state streams; per frame the newest image per camera and the newest joint state
              stamped at or before the frame time (header stamps)
  actions     the joint-position target for frame time + dt: the commanded JointTrajectory messages replayed
              with JointTrajectoryController semantics (trajectory source), or the leader arm's joint
              positions interpolated (leader source); the source and topics come from the episode record
  trimmed     leading frames before the targets first move (--no-trim-idle keeps them)
  statistics  per-joint mean/std/min/max/q01/q99 of proprio and actions in meta.json (the trainer's
              normalisation)
  split       train/validation by episode, stratified by task (--val-fraction, --seed: the split
              `dream-vla-ros train` makes with the same values)

An episode is refused, with every reason found, for: an unreadable or incomplete bag, missing or empty
camera / joint-state / action topics, a gap longer than --max-gap in a camera or joint-state stream,
joint-name mismatches (joint states lacking dataset joints, commands naming others, joints without an
action, another episode's joint set or camera size), fewer than --min-frames frames, more than
--max-misaligned of frames with an image older than --max-image-age, no motion, no instruction.

examples:
  dream-vla-ros dataset build data/bags --out data/my_arm
  dream-vla-ros dataset build data/bags/episode_000003 data/bags/episode_000007 --out data/two --overwrite
  dream-vla-ros dataset build data/bags --out data/my_arm --rate 40 --image-size 128 --camera scene=/scene/image_raw
  dream-vla-ros dataset build data/teleop --out data/leader --action-source leader \\
      --action-topic /leader/joint_states --leader-joints l_j0,l_j1,l_j2,l_j3,l_j4,l_j5,l_gripper
then: dream-vla-ros train --dataset data/my_arm --out runs/my_arm --init models/metaworld_mt10 --steps 5000
"""

MERGE_HELP = """Merge datasets (`collect` runs, `dataset build` outputs) into one.

The datasets must have the same joint names, dt and cameras. Episode files are hard-linked where the
filesystem allows (else copied) and renumbered in the order given; normalisation statistics are recomputed
over all episodes. An episode whose (task, seed) an earlier dataset already holds is skipped. Phrasings are
united per task; one that is held out in a dataset and trained on in another is refused.

examples:
  dream-vla-ros collect --out data/mt10_b --episodes-per-task 100 --seed 2000
  dream-vla-ros dataset merge data/mt10 data/mt10_b --out data/mt10_all
"""


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    build = sub.add_parser("build", help="build a dataset from recorded episodes", description=BUILD_HELP,
                           formatter_class=_Formatter)
    build.add_argument("bags", nargs="+", metavar="BAGS", help="episode or recordings directories")
    build.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    build.add_argument("--rate", type=float, default=40.0, metavar="HZ",
                       help="policy rate: frames per second; a model's dt must be a multiple of 1/rate (default: 40)")
    build.add_argument("--camera", action="append", default=[], metavar="NAME=TOPIC",
                       help="dataset camera and its topic (repeatable; default: the episode record's cameras)")
    build.add_argument("--joint-states", default="", metavar="TOPIC", help="joint-state topic (default: as recorded)")
    build.add_argument("--action-source", default="", choices=["", "trajectory", "leader"],
                       help="action source (default: as recorded)")
    build.add_argument("--action-topic", action="append", default=[], metavar="TOPIC",
                       help="action topic (repeatable; default: as recorded)")
    build.add_argument("--joints", type=_list, default=(), metavar="A,B,...",
                       help="dataset joints in column order (default: the first joint state's names)")
    build.add_argument("--leader-joints", type=_list, default=(), metavar="A,B,...",
                       help="the leader's joint names in dataset joint order (default: the same names)")
    build.add_argument("--image-size", type=int, default=0, metavar="PX",
                       help="resize so the shorter image side is PX, aspect kept (default: 0 = as recorded)")
    build.add_argument("--max-gap", type=float, default=0.25, metavar="S",
                       help="refuse episodes with a longer gap in a camera or joint-state stream (default: 0.25)")
    build.add_argument("--max-image-age", type=float, default=0.1, metavar="S",
                       help="frames whose newest image is older are misaligned (default: 0.1)")
    build.add_argument("--max-misaligned", type=float, default=0.1, metavar="FRACTION",
                       help="refuse episodes with a larger fraction of misaligned frames (default: 0.1)")
    build.add_argument("--min-frames", type=int, default=10, metavar="N", help="refuse shorter episodes (default: 10)")
    build.add_argument("--no-trim-idle", action="store_true", help="keep the frames before the first motion")
    build.add_argument("--idle-tolerance", type=float, default=1e-3, metavar="RAD",
                       help="targets moving less than this count as idle (default: 0.001)")
    build.add_argument("--interpolate-from-desired-state", action="store_true",
                       help="the controller starts new trajectories from the commanded state (JTC setting)")
    build.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                       help="fraction of each task's episodes held out for validation (default: 0.1)")
    build.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    build.add_argument("--task", default="", help="task label of every episode (default: as recorded)")
    build.add_argument("--instruction", default="", help="instruction of every episode (default: as recorded)")
    build.add_argument("--allow-incomplete", action="store_true",
                       help="accept episodes closed on shutdown (interrupted) or salvaged after a crash")
    build.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    build.add_argument("--strict", action="store_true", help="exit with status 1 when any bag was refused")
    build.add_argument("--json", action="store_true", help="print the report as one JSON object")
    merge = sub.add_parser("merge", help="merge datasets into one", description=MERGE_HELP,
                           formatter_class=_Formatter)
    merge.add_argument("datasets", nargs="+", metavar="DATASETS", help="dataset directories, in order")
    merge.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    merge.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's line breaks (defaults are written into each option's help)."""


def main(args: argparse.Namespace) -> int:
    if args.action == "merge":
        from dream_vla_ros.train.dataset_merge import merge_datasets

        merge_datasets(args.datasets, args.out, overwrite=args.overwrite)
        return 0
    from dream_vla_ros.train.bag_config import BuildConfig
    from dream_vla_ros.train.bag_dataset import build_dataset
    from dream_vla_ros.train.bag_report import markdown_report

    config = BuildConfig(
        out=args.out, rate=args.rate, cameras=tuple(args.camera), joint_states_topic=args.joint_states,
        action_source=args.action_source, action_topics=tuple(args.action_topic), joint_names=args.joints,
        leader_joint_names=args.leader_joints, image_size=args.image_size, max_gap=args.max_gap,
        max_image_age=args.max_image_age, max_misaligned=args.max_misaligned, min_frames=args.min_frames,
        trim_idle=not args.no_trim_idle, idle_tolerance=args.idle_tolerance,
        interpolate_from_desired_state=args.interpolate_from_desired_state, val_fraction=args.val_fraction,
        seed=args.seed, task=args.task, instruction=args.instruction, allow_incomplete=args.allow_incomplete,
        overwrite=args.overwrite,
    )
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    result = build_dataset(args.bags, config, log=log)
    if args.json:
        print(json.dumps(result.report))
    else:
        print(markdown_report(result.report), end="")
    if result.meta is None:
        print(f"dream-vla-ros dataset build: no usable episode; nothing written to {args.out}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"wrote {len(result.meta.episodes)} episodes ({result.meta.num_frames} frames) to {args.out} "
              f"(report: {args.out}/report.md)")
    return 1 if args.strict and result.report["refused"] else 0
