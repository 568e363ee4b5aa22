"""``sensor_msgs/JointState`` read straight from its serialised (CDR) bytes, for the control loop.

Deserialising a JointState into a Python message builds a header, a list of name strings and three arrays
(costly at 500 Hz inside a busy node; docs/performance.md); the chunk executor needs the stamp, the
names and the positions of the newest sample at every control tick. :func:`read_joint_state_cdr` reads them
from the bytes a raw polled subscription takes (``nodes/polling.py``) with one ``numpy.frombuffer`` per array,
into a :class:`JointStateView` that :class:`~dream_vla_ros.nodes.conversions.JointMapper` reads like the
message. Plain CDR (XCDR1, what the ROS 2 middlewares use for ROS types) in either byte order is read here;
any other encapsulation, and bytes that do not parse, go through ``rclpy.serialization.deserialize_message``,
so every valid message is read and a malformed one raises InputError.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import numpy as np

from dream_vla_ros.errors import InputError


class _Layout(NamedTuple):
    u32: struct.Struct
    stamp: struct.Struct  # builtin_interfaces/Time: int32 sec, uint32 nanosec
    f8: str  # numpy dtype of a float64


# encapsulation id of plain CDR -> its byte order's layout
_PLAIN_CDR = {order_id: _Layout(struct.Struct(order + "I"), struct.Struct(order + "iI"), order + "f8")
              for order_id, order in ((b"\x00\x00", ">"), (b"\x00\x01", "<"))}


class StampView(NamedTuple):
    sec: int
    nanosec: int


class HeaderView(NamedTuple):
    stamp: StampView
    frame_id: str


class JointStateView(NamedTuple):
    """The fields of a JointState, as the message has them (arrays are read-only float64 views)."""

    header: HeaderView
    name: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class _Reader:
    def __init__(self, data: bytes, layout: _Layout) -> None:
        self.data, self.layout, self.at = data, layout, 4  # after the encapsulation header

    def align(self, size: int) -> None:
        self.at += -(self.at - 4) % size  # alignment counts from the end of the encapsulation header

    def u32(self) -> int:
        self.align(4)
        (value,) = self.layout.u32.unpack_from(self.data, self.at)
        self.at += 4
        return value

    def stamp(self) -> StampView:
        self.align(4)
        sec, nanosec = self.layout.stamp.unpack_from(self.data, self.at)
        self.at += 8
        return StampView(sec, nanosec)

    def string(self) -> str:
        size = self.u32()
        raw = self.data[self.at:self.at + size]
        if size == 0 or len(raw) != size or raw[-1] != 0:
            raise ValueError("bad string")
        self.at += size
        return raw[:-1].decode("utf-8")

    def doubles(self) -> np.ndarray:
        count = self.u32()
        if count:
            self.align(8)
        values = np.frombuffer(self.data, dtype=self.layout.f8, count=count, offset=self.at)
        self.at += 8 * count
        return values


def read_joint_state_cdr(data: bytes, msg_type: Any) -> JointStateView | Any:
    """The JointState serialised in ``data``: a :class:`JointStateView` for plain CDR, else the message of
    ``msg_type`` (sensor_msgs/JointState) that ``rclpy`` deserialises."""
    layout = _PLAIN_CDR.get(bytes(data[:2]))
    if layout is not None:
        try:
            reader = _Reader(data, layout)
            header = HeaderView(reader.stamp(), reader.string())
            names = tuple(reader.string() for _ in range(reader.u32()))
            return JointStateView(header, names, reader.doubles(), reader.doubles(), reader.doubles())
        except (ValueError, struct.error, UnicodeDecodeError):
            pass  # let rclpy decide (and raise for bytes that are not a JointState)
    return _deserialize(data, msg_type)


def _deserialize(data: bytes, msg_type: Any) -> Any:
    from rclpy.serialization import deserialize_message

    try:
        return deserialize_message(data, msg_type)
    except Exception as exc:  # noqa: BLE001 - rclpy raises plain exceptions for bytes it cannot read
        raise InputError(f"joint_states: message could not be read ({exc})") from None
