"""The on-disk episode dataset: format, writer, reader and statistics (numpy only).

Training samples and splits over its episodes are in :mod:`dream_vla_ros.train.chunk_samples`.

Format (version 1; the same whether episodes come from simulation or from recorded ROS 2 bags; also in
``docs/dataset_format.md``)::

    DATASET/
      meta.json
      episodes/episode_000000.npz
      episodes/episode_000001.npz
      ...

``meta.json``:

- ``format`` = ``"dream_vla_ros.episodes"``, ``version`` = 1.
- ``joint_names``: the J joint names, in the column order of ``proprio`` and ``actions`` (for the Sawyer
  arm: ``right_j0`` .. ``right_j6``, ``gripper``).
- ``dt``: seconds between consecutive frames; also the period of the commanded targets.
- ``cameras``: camera name -> ``{"height": H, "width": W}``.
- ``tasks``: task names present; ``phrasings``: task -> ``{"train": [...], "heldout": [...]}`` (instructions
  stored with episodes come from ``train``; may be empty for data without held-out phrasings).
- ``episodes``: one entry per episode file: ``file`` (relative path), ``task``, ``instruction``, ``seed``
  (-1 when not applicable), ``length`` (frames), ``success``.
- ``stats``: ``proprio`` and ``actions`` -> per-joint ``mean``, ``std``, ``min``, ``max``, ``q01``, ``q99``
  over every frame of every episode.
- ``num_frames``, ``source`` (free-form provenance: generator, settings), ``complete`` (false when the
  writer stopped early).

``episodes/episode_NNNNNN.npz`` (``numpy.savez_compressed``, loadable with ``allow_pickle=False``), T frames:

- ``image_<camera>``: uint8 [T, H, W, 3] RGB, upright, for every camera of ``meta.json``; written in
  Fortran (time-fastest) order, which compresses several times better; ``np.load`` reads it transparently.
- ``proprio``: float32 [T, J] measured joint positions when image t was taken (rad or m; the gripper in its
  own unit, for the Sawyer -1 open .. +1 closed).
- ``actions``: float32 [T, J] the joint-position targets commanded at frame t, i.e. the targets for time
  ``t + dt``; a policy's chunk for frame t is ``actions[t : t + H]``.
- ``timestamps``: float64 [T] seconds since the episode's first frame.
- ``task``, ``instruction``: 0-d unicode arrays; ``seed``: int64; ``success``: bool.

Readers ignore keys they do not know, so later versions may add arrays (for example velocities).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.errors import InputError

FORMAT_NAME = "dream_vla_ros.episodes"
FORMAT_VERSION = 1
META_FILE = "meta.json"
EPISODE_DIR = "episodes"
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class Episode:
    """One episode in memory (see the module docstring for the meaning of each array)."""

    images: Mapping[str, np.ndarray]
    proprio: np.ndarray
    actions: np.ndarray
    task: str
    instruction: str
    seed: int = -1
    success: bool = True
    timestamps: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(self.proprio.shape[0])

    def validate(self, joint_count: int, cameras: Mapping[str, tuple[int, int]]) -> None:
        """Raise InputError naming the first array that does not fit the dataset's shape."""
        steps = self.length
        if steps < 1:
            raise InputError("episode: needs at least one frame")
        for name, array in (("proprio", self.proprio), ("actions", self.actions)):
            if array.shape != (steps, joint_count):
                raise InputError(f"episode.{name}: expected shape ({steps}, {joint_count}), got {array.shape}")
            if not np.all(np.isfinite(array)):
                raise InputError(f"episode.{name}: values must be finite")
        if set(self.images) != set(cameras):
            raise InputError(f"episode.images: expected cameras {sorted(cameras)}, got {sorted(self.images)}")
        for name, (height, width) in cameras.items():
            image = self.images[name]
            if image.dtype != np.uint8 or image.shape != (steps, height, width, 3):
                raise InputError(
                    f"episode.images[{name}]: expected uint8 ({steps}, {height}, {width}, 3),"
                    f" got {image.dtype} {image.shape}"
                )
        if self.timestamps is not None and np.shape(self.timestamps) != (steps,):
            raise InputError(f"episode.timestamps: expected shape ({steps},), got {np.shape(self.timestamps)}")
        if not self.task or not self.instruction.strip():
            raise InputError("episode: task and instruction must be non-empty")


@dataclass(frozen=True)
class EpisodeEntry:
    """An episode's line in ``meta.json``."""

    file: str
    task: str
    instruction: str
    seed: int
    length: int
    success: bool


