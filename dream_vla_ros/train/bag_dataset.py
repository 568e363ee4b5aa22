"""Recorded episodes (rosbag2 directories of ``dream-vla-ros record``) -> the episode dataset of the simulation demos.

What one episode becomes (``docs/dataset_format.md``, "From ROS 2 bags"; ``docs/recording.md``):

- **Time grid** at the policy rate: t_k = t_start + k * dt, from the latest first message to the earliest
  last message of the camera and joint-state streams (and the leader's, minus dt). Times are header stamps
  (the bag's receive time where a stamp is 0).
- **Observation of frame k**: per camera the newest image stamped at or before t_k, and the newest joint
  state stamped at or before t_k (what the policy node sees when it runs at t_k). A frame whose image is
  older than ``max_image_age`` is *misaligned* (counted; too many refuse the episode).
- **Action of frame k**: the joint-position target for t_k + dt. ``trajectory`` source: the commanded
  trajectories replayed through the JointTrajectoryController semantics of the simulated arm
  (:class:`~dream_vla_ros.sim.trajectory_follower.TrajectoryFollower`: hard replacement at receipt,
  ``header.stamp`` 0 = start on receipt, linear / cubic interpolation, hold after the end, holding the
  measured start position before the first command), sampled at t_k + dt; one follower per action topic over
  the joints its messages name. ``leader`` source: the leader arm's joint positions interpolated at t_k + dt.
- **Idle start** (``trim_idle``): leading frames before the targets first move by more than
  ``idle_tolerance`` are dropped (one is kept).

Refused, with every reason found: bags that are not readable (an ``incomplete/`` episode: run ``record
repair``), episodes not stopped with ``~/stop`` (unless ``allow_incomplete``), missing or empty camera /
joint-state / action topics, gaps in those streams longer than ``max_gap``, joint-name mismatches (joint
states lacking dataset joints, action messages naming other joints, joints without an action, another
episode's joint set or camera size), too few frames, too many misaligned frames, no motion, no instruction.

The report (``report.json`` and ``report.md`` in the dataset directory, and the return value) lists per
episode the durations, message rates, missing messages (header-stamp gaps and the recorder's own counters),
misaligned frames and rejected commands; the refused bags with their reasons; per-joint ranges; the
train/validation split (by episode, stratified by task: ``split_by_episode`` with ``val_fraction`` and
``seed``, the split ``dream-vla-ros train`` makes with the same values); and the build throughput.

:func:`build_episode` runs one bag through steps that each return what they found (and their refusals):
:mod:`.bag_reading` (topics, messages, frames), :mod:`.bag_alignment` (grid, gaps, joint series, action
targets); the settings are :class:`~.bag_config.BuildConfig`, the Markdown report :mod:`.bag_report`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.train.bag_alignment import (
    JointSeries,
    at_or_before,
    gaps,
    idle_prefix,
    joint_series,
    leader_targets,
    missing_messages,
    rate_hz,
    recorded_commands,
    time_grid,
    trajectory_targets,
)
from dream_vla_ros.train.bag_config import BuildConfig
from dream_vla_ros.train.bag_reading import (
    NS,
    BagStreams,
    EpisodeTopics,
    decode_image,
    discover_bags,
    read_streams,
    resize_short_side,
)
from dream_vla_ros.train.bag_report import markdown_report
from dream_vla_ros.train.chunk_samples import split_by_episode
from dream_vla_ros.train.dataset import META_FILE, DatasetMeta, DatasetWriter, Episode

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


class BagRefusedError(InputError):
    """An episode bag cannot become a dataset episode; ``reasons`` says why (all reasons found)."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


def _refuse(reasons: Sequence[str]) -> None:
    if reasons:
        raise BagRefusedError(reasons)


@dataclass(frozen=True)
class DatasetSpec:
    """What the first accepted episode fixes for the dataset: joints in column order, camera -> (height, width)."""

    joint_names: tuple[str, ...]
    cameras: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class EpisodeBuild:
    """One accepted bag: its episode, its report entry, and the joints and camera sizes it has."""

    episode: Episode
    report: dict[str, Any]
    spec: DatasetSpec


