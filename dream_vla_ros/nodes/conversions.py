"""Message <-> array conversions with strict validation (no cv_bridge; OpenCV and numpy only).

This module is the input-validation contract of the nodes (docs/input_validation.md): one checking function
per message type, shared by the policy node and the chunk executor. Every function that reads a message
raises :class:`~dream_vla_ros.errors.InputError` with a message naming what is wrong, so no motion is ever
derived from data that failed a check. Messages are read by attribute (duck typing): nothing here needs a
running ROS context, and the message classes are imported only where a message is built.

Zero copy: :func:`image_to_rgb` returns a read-only *view* of the message buffer for ``rgb8`` (rows padded or
not), ``bgr8`` (channel-reversed view) and ``mono8`` (broadcast view); preprocessing copies only the crop it
resizes. The view keeps the message's buffer alive; never keep it longer than the message would be kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dream_vla_ros.errors import InputError

# encoding -> channels
IMAGE_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "mono8": 1}
MAX_IMAGE_SIDE = 16384


# -- time ----------------------------------------------------------------------------------------------------
NANOSECONDS = 1_000_000_000


def stamp_to_seconds(stamp: Any) -> float:
    """``builtin_interfaces/Time`` -> float seconds, unchecked (for stamps this package wrote; see
    :func:`checked_stamp` for stamps from outside)."""
    return stamp.sec + stamp.nanosec * 1e-9


def checked_stamp(stamp: Any, source: str) -> float:
    """A header stamp from outside -> float seconds; InputError unless it is a valid ``builtin_interfaces/Time``
    (``0 <= nanosec < 1e9``, ``sec >= 0``). A zero stamp passes here (the freshness check rejects it)."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < NANOSECONDS:
        raise InputError(f"{source}: invalid header stamp (nanosec {nanosec} is not in [0, 1e9))")
    if sec < 0:
        raise InputError(f"{source}: invalid header stamp (negative sec {sec})")
    return sec + nanosec * 1e-9


def seconds_to_stamp(seconds: float, stamp: Any | None = None) -> Any:
    """Float seconds (>= 0) -> ``builtin_interfaces/Time`` (filled in place when ``stamp`` is given)."""
    if stamp is None:
        from builtin_interfaces.msg import Time

        stamp = Time()
    nanoseconds = max(0, round(seconds * 1e9))
    stamp.sec, stamp.nanosec = divmod(nanoseconds, NANOSECONDS)
    return stamp


def duration_to_seconds(duration: Any) -> float:
    return duration.sec + duration.nanosec * 1e-9


def seconds_to_duration(seconds: float) -> Any:
    from builtin_interfaces.msg import Duration

    nanoseconds = max(0, round(seconds * 1e9))
    sec, nanosec = divmod(nanoseconds, NANOSECONDS)
    return Duration(sec=sec, nanosec=nanosec)


# -- images --------------------------------------------------------------------------------------------------
def check_image(msg: Any, name: str = "image", expected_size: tuple[int, int] | None = None) -> int:
    """Validate a ``sensor_msgs/Image`` header without touching its pixels; return the channel count.

    expected_size: (width, height) the camera must deliver, or None for any size.
    """
    encoding = msg.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(f"{name}: unsupported encoding {encoding!r} (supported: {', '.join(IMAGE_ENCODINGS)})")
    channels = IMAGE_ENCODINGS[encoding]
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise InputError(f"{name}: invalid size {width}x{height}")
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise InputError(f"{name}: size {width}x{height}, expected {expected_size[0]}x{expected_size[1]}")
    if step < width * channels:
        raise InputError(f"{name}: step {step} is smaller than width * channels = {width * channels}")
    size = len(msg.data)
    if size != step * height:
        what = "truncated" if size < step * height else "oversized"
        raise InputError(f"{name}: data {what}: {size} bytes, step * height = {step * height}")
    return channels


