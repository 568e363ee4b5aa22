"""The recorder's core (ROS-free): idle or recording one episode, raw messages in, rosbag2 episodes out.

Hot path (:meth:`Recorder.on_message`, called from the subscription callbacks with the raw CDR bytes and the
receive time): count, read the header stamp of sensor streams (8 bytes at a fixed offset, no
deserialisation), and hand the bytes to the episode's writer thread through a queue. The queue is bounded by
``max_backlog_mb``: when the disk falls that far behind, new messages are dropped and counted
(``dropped_backlog``) instead of growing memory without limit. Everything slow (file writes, flushes,
closing, renaming) happens on the writer thread or in :meth:`start` / :meth:`stop`.

Counters per topic and episode: ``received``, ``written``, ``dropped_backlog``, ``lost`` (samples the
middleware reports lost, :meth:`on_lost`) and ``missing`` (for periodic sensor streams: messages missing
from gaps in their header stamps, an estimate of losses no one reports; see :mod:`~dream_vla_ros.record.streams`).
"""

from __future__ import annotations

import contextlib
import getpass
import platform
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dream_vla_ros.record.bag import (
    EpisodeWriter,
    TopicInfo,
    decode_string,
    header_stamp_ns,
    message_definition,
    starts_with_header,
)
from dream_vla_ros.record.config import RecorderConfig
from dream_vla_ros.record.episode import (
    RECORDING_FORMAT,
    RECORDING_VERSION,
    STATUS_COMPLETE,
    STATUS_INTERRUPTED,
    STATUS_WRITE_ERROR,
    RecorderError,
    episode_name,
    list_episodes,
    next_index,
    write_info,
)
from dream_vla_ros.record.streams import GapCounter

REQUIRED_ROLES = ("camera", "joint_states", "action")
PERIODIC_ROLES = ("camera", "joint_states")
_STOP = object()
_GB = 1e9


@dataclass
class StreamStats:
    """Counters of one topic during one episode (see the module docstring)."""

    received: int = 0
    written: int = 0
    dropped_backlog: int = 0
    lost: int = 0
    bytes: int = 0
    gaps: GapCounter = field(default_factory=GapCounter, repr=False)

    @property
    def missing(self) -> int:
        return self.gaps.missing

    def as_dict(self) -> dict[str, int]:
        return {"received": self.received, "written": self.written, "dropped_backlog": self.dropped_backlog,
                "lost": self.lost, "missing": self.missing, "bytes": self.bytes}


@dataclass
class _Topic:
    info: TopicInfo
    role: str
    has_header: bool
    received_total: int = 0
    dropped_total: int = 0
    lost_total: int = 0


class _Episode:
    """The episode being recorded: its writer, its queue and its counters."""

    def __init__(self, name: str, writer: EpisodeWriter, info: dict[str, Any], topics: dict[str, _Topic],
                 max_backlog: int, start_ns: int) -> None:
        self.name = name
        self.writer = writer
        self.info = info
        self.stats = {topic: StreamStats() for topic in topics}
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.backlog = 0
        self.max_backlog = max_backlog
        self.closed = False
        self.error = ""
        self.start_ns = start_ns
        self.started_monotonic = time.monotonic()
        self.thread: threading.Thread | None = None


