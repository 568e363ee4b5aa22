"""Parameters of the policy node (ROS-free; the node declares one ROS parameter per field, see ``params``)."""

from __future__ import annotations

from dataclasses import dataclass

from dream_vla_ros.configuration import require

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
    joint_states_topic: sensor_msgs/JointState topic (sensor-data QoS).
    goal_topic: std_msgs/String language goal (reliable, transient local); an empty goal means stop.
    chunk_request_topic: std_msgs/Header requests from the chunk executor (see executor_node).
    max_image_age: seconds; a frame older than this at inference start blocks inference.
    max_joint_state_age: seconds; the same for the joint state.
    max_future: seconds a stamp may lie ahead of this node's clock (clock offset between machines).
    max_sync_skew: seconds the stamps of the frames and the joint state of one observation may spread.
    max_goal_bytes: bytes; a longer goal is rejected (and stops the robot).
    request_timeout: seconds after which a request the executor stopped repeating is ignored; also the
        time after which a request still repeated is answered again (its chunk was lost).
    diagnostics_period: seconds between /diagnostics messages (also published at once on a new cause).
    profile_path: file to append one JSON line of timings per chunk to (empty = off; for benchmarks).
    """

    model: str = ""
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 0
    halting_k_max: int = 0
    halting_delta: float = -1.0
    envelope_margin: float = 0.1
    warmup_runs: int = 2
    autostart: bool = True
    camera_topics: tuple[str, ...] = ("camera/image_raw",)
    image_width: int = 0
    image_height: int = 0
    joint_names: tuple[str, ...] = ()
    strict_joint_names: bool = False
    joint_states_topic: str = "joint_states"
    goal_topic: str = "goal"
    chunk_request_topic: str = "chunk_executor/chunk_request"
    max_image_age: float = 0.2
    max_joint_state_age: float = 0.1
    max_future: float = 0.05
    max_sync_skew: float = 0.15
    max_goal_bytes: int = 1024
    request_timeout: float = 1.0
    diagnostics_period: float = 1.0
    profile_path: str = ""

    def __post_init__(self) -> None:
        require(bool(self.backend), "backend", "must be non-empty")
        require(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")
        require(self.halting_k_max >= 0, "halting_k_max", f"must be >= 0, got {self.halting_k_max}")
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
        require(self.max_goal_bytes >= 1, "max_goal_bytes", f"must be >= 1, got {self.max_goal_bytes}")

    @property
    def expected_image_size(self) -> tuple[int, int] | None:
        """(width, height) every frame must have, or None when either is 0 (any size)."""
        return (self.image_width, self.image_height) if self.image_width and self.image_height else None

    def engine_settings(self) -> dict[str, object]:
        """Keyword settings for ``load_engine`` (only those that differ from the backend defaults)."""
        settings: dict[str, object] = {"device": self.device, "precision": self.precision}
        if self.threads:
            settings["threads"] = self.threads
        if self.halting_k_max:
            settings["halting_k_max"] = self.halting_k_max
        if self.halting_delta >= 0.0:
            settings["halting_delta"] = self.halting_delta
        return settings


def is_compressed_topic(topic: str) -> bool:
    return topic.rstrip("/").endswith(COMPRESSED_SUFFIX)