@dataclass(frozen=True)
class ArrayStats:
    """Per-column statistics of a [N, J] array, each field [J]."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """(values - mean) / std, with std floored so constant columns stay finite."""
        return (values - self.mean) / np.maximum(self.std, _STD_FLOOR)

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize`."""
        return values * np.maximum(self.std, _STD_FLOOR) + self.mean

    def to_json(self) -> dict[str, list[float]]:
        return {name: [float(v) for v in getattr(self, name)] for name in ("mean", "std", "min", "max", "q01", "q99")}

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence[float]]) -> ArrayStats:
        return cls(
            **{name: np.asarray(data[name], dtype=np.float64) for name in ("mean", "std", "min", "max", "q01", "q99")}
        )


def compute_stats(arrays: Sequence[np.ndarray]) -> ArrayStats:
    """Statistics of the rows of several [N_i, J] arrays taken together."""
    if not arrays:
        raise InputError("stats: no data")
    data = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays], axis=0)
    return ArrayStats(
        mean=data.mean(axis=0),
        std=data.std(axis=0),
        min=data.min(axis=0),
        max=data.max(axis=0),
        q01=np.quantile(data, 0.01, axis=0),
        q99=np.quantile(data, 0.99, axis=0),
    )


@dataclass(frozen=True)
class DatasetMeta:
    """The contents of ``meta.json``."""

    joint_names: tuple[str, ...]
    dt: float
    cameras: dict[str, tuple[int, int]]
    tasks: tuple[str, ...]
    phrasings: dict[str, dict[str, list[str]]]
    episodes: tuple[EpisodeEntry, ...]
    stats: dict[str, ArrayStats]
    source: dict[str, Any] = field(default_factory=dict)
    complete: bool = True

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "joint_names": list(self.joint_names),
            "dt": self.dt,
            "cameras": {name: {"height": h, "width": w} for name, (h, w) in self.cameras.items()},
            "tasks": list(self.tasks),
            "phrasings": self.phrasings,
            "num_frames": self.num_frames,
            "complete": self.complete,
            "source": self.source,
            "stats": {name: stats.to_json() for name, stats in self.stats.items()},
            "episodes": [e.__dict__ for e in self.episodes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = META_FILE) -> DatasetMeta:
        if data.get("format") != FORMAT_NAME:
            raise InputError(f"{where}: not a {FORMAT_NAME} dataset (format={data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise InputError(f"{where}: format version {data.get('version')!r} is not supported ({FORMAT_VERSION})")
        try:
            return cls(
                joint_names=tuple(data["joint_names"]),
                dt=float(data["dt"]),
                cameras={name: (int(c["height"]), int(c["width"])) for name, c in data["cameras"].items()},
                tasks=tuple(data["tasks"]),
                phrasings={task: {k: list(v) for k, v in p.items()} for task, p in data["phrasings"].items()},
                episodes=tuple(EpisodeEntry(**e) for e in data["episodes"]),
                stats={name: ArrayStats.from_json(s) for name, s in data["stats"].items()},
                source=dict(data.get("source", {})),
                complete=bool(data.get("complete", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed ({exc!r})") from None


def episode_file(index: int) -> str:
    """Relative path of episode ``index``."""
    return f"{EPISODE_DIR}/episode_{index:06d}.npz"


class DatasetWriter:
    """Writes episodes and then ``meta.json``. Picklable: worker processes may call :meth:`write`.

    root: the dataset directory (created). An existing dataset there is refused unless ``overwrite``,
    which deletes its ``meta.json`` and episode files (nothing else).
    """

    def __init__(
        self,
        root: str | Path,
        joint_names: Sequence[str],
        dt: float,
        cameras: Mapping[str, tuple[int, int]],
        phrasings: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        source: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        if not joint_names:
            raise InputError("joint_names: at least one joint is needed")
        if not (dt > 0 and math.isfinite(dt)):
            raise InputError(f"dt: must be a positive number of seconds, got {dt!r}")
        if not cameras:
            raise InputError("cameras: at least one camera is needed")
        for name, (height, width) in cameras.items():
            if not _CAMERA_NAME.match(name):
                raise InputError(f"cameras: name {name!r} must use only letters, digits, '_' and '-'")
            if height < 1 or width < 1:
                raise InputError(f"cameras[{name}]: size must be positive, got {height}x{width}")
        self.root = Path(root)
        self.joint_names = tuple(joint_names)
        self.dt = float(dt)
        self.cameras = {name: (int(h), int(w)) for name, (h, w) in cameras.items()}
        self.phrasings = {t: {k: list(v) for k, v in p.items()} for t, p in (phrasings or {}).items()}
        self.source = dict(source or {})
        existing = sorted((self.root / EPISODE_DIR).glob("episode_*.npz")) if self.root.is_dir() else []
        if (self.root / META_FILE).exists() or existing:
            if not overwrite:
                raise InputError(f"{self.root}: already holds a dataset (use overwrite to replace it)")
            for path in existing:
                path.unlink()
            (self.root / META_FILE).unlink(missing_ok=True)
        (self.root / EPISODE_DIR).mkdir(parents=True, exist_ok=True)

    def write(self, episode: Episode, index: int) -> EpisodeEntry:
        """Validate and write ``episode`` as episode number ``index``; return its ``meta.json`` entry."""
        episode.validate(len(self.joint_names), self.cameras)
        steps = episode.length
        timestamps = np.arange(steps) * self.dt if episode.timestamps is None else episode.timestamps
        # Time-fastest (Fortran) order: a pixel's history is contiguous, so zlib finds the static background
        # (much smaller than frame-by-frame order; docs/performance.md); np.load restores it transparently.
        arrays = {f"image_{name}": np.asfortranarray(episode.images[name]) for name in self.cameras}
        arrays.update(
            proprio=np.asarray(episode.proprio, dtype=np.float32),
            actions=np.asarray(episode.actions, dtype=np.float32),
            timestamps=np.asarray(timestamps, dtype=np.float64),
            task=np.array(episode.task),
            instruction=np.array(episode.instruction),
            seed=np.array(int(episode.seed), dtype=np.int64),
            success=np.array(bool(episode.success)),
        )
        relative = episode_file(index)
        path = self.root / relative
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(partial, path)
        return EpisodeEntry(
            file=relative,
            task=episode.task,
            instruction=episode.instruction,
            seed=int(episode.seed),
            length=steps,
            success=bool(episode.success),
        )

    def write_record(self, index: int, record: Mapping[str, Any]) -> EpisodeEntry:
        """:meth:`write` for a plain mapping of :class:`Episode` fields (what collection workers produce)."""
        return self.write(Episode(**record), index)

    def finalize(self, entries: Sequence[EpisodeEntry], complete: bool = True) -> DatasetMeta:
        """Compute statistics over the written episodes and write ``meta.json``."""
        entries = tuple(sorted(entries, key=lambda e: e.file))
        if not entries:
            raise InputError(f"{self.root}: no episode was written")
        proprio, actions = [], []
        for entry in entries:
            with np.load(self.root / entry.file, allow_pickle=False) as data:
                proprio.append(data["proprio"])
                actions.append(data["actions"])
        tasks = tuple(dict.fromkeys(e.task for e in entries))
        meta = DatasetMeta(
            joint_names=self.joint_names,
            dt=self.dt,
            cameras=self.cameras,
            tasks=tasks,
            phrasings={t: self.phrasings.get(t, {"train": [], "heldout": []}) for t in tasks},
            episodes=entries,
            stats={"proprio": compute_stats(proprio), "actions": compute_stats(actions)},
            source=self.source,
            complete=complete,
        )
        partial = self.root / (META_FILE + ".partial")
        partial.write_text(json.dumps(meta.to_json(), indent=1))
        os.replace(partial, self.root / META_FILE)
        return meta


def load_meta(root: str | Path) -> DatasetMeta:
    """Read ``root/meta.json``; a missing or malformed file raises InputError."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise InputError(f"{root}: no {META_FILE} (not a dataset directory)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    return DatasetMeta.from_json(data, str(path))


class Dataset:
    """Read access to a dataset directory: ``len(ds)`` episodes, ``ds.episode(i)`` loads one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.meta = load_meta(self.root)

    def __len__(self) -> int:
        return len(self.meta.episodes)

    def episode(self, index: int, cameras: Sequence[str] | None = None) -> Episode:
        """Load episode ``index`` (only ``cameras`` when given)."""
        entry = self.meta.episodes[index]
        names = list(self.meta.cameras) if cameras is None else list(cameras)
        unknown = [c for c in names if c not in self.meta.cameras]
        if unknown:
            raise InputError(f"cameras: {unknown} not in the dataset ({', '.join(self.meta.cameras)})")
        path = self.root / entry.file
        try:
            with np.load(path, allow_pickle=False) as data:
                episode = Episode(
                    images={name: np.ascontiguousarray(data[f"image_{name}"]) for name in names},
                    proprio=data["proprio"],
                    actions=data["actions"],
                    task=str(data["task"]),
                    instruction=str(data["instruction"]),
                    seed=int(data["seed"]),
                    success=bool(data["success"]),
                    timestamps=data["timestamps"],
                )
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path}: cannot read episode ({exc})") from None
        episode.validate(len(self.meta.joint_names), {n: self.meta.cameras[n] for n in names})
        return episode

    def episodes(self, indices: Sequence[int] | None = None, cameras: Sequence[str] | None = None) -> Iterator[Episode]:
        """Load the episodes at ``indices`` (default: all), in order."""
        for index in range(len(self)) if indices is None else indices:
            yield self.episode(index, cameras)