class Recorder:
    """Idle or recording one episode into ``config.out_dir`` (see the module docstring).

    ``typestore``: the rosbags type store giving message definitions and type hashes; ``clock_ns``: the
    receive clock of the bag timestamps when the recorder stamps something itself (start, stop);
    ``log``: one line per event.
    """

    def __init__(self, config: RecorderConfig, typestore, *, clock_ns: Callable[[], int] = time.time_ns,
                 log: Callable[[str], None] = print, node_name: str = "recorder", distro: str | None = None) -> None:
        self.config = config
        self.typestore = typestore
        self.root = Path(config.out_dir).expanduser()
        self.clock_ns = clock_ns
        self.log = log
        self.node_name = node_name
        self.distro = distro
        self.task = config.task
        self.instruction = config.instruction
        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {}
        self._episode: _Episode | None = None
        self._goal_text = ""
        self._goal_raw: bytes | None = None
        self.episodes_kept = 0
        self.episodes_discarded = 0
        self.last_error = ""
        self._free_bytes: int | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        leftovers = [e for e in list_episodes(self.root) if e.path.parent != self.root]
        if leftovers:
            names = ", ".join(e.path.name for e in leftovers)
            self.log(f"{self.root}/incomplete holds {len(leftovers)} episode(s) left by a stopped recorder ({names});"
                     f" `dream-vla-ros record repair {self.root}` salvages them")

    # -- topics ------------------------------------------------------------------------------------------------
    def add_topic(self, topic: str, msgtype: str, role: str, type_hash: str = "") -> None:
        """Declare a subscribed topic (before its first :meth:`on_message`). RecorderError for unknown types."""
        msgdef, store_hash = message_definition(self.typestore, msgtype)
        info = TopicInfo(topic, msgtype, msgdef, type_hash if type_hash.startswith("RIHS01_") else store_hash)
        with self._lock:
            self._topics[topic] = _Topic(info, role, starts_with_header(self.typestore, msgtype))
            episode = self._episode
        if episode is not None:
            with episode.lock:
                episode.stats.setdefault(topic, StreamStats())

    @property
    def topics(self) -> dict[str, str]:
        """Declared topic -> message type."""
        return {t: s.info.msgtype for t, s in self._topics.items()}

    @property
    def recording(self) -> bool:
        return self._episode is not None

    @property
    def goal_text(self) -> str:
        return self._goal_text

    # -- hot path ----------------------------------------------------------------------------------------------
    def on_message(self, topic: str, raw: bytes, t_ns: int) -> None:
        """A message as received (raw CDR) at ``t_ns``; queued for the bag while recording."""
        state = self._topics[topic]
        state.received_total += 1
        role = state.role
        if role == "goal":
            self._goal_raw = raw
            self._goal_text = decode_string(raw).strip()
        episode = self._episode
        if episode is None:
            return
        size = len(raw)
        with episode.lock:
            if episode.closed:
                return
            stats = episode.stats[topic]
            stats.received += 1
            if role in PERIODIC_ROLES and state.has_header:
                stats.gaps.observe(header_stamp_ns(raw))
            if episode.backlog + size > episode.max_backlog or episode.error:
                stats.dropped_backlog += 1
                state.dropped_total += 1
                return
            episode.backlog += size
        episode.queue.put((topic, t_ns, raw))

    def on_lost(self, topic: str, count: int) -> None:
        """The middleware reports ``count`` samples of ``topic`` lost."""
        state = self._topics.get(topic)
        if state is None:
            return
        state.lost_total += count
        episode = self._episode
        if episode is not None:
            with episode.lock:
                episode.stats.setdefault(topic, StreamStats()).lost += count

    # -- episodes ----------------------------------------------------------------------------------------------
    def start(self, publishers: dict[str, list[tuple[str, str]]] | None = None) -> dict[str, Any]:
        """Start an episode; returns its record. RecorderError says why not.

        publishers: topic -> [(type, type hash)] of the publishers in the graph (checked when given: missing
        publishers on required topics with ``require_publishers``, and type mismatches, refuse the start).
        """
        config = self.config
        with self._lock:
            if self._episode is not None:
                raise RecorderError(f"already recording {self._episode.name}; stop or discard it first")
            instruction = (self.instruction or self._goal_text).strip()
            task = (self.task or instruction).strip()
            if config.require_instruction and not instruction:
                raise RecorderError(f"no instruction: set the recorder's 'instruction' parameter or publish the goal "
                                    f"on {config.goal_topic or '(no goal topic configured)'}")
            free = self.free_bytes()
            if free is not None and free < config.stop_free_space * _GB:
                raise RecorderError(f"only {free / _GB:.2f} GB free in {self.root} (stop_free_space "
                                    f"{config.stop_free_space} GB)")
            warnings = self._check_publishers(publishers) if publishers is not None else []
            roles = config.roles()
            missing = [t for t, r in roles.items() if r in REQUIRED_ROLES and t not in self._topics]
            if missing:
                raise RecorderError(f"not subscribed yet to {', '.join(missing)}")
            topics = dict(self._topics)
            index = next_index(self.root)
            name = episode_name(index)
            start_ns = self.clock_ns()
            info = self._episode_record(name, task, instruction, topics, start_ns)
            try:
                writer = EpisodeWriter(self.root, name, [t.info for t in topics.values()], info, config.compression)
            except OSError as exc:
                raise RecorderError(f"cannot create {self.root / name}: {exc}") from None
            episode = _Episode(name, writer, info, topics, int(config.max_backlog_mb * 1e6), start_ns)
            goal = self._goal_raw
            if goal is not None and config.goal_topic in topics:
                # The goal topic is latched: its current message belongs to the episode (as rosbag2 records it).
                episode.stats[config.goal_topic].received += 1
                episode.backlog += len(goal)
                episode.queue.put((config.goal_topic, start_ns, goal))
            episode.thread = threading.Thread(target=self._write_loop, args=(episode,), name=f"writer-{name}",
                                              daemon=True)
            episode.thread.start()
            self._episode = episode
        self.log(f"{name}: recording {instruction!r} (task {task!r})")
        return {"episode": name, "path": str(writer.incomplete), "task": task, "instruction": instruction,
                "start_ns": start_ns, "warnings": warnings}

    def stop(self, keep: bool = True, status: str = STATUS_COMPLETE) -> dict[str, Any]:
        """Stop the episode: keep it (close, move to ``out_dir``) or discard it (delete). RecorderError if idle."""
        with self._lock:
            episode = self._episode
            if episode is None:
                raise RecorderError("not recording")
            self._episode = None
        with episode.lock:
            episode.closed = True
        stop_ns = self.clock_ns()
        episode.queue.put(_STOP)
        if episode.thread is not None:
            episode.thread.join()
        counts = {topic: stats.as_dict() for topic, stats in episode.stats.items()}
        duration = (stop_ns - episode.start_ns) / 1e9
        summary: dict[str, Any] = {"episode": episode.name, "duration_s": round(duration, 3), "counts": counts}
        if not keep:
            episode.writer.discard()
            self.episodes_discarded += 1
            self.log(f"{episode.name}: discarded after {duration:.1f} s")
            return {**summary, "status": "discarded", "path": ""}
        info = {**episode.info, "status": status, "complete": status == STATUS_COMPLETE, "stop_ns": stop_ns,
                "duration_s": duration, "counts": counts}
        if episode.error:
            episode.writer.abandon()
            info.update(status=STATUS_WRITE_ERROR, complete=False, error=episode.error)
            with contextlib.suppress(OSError):
                write_info(episode.writer.incomplete, info)
            self.last_error = episode.error
            raise RecorderError(f"{episode.name}: {episode.error}; what was written stays in "
                                f"{episode.writer.incomplete} (`dream-vla-ros record repair` salvages it)")
        try:
            path = episode.writer.close(info)
        except OSError as exc:
            self.last_error = f"closing {episode.name} failed: {exc}"
            raise RecorderError(self.last_error) from None
        self.episodes_kept += 1
        warnings = [f"no messages on {topic}" for topic, state in episode.stats.items()
                    if state.written == 0 and self._topics[topic].role in REQUIRED_ROLES]
        dropped = {t: c["dropped_backlog"] + c["lost"] + c["missing"] for t, c in counts.items()}
        warnings += [f"{n} message(s) dropped or missing on {t}" for t, n in dropped.items() if n]
        self.log(f"{episode.name}: kept ({status}), {duration:.1f} s, {sum(c['written'] for c in counts.values())} "
                 f"messages -> {path}" + (f"; {'; '.join(warnings)}" if warnings else ""))
        return {**summary, "status": status, "path": str(path), "warnings": warnings}

    def close(self) -> dict[str, Any] | None:
        """Shut down: an episode still running is closed readable and marked ``interrupted``."""
        if self._episode is None:
            return None
        return self.stop(keep=True, status=STATUS_INTERRUPTED)

    def _write_loop(self, episode: _Episode) -> None:
        writer = episode.writer
        period = self.config.flush_period
        next_flush = time.monotonic() + period
        while True:
            try:
                item = episode.queue.get(timeout=period)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                topic, t_ns, raw = item
                if not episode.error:
                    try:
                        if not writer.has_topic(topic):
                            writer.add_topic(self._topics[topic].info)
                        writer.write(topic, t_ns, raw)
                    except Exception as exc:  # noqa: BLE001 - a disk error ends writing, not the node
                        episode.error = f"writing failed: {type(exc).__name__}: {exc}"
                        self.last_error = episode.error
                        self.log(f"{episode.name}: {episode.error}")
                with episode.lock:
                    episode.backlog -= len(raw)
                    stats = episode.stats[topic]
                    if not episode.error:
                        stats.written += 1
                        stats.bytes += len(raw)
            now = time.monotonic()
            if now >= next_flush and not episode.error:
                next_flush = now + period
                try:
                    writer.flush()
                except Exception as exc:  # noqa: BLE001
                    episode.error = f"flushing failed: {type(exc).__name__}: {exc}"
                    self.last_error = episode.error

    def _check_publishers(self, publishers: dict[str, list[tuple[str, str]]]) -> list[str]:
        """Refuse missing publishers (with require_publishers) and type mismatches; adopt the graph's type
        hashes. Returns warnings."""
        warnings = []
        for topic, state in self._topics.items():
            offered = publishers.get(topic, [])
            if not offered:
                if state.role in REQUIRED_ROLES:
                    if self.config.require_publishers:
                        raise RecorderError(f"no publisher on {topic} ({state.role}); start it first, or set "
                                            "require_publishers false")
                    warnings.append(f"no publisher on {topic}")
                continue
            types = {t for t, _ in offered}
            if state.info.msgtype not in types:
                raise RecorderError(f"{topic}: publishers offer {', '.join(sorted(types))}, the recorder subscribed "
                                    f"{state.info.msgtype}")
            hashes = {h for t, h in offered if t == state.info.msgtype and h.startswith("RIHS01_")}
            if len(hashes) == 1 and state.info.type_hash not in hashes:
                state.info.type_hash = hashes.pop()
                warnings.append(f"{topic}: the publishers' type hash differs from the recorder's type store "
                                "(recorded with the publishers' hash)")
        return warnings

    def _episode_record(self, name: str, task: str, instruction: str, topics: dict[str, _Topic],
                        start_ns: int) -> dict[str, Any]:
        from dream_vla_ros import __version__

        config = self.config
        return {
            "format": RECORDING_FORMAT, "version": RECORDING_VERSION, "episode": name,
            "status": "recording", "complete": False, "task": task, "instruction": instruction, "success": True,
            "start_ns": start_ns, "stop_ns": None, "duration_s": None,
            "topics": {t: {"role": s.role, "type": s.info.msgtype, "type_hash": s.info.type_hash}
                       for t, s in topics.items()},
            "cameras": {camera: topic for topic, camera in config.cameras.items()},
            "joint_states": config.joint_states_topic,
            "action": {"source": config.action_source, "topics": list(config.action_topics)},
            "goal": config.goal_topic,
            "recorder": {"node": self.node_name, "host": platform.node(), "user": _user(),
                         "ros_distro": self.distro, "package_version": __version__, "config": asdict(config)},
        }

    # -- health ------------------------------------------------------------------------------------------------
    def free_bytes(self) -> int | None:
        try:
            self._free_bytes = shutil.disk_usage(self.root).free
        except OSError:
            self._free_bytes = None
        return self._free_bytes

    def poll(self) -> list[tuple[str, str, str]]:
        """Periodic checks: disk space and the episode length limit (stopping and keeping the episode when
        exceeded). Returns (slot, level, message) causes to report; level "" clears the slot."""
        causes: list[tuple[str, str, str]] = []
        free = self.free_bytes()
        config = self.config
        if free is None:
            causes.append(("disk", "warn", f"cannot read the free space of {self.root}"))
        elif free < config.stop_free_space * _GB:
            causes.append(("disk", "error", f"{free / _GB:.2f} GB free < stop_free_space {config.stop_free_space} GB"))
        elif free < config.min_free_space * _GB:
            causes.append(("disk", "warn", f"{free / _GB:.2f} GB free < min_free_space {config.min_free_space} GB"))
        else:
            causes.append(("disk", "", ""))
        episode = self._episode
        if episode is not None:
            elapsed = time.monotonic() - episode.started_monotonic
            reason = ""
            if free is not None and free < config.stop_free_space * _GB:
                reason = "the disk is nearly full"
            elif config.max_episode_duration and elapsed > config.max_episode_duration:
                reason = f"max_episode_duration {config.max_episode_duration} s reached"
            if reason:
                self.log(f"{episode.name}: stopping and keeping it: {reason}")
                try:
                    self.stop(keep=True)
                except RecorderError as exc:
                    causes.append(("episode", "error", str(exc)))
        dropped = sum(s.dropped_total for s in self._topics.values())
        causes.append(("backlog", "warn", f"{dropped} message(s) dropped: the disk does not keep up") if dropped
                      else ("backlog", "", ""))
        if self.last_error:
            causes.append(("writing", "error", self.last_error))
        return causes

    def snapshot(self) -> dict[str, Any]:
        """Values for ``/diagnostics``."""
        episode = self._episode
        values: dict[str, Any] = {"state": "recording" if episode else "idle",
                                  "episode": episode.name if episode else "",
                                  "out_dir": str(self.root), "episodes kept": self.episodes_kept,
                                  "episodes discarded": self.episodes_discarded,
                                  "instruction": self.instruction or self._goal_text}
        if self._free_bytes is not None:
            values["disk free GB"] = self._free_bytes / _GB
        if episode is not None:
            with episode.lock:
                values["episode s"] = time.monotonic() - episode.started_monotonic
                values["backlog MB"] = episode.backlog / 1e6
                stats = {t: s.as_dict() for t, s in episode.stats.items()}
            values["episode MB written"] = sum(s["bytes"] for s in stats.values()) / 1e6
            for topic, s in stats.items():
                values[f"{topic} written"] = s["written"]
                values[f"{topic} dropped (backlog)"] = s["dropped_backlog"]
                values[f"{topic} lost (middleware)"] = s["lost"]
                values[f"{topic} missing (stamp gaps)"] = s["missing"]
        for topic, state in self._topics.items():
            values[f"{topic} received"] = state.received_total
        values["dropped total (backlog)"] = sum(s.dropped_total for s in self._topics.values())
        values["lost total (middleware)"] = sum(s.lost_total for s in self._topics.values())
        return values


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return ""