# -- the steps of one episode ---------------------------------------------------------------------------------
def _open_episode(path: Path, config: BuildConfig) -> tuple[dict[str, Any], str, list[str]]:
    """The episode record, its status and the status's refusal (if any); an unreadable bag raises."""
    from dream_vla_ros.record.episode import INCOMPLETE_DIR, STATUS_COMPLETE, RecorderError, read_info

    if not (path / "metadata.yaml").is_file():
        inside = path.parent.name == INCOMPLETE_DIR
        where, root = ("in incomplete/", path.parent.parent) if inside else ("without metadata.yaml", path.parent)
        raise BagRefusedError([f"not a readable bag ({where}: the recording did not finish; "
                               f"`dream-vla-ros record repair {root}` salvages it)"])
    try:
        info = read_info(path) or {}
    except RecorderError as exc:
        raise BagRefusedError([str(exc)]) from None
    status = info.get("status", STATUS_COMPLETE if not info else "unknown")
    if status != STATUS_COMPLETE and not config.allow_incomplete:
        return info, status, [f"episode status {status!r}, not stopped with ~/stop (allow_incomplete accepts it)"]
    return info, status, []


def _topic_problems(streams: BagStreams, spec: DatasetSpec | None) -> list[str]:
    """Missing or empty topics, and cameras other than the dataset's."""
    topics = streams.topics
    reasons = [] if topics.cameras else ["no camera topic (record one, or give cameras NAME=TOPIC)"]
    if not topics.actions:
        reasons.append(f"no action topic for the {topics.source} source (give action_topics)")
    for topic in [*topics.cameras.values(), topics.joint_states, *topics.actions]:
        if topic not in streams.types:
            reasons.append(f"missing topic {topic}")
        elif streams.counts.get(topic, 0) == 0:
            reasons.append(f"no messages on {topic}")
    if spec is not None and set(topics.cameras) != set(spec.cameras):
        reasons.append(f"cameras {sorted(topics.cameras)} differ from the dataset's {sorted(spec.cameras)}")
    return reasons


@dataclass(frozen=True)
class _Timeline:
    """The episode's streams in seconds since ``base`` ns: joint states in ``joint_names`` order, camera stamps
    by camera name, the leader's joint states (leader source); ``reasons``: refusals found so far."""

    joint_names: tuple[str, ...]
    base: int
    joints: JointSeries
    cameras: dict[str, np.ndarray]
    leader: JointSeries | None
    reasons: tuple[str, ...]


def _timeline(streams: BagStreams, config: BuildConfig, spec: DatasetSpec | None) -> _Timeline:
    topics = streams.topics
    samples = streams.joints.get(topics.joint_states, [])
    if not samples:
        raise BagRefusedError([f"no sensor_msgs/JointState messages on {topics.joint_states}"])
    joint_names = tuple(config.joint_names) or (spec.joint_names if spec is not None else ()) or samples[0][1]
    reasons = []
    if spec is not None and joint_names != spec.joint_names:
        reasons.append(f"joint-name mismatch: {list(joint_names)} differ from the dataset's {list(spec.joint_names)}")
    base = min([s for s, *_ in samples] + [t for times, _ in streams.images.values() for t in times]) - NS
    joints, why = joint_series(samples, joint_names, topics.joint_states, base)
    reasons += why
    cameras = {name: np.asarray([(t - base) / NS for t in streams.images[topic][0]])
               for name, topic in topics.cameras.items()}
    leader = None
    if topics.source == "leader":
        leader_names = tuple(config.leader_joint_names) or joint_names
        if len(leader_names) != len(joint_names):
            reasons.append(f"joint-name mismatch: {len(leader_names)} leader joints for {len(joint_names)} joints")
        else:
            leader, why = joint_series(streams.joints.get(topics.actions[0], []), leader_names, topics.actions[0],
                                       base)
            reasons += why
    if joints is None or (topics.source == "leader" and leader is None):
        raise BagRefusedError(reasons)
    return _Timeline(joint_names, base, joints, cameras, leader, tuple(reasons))


