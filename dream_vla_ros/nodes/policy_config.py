"""Parameters of the policy node (ROS-free; the node declares one ROS parameter per field, see ``params``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from dream_vla_ros.configuration import require
from dream_vla_ros.nodes.conversions import CompressedLimits

COMPRESSED_SUFFIX = "/compressed"


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Policy node parameters (read when the node is configured; ``halting_k_max`` and ``halting_delta`` set
    while it is configured, e.g. with ``ros2 param set``, apply from the next chunk on).

    model: model directory (config.json + weights) or the name of a shipped model; required.
    backend: inference backend: torch (onnxruntime, tensorrt once installed), or package.module:factory.
    device: where the backend runs: cpu, cuda or cuda:N.
    precision: numeric precision of the backend: fp32 (torch); fp16 with TensorRT.
    threads: CPU threads of the backend (0 = the backend's default).
    halting_k_max: cap on recurrent-core iterations per chunk (0 = the checkpoint's default).
    halting_delta: halting threshold on the change between iterations (negative = the checkpoint's default).
    halting_check_every: read the change back every n-th core iteration only (onnxruntime and tensorrt
        backends; 1 = the exact halting rule; n > 1 saves device waits and may stop up to n - 1 iterations later).
    engine_on_miss: tensorrt backend without a cached engine for this model, GPU and TensorRT: build (minutes
        inside configure, progress on the ROS log and /diagnostics) or error (refuse; build ahead of time with
        ``dream-vla-ros build-engine``).
    engine_cache_dir: engine cache directory of the tensorrt / onnxruntime TensorRT EP backends (empty =
        ``~/.cache/dream_vla_ros``, or ``$DREAM_VLA_CACHE``).
    envelope_margin: joint units (rad) the predicted targets may lie outside the joint positions the model was
        trained on (its envelope, recorded in the checkpoint); further out they are clipped to it, so a policy
        that drifts out of what it knows steers back instead of further out. Negative = off.
    warmup_runs: dummy inferences at configure time so the first real chunk is not slow.
    autostart: configure and activate at start; false waits for lifecycle transitions (~/change_state).
    camera_topics: one image topic per model camera, in the model's camera order; a topic ending in
        /compressed carries sensor_msgs/CompressedImage (JPEG/PNG), any other sensor_msgs/Image
        (rgb8, bgr8, mono8). Sensor-data QoS (best effort, newest frame only).
    image_width: pixels every camera frame must have across (0 = any width).
    image_height: pixels every camera frame must have down (0 = any height).
    joint_names: robot joint names in the model's joint order (empty = the model's own names).
    strict_joint_names: reject joint states that also name joints the model does not use.
    joint_fault_margin: rad (gripper: its units); a joint state further than this outside the joint envelope
        the model was trained on is a sensor fault: no inference (the executor holds) and the cause is reported.
        The default, a full turn, leaves the arm outside the envelope to the envelope clipping (envelope_margin)
        and catches only readings no arm can have. Negative = off (also off for a model without an envelope).
    joint_states_topic: sensor_msgs/JointState topic (sensor-data QoS).
    goal_topic: std_msgs/String language goal (reliable, transient local); an empty goal means stop.
    chunk_request_topic: std_msgs/Header requests from the chunk executor (see executor_node).
    max_image_age: seconds; a frame older than this at inference start blocks inference.
    max_joint_state_age: seconds; the same for the joint state.
    max_future: seconds a stamp may lie ahead of this node's clock (clock offset between machines).
    max_sync_skew: seconds the stamps of the frames and the joint state of one observation may spread.
    input_recovery_time: seconds a camera or the joint state must stay fresh (and in sync) without a break
        after a timing fault before it is used again (hysteresis against stop-and-go on a stream that keeps
        crossing its age limit).
    max_compressed_bytes: bytes; a larger CompressedImage is rejected without decoding it.
    max_image_pixels: width x height a CompressedImage's PNG / JPEG header may declare; larger frames are
        rejected before decoding (bounds the decode's memory and time; docs/performance.md).
    max_goal_bytes: bytes; a longer goal is refused (and stops the robot). Goals up to 512 bytes are read
        whole by WordLlama models (nothing is cut).
    min_goal_confidence: a goal whose confidence (its best match with the instructions the model was trained
        on, :mod:`dream_vla_ros.policy.goals`) is lower is refused; -1 = the model's measured default.
    request_timeout: seconds after which a request the executor stopped repeating is ignored; also the
        time after which a request still repeated is answered again (its chunk was lost).
    diagnostics_period: seconds between /diagnostics messages (also published at once on a new cause).
    profile_path: file to append one JSON line of timings per chunk to (empty = off; for benchmarks).
    added_delay: test setting, 0 on a robot: seconds of this node's clock (sim time under use_sim_time) each
        chunk is held back after inference before it is published, to measure how the closed loop degrades
        when chunks come late (a slower engine, a loaded computer, a policy across a network;
        ``eval --delay-sweep``). The inference worker waits meanwhile, as it would for a slower engine.
    added_delay_jitter: seconds; each chunk's added delay is drawn uniformly from added_delay +- this
        (never below 0).
    """

    model: str = ""
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 0
    halting_k_max: int = 0
    halting_delta: float = -1.0
    halting_check_every: int = 1
    engine_on_miss: Literal["build", "error"] = "build"
    engine_cache_dir: str = ""
    envelope_margin: float = 0.1
    added_delay: float = 0.0
    added_delay_jitter: float = 0.0
    warmup_runs: int = 2
    autostart: bool = True
    camera_topics: tuple[str, ...] = ("camera/image_raw",)
    image_width: int = 0
    image_height: int = 0
    joint_names: tuple[str, ...] = ()
    strict_joint_names: bool = False
    joint_fault_margin: float = 6.28
    joint_states_topic: str = "joint_states"
    goal_topic: str = "goal"
    chunk_request_topic: str = "chunk_executor/chunk_request"
    max_image_age: float = 0.2
    max_joint_state_age: float = 0.1
    max_future: float = 0.05
    max_sync_skew: float = 0.15
    input_recovery_time: float = 0.25
    max_compressed_bytes: int = 8 << 20
    max_image_pixels: int = 1920 * 1200
    max_goal_bytes: int = 512
    min_goal_confidence: float = -1.0
    request_timeout: float = 1.0
    diagnostics_period: float = 1.0
    profile_path: str = ""

    def __post_init__(self) -> None:
        require(bool(self.backend), "backend", "must be non-empty")
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        require(self.halting_k_max >= 0, "halting_k_max", f"must be >= 0, got {self.halting_k_max}")
        require(self.halting_check_every >= 1, "halting_check_every", f"must be >= 1, got {self.halting_check_every}")
        require(self.warmup_runs >= 0, "warmup_runs", f"must be >= 0, got {self.warmup_runs}")
        require(len(self.camera_topics) >= 1, "camera_topics", "at least one camera topic is needed")
        require(all(self.camera_topics), "camera_topics", "topics must be non-empty")
        require(self.image_width >= 0 and self.image_height >= 0, "image_width", "must be >= 0")
        require((self.image_width == 0) == (self.image_height == 0), "image_height",
                "image_width and image_height must both be set or both be 0")
        require(len(set(self.joint_names)) == len(self.joint_names), "joint_names", "must be unique")
        for name in ("max_image_age", "max_joint_state_age", "max_sync_skew", "request_timeout",
                     "diagnostics_period"):
            require(getattr(self, name) > 0.0, name, f"must be > 0 s, got {getattr(self, name)}")
        require(self.max_future >= 0.0, "max_future", f"must be >= 0 s, got {self.max_future}")
        require(self.input_recovery_time >= 0.0, "input_recovery_time",
                f"must be >= 0 s, got {self.input_recovery_time}")
        for name in ("max_compressed_bytes", "max_image_pixels"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.max_goal_bytes >= 1, "max_goal_bytes", f"must be >= 1, got {self.max_goal_bytes}")
        require(-1.0 <= self.min_goal_confidence <= 1.0, "min_goal_confidence",
                f"must be in [-1, 1] (-1: the model's default), got {self.min_goal_confidence}")
        for name in ("added_delay", "added_delay_jitter"):
            value = getattr(self, name)
            require(math.isfinite(value) and 0.0 <= value <= 10.0, name, f"must be in [0, 10] s, got {value}")

    @property
    def expected_image_size(self) -> tuple[int, int] | None:
        """(width, height) every frame must have, or None when either is 0 (any size)."""
        return (self.image_width, self.image_height) if self.image_width and self.image_height else None

    @property
    def compressed_limits(self) -> CompressedLimits:
        return CompressedLimits(self.max_compressed_bytes, self.max_image_pixels)

    def engine_settings(self) -> dict[str, object]:
        """Keyword settings for ``load_engine`` (only those that differ from the backend defaults)."""
        settings: dict[str, object] = {"device": self.device, "precision": self.precision}
        if self.threads:
            settings["threads"] = self.threads
        if self.halting_k_max:
            settings["halting_k_max"] = self.halting_k_max
        if self.halting_delta >= 0.0:
            settings["halting_delta"] = self.halting_delta
        if self.halting_check_every != 1:
            settings["check_every"] = self.halting_check_every
        if self.engine_on_miss != "build":
            settings["on_miss"] = self.engine_on_miss
        if self.engine_cache_dir:
            settings["cache_dir"] = self.engine_cache_dir
        return settings


def is_compressed_topic(topic: str) -> bool:
    return topic.rstrip("/").endswith(COMPRESSED_SUFFIX)
