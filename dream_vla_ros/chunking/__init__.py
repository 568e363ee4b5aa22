"""How chunks become motion: merge action chunks on their observation clock, enforce joint limits, and
stream short trajectories to a JointTrajectoryController (pure numpy; no ROS, no torch).

Entry point: :class:`ChunkExecutor` (see :mod:`dream_vla_ros.chunking.executor` for how a node drives it and
:mod:`dream_vla_ros.chunking.window` for the controller setup it assumes).
"""

from dream_vla_ros.chunking.chunk import REJECT_REASONS, ActionChunk
from dream_vla_ros.chunking.executor import (
    MODES,
    ChunkExecutor,
    CommandedState,
    ExecutorConfig,
    MergeResult,
)
from dream_vla_ros.chunking.limits import JointLimits
from dream_vla_ros.chunking.merge import MergeConfig
from dream_vla_ros.chunking.stats import ExecutorStats
from dream_vla_ros.chunking.window import Window, WindowConfig

__all__ = [
    "MODES",
    "REJECT_REASONS",
    "ActionChunk",
    "ChunkExecutor",
    "CommandedState",
    "ExecutorConfig",
    "ExecutorStats",
    "JointLimits",
    "MergeConfig",
    "MergeResult",
    "Window",
    "WindowConfig",
]