def _grid(topics: EpisodeTopics, timeline: _Timeline, config: BuildConfig
          ) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """The frame times where every stream has data, the per-stream report, and gap / length refusals."""
    dt, joints, leader = config.dt, timeline.joints, timeline.leader
    firsts = [joints.stamps[0], *(c[0] for c in timeline.cameras.values())]
    lasts = [joints.stamps[-1], *(c[-1] for c in timeline.cameras.values())]
    periodic = {topics.joint_states: joints.stamps, **{topics.cameras[n]: s for n, s in timeline.cameras.items()}}
    if leader is not None:
        firsts.append(leader.stamps[0])
        lasts.append(leader.stamps[-1] - dt)
        periodic[topics.actions[0]] = leader.stamps
    start, end = max(firsts), min(lasts)
    reasons, report = [], {}
    for topic, stamps in periodic.items():
        found = gaps(stamps, start, end, config.max_gap)
        for at, length in found[:3]:
            reasons.append(f"gap of {length:.3f} s on {topic} at t={at - start:.2f} s (max_gap {config.max_gap} s)")
        if len(found) > 3:
            reasons.append(f"{len(found) - 3} more gaps on {topic}")
        diffs = np.diff(stamps)
        report[topic] = {"messages": int(stamps.size), "rate_hz": round(rate_hz(stamps), 2),
                         "missing": missing_messages(stamps),
                         "max_interval_s": round(float(diffs.max()), 4) if diffs.size else None}
    grid = time_grid(start, end, dt)
    if grid.size < config.min_frames:
        reasons.append(f"too short: {grid.size} frame(s) at {config.rate:g} Hz (min_frames {config.min_frames})")
    return grid, report, reasons


@dataclass(frozen=True)
class _Actions:
    """targets [T, J] for t_k + dt; messages: action messages read; rejected: the controller's rejections."""

    targets: np.ndarray
    messages: int
    rejected: dict[str, int]
    reasons: tuple[str, ...]


def _actions(streams: BagStreams, timeline: _Timeline, times: np.ndarray, config: BuildConfig) -> _Actions:
    """The action source's targets at ``times`` (the frame times + dt)."""
    if timeline.leader is not None:
        return _Actions(leader_targets(timeline.leader, times), int(timeline.leader.stamps.size), {}, ())
    joint_names = timeline.joint_names
    targets = np.full((times.size, len(joint_names)), np.nan)
    covered: set[str] = set()
    rejected: dict[str, int] = {}
    reasons: list[str] = []
    messages = 0
    for topic in streams.topics.actions:
        commands = recorded_commands(streams.commands.get(topic, []), timeline.base)
        messages += len(commands)
        if not commands:
            continue
        names = commands[0].joint_names
        foreign = [n for n in names if n not in joint_names]
        if foreign:
            reasons.append(f"joint-name mismatch: {topic} commands {foreign}, not among the dataset joints "
                           f"{list(joint_names)}")
            continue
        columns = sorted(joint_names.index(n) for n in names)
        ordered = tuple(joint_names[c] for c in columns)
        part, why = trajectory_targets(commands, ordered, times, timeline.joints.select(columns),
                                       config.interpolate_from_desired_state)
        targets[:, columns] = part
        covered.update(names)
        rejected.update({f"{topic}: {reason}": count for reason, count in why.items()})
    uncovered = [j for j in joint_names if j not in covered]
    if uncovered and not reasons:
        reasons.append(f"joint-name mismatch: no action topic commands {uncovered}")
    return _Actions(targets, messages, rejected, tuple(reasons))


@dataclass(frozen=True)
class _Frames:
    """images: camera -> uint8 [T, h, w, 3] at the frame times; misaligned: camera -> frames whose image is older
    than max_image_age; sizes: camera -> (h, w) after resizing."""

    images: dict[str, np.ndarray]
    misaligned: dict[str, int]
    sizes: dict[str, tuple[int, int]]
    reasons: tuple[str, ...]


def _decoded(streams: BagStreams, topic: str, indices: Sequence[int], typestore, size: int) -> dict[int, np.ndarray]:
    """Message index -> decoded, resized frame, each of ``indices`` decoded once."""
    msgtype, raw = streams.types[topic], streams.images[topic][1]
    try:
        return {i: resize_short_side(decode_image(typestore.deserialize_cdr(raw[i], msgtype), msgtype), size)
                for i in dict.fromkeys(indices)}
    except Exception as exc:  # noqa: BLE001 - corrupt image data
        raise BagRefusedError([f"cannot decode {topic}: {exc}"]) from None


