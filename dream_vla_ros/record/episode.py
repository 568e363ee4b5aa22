"""The on-disk layout of recorded episodes and their ``episode.json`` record (ROS-free, no rosbags needed).

``episode.json`` (format ``dream_vla_ros.recording``, version 1) sits in each episode's rosbag2 directory; the
same object is stored as ``custom_data["dream_vla_ros.episode"]`` in ``metadata.yaml`` once the bag is closed,
so an episode stays self-describing when only the bag is copied. Keys:

- ``episode``: directory name; ``status``: ``recording`` (being recorded, or the recorder was killed),
  ``complete`` (stopped and kept with ``~/stop``), ``interrupted`` (closed cleanly because the recorder shut
  down mid-episode), ``salvaged`` (recovered from a killed recorder's file by ``record repair``),
  ``write_error`` (the disk failed while recording); ``complete``: status == complete.
- ``task``, ``instruction``: what the episode demonstrates; ``success``: the operator kept it as a good one.
- ``start_ns``, ``stop_ns`` (receive-clock ns, the bag's timestamps), ``duration_s``.
- ``topics``: topic -> ``{"role", "type", "type_hash"}`` (role: camera, joint_states, action, goal, extra);
  ``cameras``: camera name -> topic; ``joint_states``: topic; ``action``: ``{"source", "topics"}``; ``goal``.
- ``counts``: topic -> ``received``, ``written``, ``dropped_backlog`` (dropped because the disk fell behind),
  ``lost`` (reported lost by the middleware), ``missing`` (estimated from gaps in header stamps).
- ``recorder``: node name, host, ROS distribution, package version, config.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dream_vla_ros.errors import DreamVlaError

RECORDING_FORMAT = "dream_vla_ros.recording"
RECORDING_VERSION = 1
INFO_FILE = "episode.json"
INCOMPLETE_DIR = "incomplete"
CUSTOM_DATA_KEY = "dream_vla_ros.episode"

STATUS_RECORDING = "recording"
STATUS_COMPLETE = "complete"
STATUS_INTERRUPTED = "interrupted"
STATUS_SALVAGED = "salvaged"
STATUS_WRITE_ERROR = "write_error"

_EPISODE_DIR = re.compile(r"^episode_(\d{6,})$")


class RecorderError(DreamVlaError):
    """A recording cannot start, stop or be read; the message says why."""


def episode_name(index: int) -> str:
    return f"episode_{index:06d}"


def episode_index(name: str) -> int | None:
    match = _EPISODE_DIR.match(name)
    return int(match.group(1)) if match else None


def next_index(root: str | Path) -> int:
    """One past the highest episode number in ``root`` or ``root/incomplete`` (numbers are never reused
    while a directory with that number exists)."""
    root = Path(root)
    found = [episode_index(p.name) for d in (root, root / INCOMPLETE_DIR) if d.is_dir() for p in d.iterdir()]
    numbers = [n for n in found if n is not None]
    return max(numbers) + 1 if numbers else 0


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's data and metadata to disk (best effort where not supported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_info(directory: Path, info: dict[str, Any]) -> None:
    """Write ``episode.json`` atomically (temporary file, fsync, rename)."""
    target = directory / INFO_FILE
    partial = directory / (INFO_FILE + ".partial")
    with open(partial, "w") as handle:
        json.dump(info, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)


def read_info(bag_dir: str | Path) -> dict[str, Any] | None:
    """The episode record of a bag directory: ``episode.json``, else ``metadata.yaml``'s custom_data; None if
    neither holds one."""
    bag_dir = Path(bag_dir)
    path = bag_dir / INFO_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RecorderError(f"{path}: unreadable ({exc})") from None
        if isinstance(data, dict) and data.get("format") == RECORDING_FORMAT:
            return data
    metadata = bag_dir / "metadata.yaml"
    if metadata.is_file():
        import yaml

        try:
            document = yaml.safe_load(metadata.read_text()) or {}
        except yaml.YAMLError:
            return None
        custom = (document.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
        if CUSTOM_DATA_KEY in custom:
            try:
                data = json.loads(custom[CUSTOM_DATA_KEY])
            except json.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


@dataclass(frozen=True)
class EpisodeListing:
    """One episode directory of a recordings directory."""

    path: Path
    status: str
    readable: bool  # has metadata.yaml (a closed rosbag2 directory)
    duration_s: float | None
    task: str
    instruction: str

    def line(self) -> str:
        duration = f"{self.duration_s:6.1f} s" if self.duration_s is not None else "     ? s"
        mark = "" if self.readable else "  [not readable: run `dream-vla-ros record repair`]"
        return f"{self.path.name:16s} {self.status:12s} {duration}  {self.instruction!r}{mark}"


def list_episodes(root: str | Path) -> list[EpisodeListing]:
    """Finished episodes (``root/episode_*``) then incomplete ones (``root/incomplete/episode_*``)."""
    root = Path(root)
    out = []
    for directory in (root, root / INCOMPLETE_DIR):
        if not directory.is_dir():
            continue
        for path in sorted(p for p in directory.iterdir() if p.is_dir() and episode_index(p.name) is not None):
            try:
                info = read_info(path) or {}
            except RecorderError:
                info = {}
            status = str(info.get("status", "unknown"))
            if directory != root and status == STATUS_COMPLETE:
                status = "closing"  # stopped, not yet moved (a kill between the two steps; repair finishes it)
            duration = info.get("duration_s")
            out.append(EpisodeListing(path, status, (path / "metadata.yaml").is_file(),
                                      float(duration) if duration is not None else None,
                                      str(info.get("task", "")), str(info.get("instruction", ""))))
    return out