def image_to_rgb(msg: Any, name: str = "image", expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` (rgb8, bgr8, mono8) -> read-only RGB uint8 view [H, W, 3] of the message data."""
    channels = check_image(msg, name, expected_size)
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    rows = flat.reshape(height, step)[:, : width * channels]
    pixels = rows.reshape(height, width, channels)
    if msg.encoding == "rgb8":
        rgb = pixels
    elif msg.encoding == "bgr8":
        rgb = pixels[..., ::-1]
    else:
        rgb = np.broadcast_to(pixels, (height, width, 3))
    rgb = rgb.view()
    rgb.flags.writeable = False
    return rgb


@dataclass(frozen=True)
class CompressedLimits:
    """Bounds checked on a compressed frame before it is decoded: encoded bytes, and pixels (width x height as
    its PNG / JPEG header declares them)."""

    max_bytes: int = 4 << 20
    max_pixels: int = 1920 * 1200


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (they carry the size); C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def compressed_header(data: bytes) -> tuple[str, int, int, int]:
    """``(format, width, height, bits per sample)`` from the header of a PNG or JPEG stream, without decoding
    it; InputError for anything else (other formats, a header cut short, no size before the image data)."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise InputError("PNG without an IHDR header")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return "png", width, height, data[24]
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise InputError(f"JPEG marker expected at byte {i}")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in _JPEG_STANDALONE:
                i += 2
                continue
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if marker in _JPEG_SOF:
                if length < 8 or i + 9 > len(data):
                    raise InputError("JPEG frame header cut short")
                precision = data[i + 4]
                height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
                return "jpeg", width, height, precision
            if marker in (0xD9, 0xDA) or length < 2:  # end of image or scan data before any frame header
                break
            i += 2 + length
        raise InputError("JPEG without a frame header (no size)")
    raise InputError("not a PNG or JPEG stream")


def check_compressed(
    msg: Any, name: str = "image", expected_size: tuple[int, int] | None = None,
    limits: CompressedLimits = CompressedLimits(),
) -> tuple[int, int]:
    """Validate a ``sensor_msgs/CompressedImage`` from its encoded size and header only; return (width, height).

    Rejects (InputError) empty data, more than ``limits.max_bytes``, anything but 8-bit PNG / JPEG, a declared
    size of 0 or above ``limits.max_pixels``, and a declared size other than ``expected_size``.
    """
    data = bytes(msg.data)
    if not data:
        raise InputError(f"{name}: compressed image without data")
    if len(data) > limits.max_bytes:
        raise InputError(f"{name}: compressed image of {len(data)} bytes (limit {limits.max_bytes})")
    try:
        _, width, height, bits = compressed_header(data)
    except InputError as exc:
        raise InputError(f"{name}: cannot decode compressed image (format {msg.format!r}, {len(data)} bytes): "
                         f"{exc}") from None
    if bits != 8:
        raise InputError(f"{name}: compressed image has {bits}-bit samples, expected 8-bit")
    if width <= 0 or height <= 0:
        raise InputError(f"{name}: invalid size {width}x{height}")
    if width * height > limits.max_pixels:
        raise InputError(f"{name}: compressed image declares {width}x{height} = {width * height} pixels "
                         f"(limit {limits.max_pixels}); not decoded")
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise InputError(f"{name}: size {width}x{height}, expected {expected_size[0]}x{expected_size[1]}")
    return width, height


def compressed_to_rgb(
    msg: Any, name: str = "image", expected_size: tuple[int, int] | None = None,
    limits: CompressedLimits = CompressedLimits(),
) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (8-bit JPEG or PNG; gray, BGR or BGRA) -> RGB uint8 [H, W, 3] (decoded
    copy). :func:`check_compressed` bounds the frame first, so the decode's cost is bounded before it is paid."""
    import cv2

    width, height = check_compressed(msg, name, expected_size, limits)
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise InputError(f"{name}: cannot decode compressed image (format {msg.format!r}, {len(msg.data)} bytes)")
    if decoded.dtype != np.uint8:
        raise InputError(f"{name}: decoded image has depth {decoded.dtype}, expected 8-bit")
    if decoded.shape[:2] != (height, width):
        raise InputError(f"{name}: decoded {decoded.shape[1]}x{decoded.shape[0]}, header said {width}x{height}")
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    codes = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if decoded.shape[2] not in codes:
        raise InputError(f"{name}: decoded image has {decoded.shape[2]} channels")
    return cv2.cvtColor(decoded, codes[decoded.shape[2]])


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", stamp: Any | None = None, frame_id: str = "") -> Any:
    """RGB uint8 [H, W, 3] -> ``sensor_msgs/Image`` in ``encoding`` (for cameras in tests and benchmarks)."""
    from sensor_msgs.msg import Image

    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"expected an RGB array [H, W, 3], got shape {list(array.shape)}")
    if encoding == "bgr8":
        array = array[..., ::-1]
    elif encoding == "mono8":
        array = array.mean(axis=2).astype(np.uint8)
    elif encoding != "rgb8":
        raise InputError(f"unsupported encoding {encoding!r}")
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding)
    msg.step = array.shape[1] * IMAGE_ENCODINGS[encoding]
    msg.data = np.ascontiguousarray(array).tobytes()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


# -- joint states --------------------------------------------------------------------------------------------
class JointMapper:
    """``sensor_msgs/JointState`` -> positions in a fixed joint order, by name (joints are reordered).

    Missing joints, duplicate names, a position array shorter than the names and NaN/inf values of the joints
    used raise InputError; so does a position outside ``bounds`` (per joint ``(low, high)`` arrays, the limits
    already widened by their margin): an encoder reading there is a sensor fault. Names not in ``joint_names``
    are ignored unless ``strict``. The name -> index lookup is cached per distinct name list (publishers keep
    theirs fixed), so a 500 Hz stream costs one dict lookup.
    """

    def __init__(self, joint_names: Sequence[str], *, strict: bool = False, source: str = "joint_states",
                 bounds: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        if not joint_names:
            raise InputError(f"{source}: no joint names to map")
        self.joint_names = tuple(joint_names)
        self.strict = strict
        self.source = source
        self.bounds = None
        if bounds is not None:
            low, high = (np.broadcast_to(np.asarray(v, dtype=np.float64), (len(joint_names),)) for v in bounds)
            self.bounds = (low, high)
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def indices(self, names: Sequence[str]) -> np.ndarray:
        key = tuple(names)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        position = {}
        for i, joint in enumerate(key):
            if joint in position:
                raise InputError(f"{self.source}: duplicate joint name {joint!r}")
            position[joint] = i
        missing = [j for j in self.joint_names if j not in position]
        if missing:
            raise InputError(f"{self.source}: missing joint {missing[0]!r} (got {list(key)})")
        if self.strict:
            unknown = [j for j in key if j not in self.joint_names]
            if unknown:
                raise InputError(f"{self.source}: unknown joint {unknown[0]!r} (expected {list(self.joint_names)})")
        index = np.array([position[j] for j in self.joint_names], dtype=np.intp)
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = index
        return index

    def positions(self, msg: Any) -> np.ndarray:
        """The positions of ``joint_names`` (float64 [J]) from a JointState message."""
        index = self.indices(msg.name)
        values = np.asarray(msg.position, dtype=np.float64)
        if values.shape != (len(msg.name),):
            raise InputError(f"{self.source}: {len(msg.name)} names but {values.size} positions")
        out = values[index]
        if not np.all(np.isfinite(out)):
            bad = self.joint_names[int(np.flatnonzero(~np.isfinite(out))[0])]
            raise InputError(f"{self.source}: non-finite position for joint {bad!r}")
        if self.bounds is not None:
            low, high = self.bounds
            outside = (out < low) | (out > high)
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise InputError(f"{self.source}: joint {self.joint_names[i]!r} at {out[i]:.3f} is outside "
                                 f"[{low[i]:.3f}, {high[i]:.3f}] (limits + margin): sensor fault")
        return out

    def read(self, msg: Any) -> tuple[np.ndarray, float]:
        """``(positions, stamp seconds)`` of a JointState: :meth:`positions` and :func:`checked_stamp`."""
        return self.positions(msg), checked_stamp(msg.header.stamp, self.source)


# -- goals ---------------------------------------------------------------------------------------------------
def check_goal(text: Any, max_bytes: int) -> str:
    """A language goal from ``std_msgs/String`` -> its stripped text ('' means stop).

    Raises InputError for text longer than ``max_bytes`` UTF-8 bytes, text that was not valid UTF-8 on the
    wire (rclpy decodes it with replacement characters) and control characters other than whitespace.
    """
    if not isinstance(text, str):
        raise InputError(f"goal: expected a string, got {type(text).__name__}")
    if "\ufffd" in text:
        raise InputError("goal: not valid UTF-8")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InputError("goal: not valid UTF-8") from None
    if size > max_bytes:
        raise InputError(f"goal: too long ({size} bytes, limit {max_bytes})")
    stripped = text.strip()
    if any(ord(c) < 32 and c not in "\t\n\r" for c in stripped) or "\x7f" in stripped:
        raise InputError("goal: contains control characters")
    return stripped


# -- chunks --------------------------------------------------------------------------------------------------
def prediction_to_trajectory(positions: np.ndarray, joint_names: Sequence[str], dt: float, stamp: Any) -> Any:
    """A chunk [H, J] -> ``trajectory_msgs/JointTrajectory``: header.stamp = ``stamp`` (the observation stamp),
    point i at ``time_from_start = (i + 1) * dt`` (positions only: the executor derives velocities)."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    array = np.asarray(positions, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(joint_names) or array.shape[0] < 1:
        raise InputError(f"chunk: positions of shape {list(array.shape)} for {len(joint_names)} joints")
    if not np.all(np.isfinite(array)):
        raise InputError("chunk: contains NaN or infinite positions")
    msg = JointTrajectory(joint_names=list(joint_names))
    msg.header.stamp = stamp
    msg.points = [
        JointTrajectoryPoint(positions=row, time_from_start=seconds_to_duration((i + 1) * dt))
        for i, row in enumerate(array.tolist())
    ]
    return msg


@dataclass(frozen=True)
class ChunkMessage:
    """A validated chunk from ``trajectory_msgs/JointTrajectory`` in a fixed joint order.

    t0: header stamp (seconds; the observation time); dt: seconds between rows; positions [H, J] float64;
    velocities [H, J] or None. Row i is the target for ``t0 + (i + 1) * dt``.
    """

    t0: float
    dt: float
    positions: np.ndarray
    velocities: np.ndarray | None


def trajectory_to_chunk(msg: Any, joint_names: Sequence[str], *, dt_tolerance: float = 1e-3) -> ChunkMessage | None:
    """``JointTrajectory`` -> :class:`ChunkMessage` ordered as ``joint_names``; None for an empty trajectory
    (the stop signal). Unknown, missing or duplicate joints, uneven or non-increasing times, ragged rows and
    NaN/inf raise InputError."""
    if not msg.points:
        return None
    names = list(msg.joint_names)
    if len(set(names)) != len(names):
        raise InputError("chunk: duplicate joint names")
    unknown = [j for j in names if j not in joint_names]
    if unknown:
        raise InputError(f"chunk: unknown joint {unknown[0]!r} (expected {list(joint_names)})")
    missing = [j for j in joint_names if j not in names]
    if missing:
        raise InputError(f"chunk: missing joint {missing[0]!r}")
    order = [names.index(j) for j in joint_names]
    rows, vel_rows, times = [], [], []
    has_velocities = all(len(p.velocities) for p in msg.points)
    for i, point in enumerate(msg.points):
        if len(point.positions) != len(names):
            raise InputError(f"chunk: point {i} has {len(point.positions)} positions for {len(names)} joints")
        if has_velocities and len(point.velocities) != len(names):
            raise InputError(f"chunk: point {i} has {len(point.velocities)} velocities for {len(names)} joints")
        rows.append(point.positions)
        if has_velocities:
            vel_rows.append(point.velocities)
        times.append(duration_to_seconds(point.time_from_start))
    positions = np.asarray(rows, dtype=np.float64)[:, order]
    velocities = np.asarray(vel_rows, dtype=np.float64)[:, order] if has_velocities else None
    if not np.all(np.isfinite(positions)) or (velocities is not None and not np.all(np.isfinite(velocities))):
        raise InputError("chunk: contains NaN or infinite values")
    t = np.asarray(times)
    dt = float(t[0])
    if not dt > 0.0:
        raise InputError(f"chunk: first time_from_start must be > 0, got {dt}")
    expected = dt * np.arange(1, len(t) + 1)
    if not np.allclose(t, expected, rtol=0.0, atol=max(dt_tolerance, 1e-9)):
        raise InputError("chunk: points are not evenly spaced at time_from_start = (i + 1) * dt")
    t0 = checked_stamp(msg.header.stamp, "chunk")
    if not math.isfinite(t0) or t0 <= 0.0:
        raise InputError("chunk: header.stamp must be the observation time (> 0)")
    return ChunkMessage(t0=t0, dt=dt, positions=positions, velocities=velocities)


def window_to_trajectory(
    joint_names: Sequence[str],
    positions: np.ndarray,
    velocities: np.ndarray | None,
    time_from_start: Sequence[float],
    stamp: Any | None = None,
    columns: Sequence[int] | None = None,
) -> Any:
    """A window of the executor ([N, J] over ``time_from_start``) -> ``JointTrajectory`` for a controller.

    columns: which joints (column indices) go into this message (all when None); ``stamp`` None = 0 (start
    when the controller samples it, the JTC convention).
    """
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    cols = list(range(len(joint_names))) if columns is None else list(columns)
    pos = np.asarray(positions, dtype=np.float64)[:, cols]
    vel = None if velocities is None else np.asarray(velocities, dtype=np.float64)[:, cols]
    if not np.all(np.isfinite(pos)) or (vel is not None and not np.all(np.isfinite(vel))):
        raise InputError("window: contains NaN or infinite values")
    msg = JointTrajectory(joint_names=[joint_names[c] for c in cols])
    if stamp is not None:
        msg.header.stamp = stamp
    points = []
    vel_rows = vel.tolist() if vel is not None else None
    for i, (row, t) in enumerate(zip(pos.tolist(), time_from_start, strict=True)):
        point = JointTrajectoryPoint(positions=row, time_from_start=seconds_to_duration(float(t)))
        if vel_rows is not None:
            point.velocities = vel_rows[i]
        points.append(point)
    msg.points = points
    return msg
