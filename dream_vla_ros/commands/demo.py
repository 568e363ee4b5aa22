"""The main demo: the simulated arm, the policy node and the chunk executor over real ROS 2, with the shipped
model completing a sequence of language goals.

Starts the graph of config/sim_arm.yaml as separate processes in a private ROS domain, then for each task
resets the simulated arm to a seeded episode, publishes the task's instruction as the language goal on /goal,
and waits until the arm reports success or the episode runs out (500 steps of 12.5 ms). Prints per goal:
success, steps, the recurrent-core iterations k and the observation-to-chunk latency. Then it sends a goal the
model was not trained for (--refuse, "make me a coffee" by default) and prints the policy node's verdict: refused,
with the closest known instruction, and the arm holding still. --gif saves the camera view with the instruction
overlaid.

examples:
  dream-vla-ros demo
  dream-vla-ros demo --tasks drawer-open,window-close --gif runs/demo.gif
  dream-vla-ros demo --model runs/train/my_model --phrasings heldout
  dream-vla-ros demo --refuse "fold the laundry" --refuse ""   # '' skips the refusal step
"""

from __future__ import annotations

import argparse

DEFAULT_MODEL = "metaworld_mt10"
DEFAULT_TASKS = "reach,drawer-open,button-press-topdown,window-open,push"
GIF_SIDE = 256
GIF_EVERY = 2  # keep every 2nd camera frame: 15 fps from the 30 Hz camera
END_FRAMES = 12  # frames showing the outcome after each goal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dream_vla_ros.evaluation.config import DEFAULT_SEED

    parser.add_argument("--model", default=DEFAULT_MODEL, help="model directory or shipped model name")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma list of MT10 tasks, one goal each ('mt10': all)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the first episode (goal i: seed + i)")
    parser.add_argument("--phrasings", choices=("train", "heldout"), default="train", help="instruction phrasings")
    parser.add_argument("--max-steps", type=int, default=500, help="physics steps (12.5 ms) per goal")
    parser.add_argument("--refuse", default="make me a coffee", metavar="GOAL",
                        help="a goal sent after the task goals, to show the node refusing what the model does not "
                             "understand ('' skips it)")
    parser.add_argument("--gif", default="", metavar="PATH", help="save the camera view with the instructions")
    parser.add_argument("--device", default="cpu", help="policy backend device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the policy backend")
    parser.add_argument("--real-time-factor", type=float, default=0.0, metavar="R",
                        help="simulated seconds per wall second (default 0: chosen from the host's measured "
                             "headroom; the nodes run on the arm's /clock)")
    parser.add_argument("--wall-clock", action="store_true",
                        help="run every node on the wall clock, as on a robot (needs --real-time-factor 1)")
    parser.add_argument("--verbose", action="store_true", help="echo the nodes' output")


def shipped_model_path(name: str):
    """The model directory for ``name``; a clear error when it is missing."""
    from dream_vla_ros.errors import CheckpointError
    from dream_vla_ros.paths import resolve_model

    path = resolve_model(name)
    if not (path / "config.json").is_file():
        hint = (" The shipped model is trained with `dream-vla-ros train` (sim preset, MT10 demonstrations) and "
                "committed there; pass --model DIR to use another model directory.") if name == DEFAULT_MODEL else ""
        raise CheckpointError(f"model not found: {path} (no config.json).{hint}")
    return path


