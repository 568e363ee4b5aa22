"""The settings of a dataset build from recorded bags (``dream-vla-ros dataset build``; see :mod:`.bag_dataset`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dream_vla_ros.configuration import require


@dataclass(frozen=True)
class BuildConfig:
    """How bags become a dataset.

    out: dataset directory to write; overwrite: replace a dataset already there.
    rate: policy rate in Hz (dt = 1 / rate; a model's dt must be a whole multiple of it: 40 Hz suits the
        shipped presets' 0.025 s).
    cameras: NAME=TOPIC per dataset camera (empty: from each episode's record).
    joint_states_topic / action_source / action_topics: override the episode record ("" / empty = as
        recorded; action_source trajectory or leader).
    joint_names: dataset joints in column order (empty: the first joint state's names).
    leader_joint_names: the leader arm's joint names in dataset joint order (empty: the same names).
    image_size: shorter image side in pixels after resizing, aspect kept (0 = as recorded).
    max_gap: s; a longer gap in a camera, joint-state or leader stream refuses the episode.
    max_image_age: s; frames whose newest image is older are misaligned.
    max_misaligned: fraction of misaligned frames above which the episode is refused.
    min_frames: fewer frames refuse the episode.
    trim_idle / idle_tolerance: drop leading frames before the targets move by more than idle_tolerance (rad).
    interpolate_from_desired_state: the controller's setting (start new trajectories from the commanded state).
    val_fraction / seed: the train/validation split by episode (reported and stored in meta.json's source).
    task / instruction: override every episode's label ("" = as recorded).
    allow_incomplete: accept episodes closed on shutdown or salvaged after a crash.
    """

    out: str
    rate: float = 40.0
    cameras: tuple[str, ...] = ()
    joint_states_topic: str = ""
    action_source: str = ""
    action_topics: tuple[str, ...] = ()
    joint_names: tuple[str, ...] = ()
    leader_joint_names: tuple[str, ...] = ()
    image_size: int = 0
    max_gap: float = 0.25
    max_image_age: float = 0.1
    max_misaligned: float = 0.1
    min_frames: int = 10
    trim_idle: bool = True
    idle_tolerance: float = 1e-3
    interpolate_from_desired_state: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    task: str = ""
    instruction: str = ""
    allow_incomplete: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        require(math.isfinite(self.rate) and 0 < self.rate <= 1000, "rate", f"must be in (0, 1000] Hz, got {self.rate}")
        require(self.action_source in ("", "trajectory", "leader"), "action_source", "must be trajectory or leader")
        require(all("=" in c for c in self.cameras), "cameras", "expected NAME=TOPIC items")
        require(self.image_size == 0 or 8 <= self.image_size <= 4096, "image_size", "must be 0 or in [8, 4096] px")
        require(self.max_gap > 0 and self.max_image_age > 0, "max_gap", "gap and age limits must be > 0 s")
        require(0 <= self.max_misaligned <= 1, "max_misaligned", "must be in [0, 1]")
        require(self.min_frames >= 1, "min_frames", "must be >= 1")
        require(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")

    @property
    def dt(self) -> float:
        return 1.0 / self.rate