def _frames(streams: BagStreams, timeline: _Timeline, grid: np.ndarray, config: BuildConfig,
            spec: DatasetSpec | None, typestore) -> _Frames:
    """Every camera's newest image at or before each frame time."""
    images, misaligned, sizes, reasons = {}, {}, {}, []
    for name, topic in streams.topics.cameras.items():
        stamps = timeline.cameras[name]
        index = at_or_before(stamps, grid).tolist()
        misaligned[name] = int(np.sum(grid - stamps[index] > config.max_image_age))
        decoded = _decoded(streams, topic, index, typestore, config.image_size)
        shapes = {f.shape[:2] for f in decoded.values()}
        if len(shapes) != 1:
            reasons.append(f"{topic}: image size changes within the episode ({sorted(shapes)})")
            continue
        sizes[name] = shapes.pop()
        if spec is not None and sizes[name] != spec.cameras[name]:
            h, w = sizes[name]
            reasons.append(f"camera {name}: {w}x{h} px (after resizing) differs from the dataset's "
                           f"{spec.cameras[name][1]}x{spec.cameras[name][0]}")
        images[name] = np.stack([decoded[i] for i in index])
    for name, count in misaligned.items():
        if count > config.max_misaligned * grid.size:
            reasons.append(f"{count} of {grid.size} frames have a {name} image older than max_image_age "
                           f"{config.max_image_age} s")
    return _Frames(images, misaligned, sizes, tuple(reasons))


def _labels(config: BuildConfig, info: dict[str, Any], goals: Sequence[str]) -> tuple[str, str, list[str]]:
    """(task, instruction, refusal): the config's, else the episode record's, else the first goal published."""
    instruction = config.instruction or str(info.get("instruction") or "") or next(
        (g.strip() for g in goals if g.strip()), "")
    task = config.task or str(info.get("task") or "") or instruction
    if not instruction:
        return task, instruction, ["no instruction (none recorded on the goal topic or in the episode record; "
                                   "give instruction)"]
    return task, instruction, []


def _first_frame(targets: np.ndarray, config: BuildConfig) -> tuple[int, list[str]]:
    """The first frame kept (after the idle start, with trim_idle) and the refusals that trimming finds."""
    first, reasons = 0, []
    if config.trim_idle:
        skip = idle_prefix(targets, config.idle_tolerance)
        if skip is None:
            reasons.append(f"no motion: the action targets never move by more than {config.idle_tolerance}")
        else:
            first = skip
    if len(targets) - first < config.min_frames:
        reasons.append(f"too short after trimming the idle start: {len(targets) - first} frame(s)")
    return first, reasons


def build_episode(path: Path, config: BuildConfig, spec: DatasetSpec | None, typestore) -> EpisodeBuild:
    """One bag -> :class:`EpisodeBuild`, checked against the dataset's ``spec`` (None: this is the first
    episode); BagRefusedError with every reason found."""
    info, status, reasons = _open_episode(path, config)
    try:
        streams = read_streams(path, typestore, config, info)
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged files
        raise BagRefusedError([*reasons, f"cannot read the bag: {type(exc).__name__}: {exc}"]) from None
    _refuse([*reasons, *_topic_problems(streams, spec)])
    topics = streams.topics
    timeline = _timeline(streams, config, spec)
    grid, stream_report, reasons = _grid(topics, timeline, config)
    _refuse([*timeline.reasons, *reasons])
    actions = _actions(streams, timeline, grid + config.dt, config)
    _refuse(actions.reasons)
    frames = _frames(streams, timeline, grid, config, spec, typestore)
    task, instruction, label_reasons = _labels(config, info, streams.goals)
    first, trim_reasons = _first_frame(actions.targets, config)
    _refuse([*frames.reasons, *label_reasons, *trim_reasons])

    keep = slice(first, None)
    proprio = timeline.joints.positions[at_or_before(timeline.joints.stamps, grid)]
    episode = Episode(
        images={name: images[keep] for name, images in frames.images.items()},
        proprio=proprio[keep].astype(np.float32),
        actions=actions.targets[keep].astype(np.float32),
        task=task, instruction=instruction, seed=-1, success=bool(info.get("success", True)),
        timestamps=grid[keep] - grid[first],
    )
    counts = info.get("counts") or {}
    report = {
        "bag": str(path), "task": task, "instruction": instruction, "status": status,
        "recorded_s": round(float(info["duration_s"]), 3) if info.get("duration_s") is not None else None,
        "duration_s": round(float(grid[-1] - grid[first]), 3), "frames": episode.length, "trimmed_frames": first,
        "streams": stream_report,
        "misaligned_frames": frames.misaligned,
        "recorder_dropped": {t: int(c.get("dropped_backlog", 0)) + int(c.get("lost", 0))
                             for t, c in counts.items() if isinstance(c, dict)},
        "action": {"source": topics.source, "topics": list(topics.actions), "messages": actions.messages,
                   "rejected": actions.rejected},
        "input_mb": round(streams.bytes / 1e6, 3),
    }
    return EpisodeBuild(episode, report, DatasetSpec(timeline.joint_names, frames.sizes))


