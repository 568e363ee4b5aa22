"""Record scripted-expert demonstrations on the simulated joint-position arm into a dataset.

Runs Meta-World's scripted expert of each task, records the arm's joint positions as joint-position
targets, replays them through the joint-position controller while rendering, and keeps the episodes whose
replay succeeds. Episodes carry a train phrasing of their task as instruction. The dataset format is
described in docs/dataset_format.md (and dream_vla_ros.train.dataset).

examples:
  dream-vla-ros collect --out data/mt10 --episodes-per-task 50 --workers 2
  dream-vla-ros collect --out data/small --tasks reach,push --episodes-per-task 5 --image-size 96
  dream-vla-ros collect --out data/two_cams --camera corner,gripperPOV
"""

from __future__ import annotations

import argparse


def add_demo_arguments(parser: argparse.ArgumentParser, image_size: int) -> None:
    """The arguments that choose demonstrations (shared with ``record expert``, so both pick the same ones)."""
    parser.add_argument("--tasks", default="mt10", help="'mt10' or a comma list of task names")
    parser.add_argument("--episodes-per-task", type=int, default=50, help="successful demonstrations per task")
    parser.add_argument("--image-size", type=int, default=image_size, metavar="PX", help="square image size")
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--max-attempts", type=int, default=10, help="seeds tried per demonstration")
    parser.add_argument("--camera", default="corner", help="camera name, or a comma list of cameras (corner, "
                        "corner2, corner3, corner4, topview, behindGripper, gripperPOV)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_cameras(text: str) -> tuple[str, ...]:
    """``--camera`` -> camera names (the simulated arm's configs check that they exist)."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset directory to create")
    add_demo_arguments(parser, image_size=128)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1: in this process)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")


def main(args: argparse.Namespace) -> int:
    import time

    from dream_vla_ros.sim.collect import CollectConfig, collect
    from dream_vla_ros.sim.joint_arm import CONTROL_DT, JOINT_NAMES, SimArmConfig
    from dream_vla_ros.sim.tasks import parse_tasks, phrasing_table
    from dream_vla_ros.train.dataset import DatasetWriter

    cameras = parse_cameras(args.camera)
    tasks = parse_tasks(args.tasks)
    arm = SimArmConfig(task=tasks[0], cameras=cameras, width=args.image_size, height=args.image_size)
    config = CollectConfig(
        tasks=tasks,
        episodes_per_task=args.episodes_per_task,
        workers=args.workers,
        seed=args.seed,
        max_attempts=args.max_attempts,
        arm=arm,
    )
    writer = DatasetWriter(
        args.out,
        joint_names=JOINT_NAMES,
        dt=CONTROL_DT,
        cameras=dict.fromkeys(cameras, (arm.height, arm.width)),
        phrasings=phrasing_table(),
        source={
            "generator": "dream-vla-ros collect",
            "simulator": "metaworld (joint-position Sawyer)",
            "expert": "metaworld.policies scripted experts, replayed through joint-position targets",
            "seed": config.seed,
            "episodes_per_task": config.episodes_per_task,
            "max_attempts": config.max_attempts,
            "hold_steps": config.hold_steps,
            "gripper_unit": "-1 open .. +1 closed",
        },
        overwrite=args.overwrite,
    )
    start = time.perf_counter()
    entries, failed, attempts = [], [], 0
    complete = interrupted = False
    try:
        for result in collect(config, writer.write_record, progress=not args.no_progress):
            attempts += result.attempts
            if result.stored is None:
                failed.append(f"{result.job.task} #{result.job.demo}")
            else:
                entries.append(result.stored)
        complete = True
    except KeyboardInterrupt:  # Ctrl-C or a deadline's SIGINT: keep what was collected
        interrupted = True
    finally:
        if entries:
            meta = writer.finalize(entries, complete=complete and not failed)
    wall = time.perf_counter() - start
    if not entries:
        print("interrupted before a demonstration succeeded; nothing written" if interrupted
              else "no demonstration succeeded; nothing written")
        return 130 if interrupted else 1
    size = sum(p.stat().st_size for p in (writer.root / "episodes").glob("*.npz"))
    print(
        f"wrote {len(entries)} episodes ({meta.num_frames} frames, {size / 1e6:.1f} MB,"
        f" {size / max(meta.num_frames, 1) / 1e3:.2f} kB/frame) to {writer.root} in {wall:.1f} s;"
        f" {attempts} attempts" + ("; interrupted, marked incomplete" if interrupted else "")
    )
    if interrupted:
        return 130
    if failed:
        print(f"no successful demonstration within --max-attempts for: {', '.join(failed)}")
        return 1
    return 0