class GifRecorder:
    """Camera frames with the current instruction overlaid, written as an animated GIF."""

    def __init__(self) -> None:
        self.frames: list = []
        self.caption = ""
        self._count = 0
        self._last = None

    def _compose(self, rgb, caption: str, footer: str = "", colour=(255, 255, 255)):
        import cv2
        import numpy as np

        image = cv2.resize(np.ascontiguousarray(rgb), (GIF_SIDE, GIF_SIDE), interpolation=cv2.INTER_LINEAR)
        image[:22] = (image[:22] * 0.35).astype(np.uint8)
        cv2.putText(image, caption[:42], (6, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        if footer:
            image[-24:] = (image[-24:] * 0.35).astype(np.uint8)
            cv2.putText(image, footer, (6, GIF_SIDE - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        return image

    def on_frame(self, msg) -> None:
        from dream_vla_ros.nodes.conversions import image_to_rgb

        self._count += 1
        if self._count % GIF_EVERY:
            return
        try:
            rgb = image_to_rgb(msg, "camera")
        except Exception:  # noqa: BLE001 - a bad frame is skipped, the demo goes on
            return
        self.frames.append(self._compose(rgb, self.caption))
        self._last = rgb.copy()

    def outcome(self, success: bool) -> None:
        last = self._last
        if last is None:
            return
        text, colour = ("success", (80, 255, 80)) if success else ("not solved", (255, 90, 90))
        self.frames += [self._compose(last, self.caption, text, colour)] * END_FRAMES

    def save(self, path: str) -> int:
        from pathlib import Path

        import imageio.v3 as iio
        import numpy as np

        if not self.frames:
            return 0
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, np.stack(self.frames), duration=1000 / (30 / GIF_EVERY), loop=0)
        return len(self.frames)


def show_refusal(session, goal: str) -> None:
    """Send ``goal`` once the arm holds after the last task, print the policy node's verdict, and how far the
    arm's 7 joints moved in the second after it."""
    import time

    import numpy as np

    session.set_goal("")
    time.sleep(1.0)  # the executor brakes to a hold after the last task's goal ends
    print(f"goal: {goal!r} (not a task the model was trained for)", flush=True)
    verdict = session.judge_goal(goal)
    before = session.joint_positions()
    time.sleep(1.0)
    after = session.joint_positions()
    moved = float(np.max(np.abs(after[:7] - before[:7]))) if before is not None else float("nan")
    word = "accepted" if verdict["accepted"] else "refused"
    print(f"  -> {word}: confidence {verdict['confidence']:.2f}, closest known {verdict['nearest_instruction']!r}; "
          f"the arm moved {moved:.4f} rad in the next second", flush=True)
    session.set_goal("")


def main(args: argparse.Namespace) -> int:
    import sys
    import tempfile
    from pathlib import Path

    from dream_vla_ros.evaluation.config import ADAPTIVE, EvalConfig
    from dream_vla_ros.evaluation.episodes import PacedEpisodes
    from dream_vla_ros.evaluation.graph import policy_overrides
    from dream_vla_ros.evaluation.pacing import PacingConfig
    from dream_vla_ros.evaluation.runner import interrupt_on_sigterm
    from dream_vla_ros.evaluation.session import RosSession
    from dream_vla_ros.evaluation.statistics import ChunkProfile
    from dream_vla_ros.sim.joint_arm import CONTROL_DT
    from dream_vla_ros.sim.tasks import parse_tasks

    interrupt_on_sigterm()
    model = shipped_model_path(args.model)
    tasks = parse_tasks(args.tasks)
    pacing = PacingConfig(real_time_factor=args.real_time_factor, wall_clock=args.wall_clock)
    config = EvalConfig(model=str(model), tasks=tasks, episodes=1, seed=args.seed, phrasings=args.phrasings,
                           max_steps=args.max_steps, threads=args.threads, device=args.device, pacing=pacing)
    recorder = GifRecorder() if args.gif else None
    work = Path(tempfile.mkdtemp(prefix="dream_vla_demo_"))
    profile_path = work / "policy_profile.jsonl"
    print(f"starting sim_arm + policy_node ({model.name}) + chunk_executor over ROS 2 ...", flush=True)
    session = RosSession(config.config, overrides=policy_overrides(config, ADAPTIVE, profile_path),
                         echo=sys.stderr if args.verbose else None, log=print)
    results = []
    try:
        session.start()
        runner = PacedEpisodes(session, config, ChunkProfile(profile_path), log=print)
        if recorder is not None:
            session.record_frames(recorder.on_frame)
        for i, task in enumerate(tasks):
            seed = args.seed + i

            def on_start(event, i=i):
                print(f"goal {i + 1}/{len(tasks)}: {event['instruction']!r} ({event['task']}, seed {event['seed']})",
                      flush=True)
                if recorder is not None:
                    recorder.caption = event["instruction"]

            result = runner.run(task, seed, i, on_start=on_start)
            results.append(result)
            if recorder is not None:
                recorder.outcome(result.success)
            outcome = f"success in {result.steps} steps ({result.steps * CONTROL_DT:.2f} s)" if result.success \
                else f"not solved within {result.steps} steps"
            k, latency = result.k_mean, result.latency_ms_median
            pace = f"; real-time factor {result.real_time_factor:g}, {result.lag_events} lag events"
            print(f"  -> {outcome}; {len(result.k)} chunks, k mean {k:.1f}, latency median {latency:.0f} ms{pace}"
                  if k is not None and latency is not None else f"  -> {outcome}; no chunk received{pace}", flush=True)
        if args.refuse:
            show_refusal(session, args.refuse)
    except Exception:
        if session.processes is not None:
            print(session.outputs(), file=sys.stderr)
        raise
    finally:
        session.close()
    solved = sum(r.success for r in results)
    lag = sum(r.lag_events for r in results)
    factors = ", ".join(f"{f:g}" for f in sorted({r.real_time_factor for r in results}, reverse=True))
    clock = "wall clock" if pacing.wall_clock else "simulation time"
    print(f"solved {solved}/{len(results)} goals ({clock}, real-time factor {factors}, {lag} lag events"
          + ("; the simulation fell behind: this run does not count)" if lag else ")"))
    if recorder is not None:
        frames = recorder.save(args.gif)
        print(f"saved {frames} frames to {args.gif}")
    return 0