# -- the whole build ------------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    meta: DatasetMeta | None
    report: dict[str, Any]


def build_dataset(paths: Sequence[str | Path], config: BuildConfig, log: Callable[[str], None] = print,
                  distro: str | None = None) -> BuildResult:
    """Build ``config.out`` from the bags at ``paths`` (see the module docstring). Nothing is written when no
    episode is usable (``meta`` None); the report says why."""
    from dream_vla_ros.record.bag import typestore_for

    started = time.perf_counter()
    out = Path(config.out)
    if (out / META_FILE).exists() and not config.overwrite:
        raise InputError(f"{out}: already holds a dataset (use overwrite to replace it)")
    typestore = typestore_for(distro)
    bags = discover_bags(paths)
    if not bags:
        raise InputError("no bag directories given")
    spec: DatasetSpec | None = None
    writer: DatasetWriter | None = None
    entries, reports, refused = [], [], []
    input_bytes = 0
    for path in bags:
        try:
            built = build_episode(path, config, spec, typestore)
        except BagRefusedError as exc:
            refused.append({"bag": str(path), "reasons": exc.reasons})
            log(f"refused {path}: " + "; ".join(exc.reasons))
            continue
        if spec is None:
            spec = built.spec
        if writer is None:
            writer = DatasetWriter(out, spec.joint_names, config.dt, spec.cameras, source=_source(config, bags),
                                   overwrite=config.overwrite)
        entry = writer.write(built.episode, len(entries))
        entries.append(entry)
        reports.append({**built.report, "file": entry.file})
        input_bytes += int(built.report["input_mb"] * 1e6)
        log(f"{path.name}: {entry.length} frames ({built.report['duration_s']:.1f} s) {built.episode.instruction!r}")
    report: dict[str, Any] = {"dataset": str(out), "rate_hz": config.rate, "dt": config.dt, "episodes": reports,
                              "refused": refused}
    if writer is None:
        report["totals"] = {"episodes": 0, "refused": len(refused), "frames": 0}
        return BuildResult(None, report)
    phrasings: dict[str, dict[str, list[str]]] = {}
    for entry in entries:
        train = phrasings.setdefault(entry.task, {"train": [], "heldout": []})["train"]
        if entry.instruction not in train:
            train.append(entry.instruction)
    writer.phrasings = phrasings
    tasks = [e.task for e in entries]
    train_ids, val_ids = split_by_episode(tasks, config.val_fraction, config.seed)
    split = {"val_fraction": config.val_fraction, "seed": config.seed, "train": train_ids, "validation": val_ids}
    writer.source = {**writer.source, "split": split}
    meta = writer.finalize(entries)
    seconds = time.perf_counter() - started
    report.update(
        joint_names=list(meta.joint_names),
        cameras={name: {"height": h, "width": w} for name, (h, w) in meta.cameras.items()},
        totals={"episodes": len(entries), "refused": len(refused), "frames": meta.num_frames,
                "duration_s": round(sum(r["duration_s"] for r in reports), 3)},
        joint_ranges={kind: {j: [round(float(stats.min[i]), 4), round(float(stats.max[i]), 4)]
                             for i, j in enumerate(meta.joint_names)} for kind, stats in meta.stats.items()},
        split=split,
        throughput={"seconds": round(seconds, 3), "frames_per_s": round(meta.num_frames / seconds, 1),
                    "input_mb": round(input_bytes / 1e6, 2), "input_mb_per_s": round(input_bytes / 1e6 / seconds, 2)},
    )
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
    (out / REPORT_MD).write_text(markdown_report(report))
    return BuildResult(meta, report)


def _source(config: BuildConfig, bags: Sequence[Path]) -> dict[str, Any]:
    return {"generator": "dream-vla-ros dataset build", "bags": [str(p) for p in bags], "rate_hz": config.rate,
            "image_size": config.image_size, "max_gap": config.max_gap, "max_image_age": config.max_image_age,
            "trim_idle": config.trim_idle, "action_source": config.action_source or "as recorded",
            "interpolate_from_desired_state": config.interpolate_from_desired_state}
