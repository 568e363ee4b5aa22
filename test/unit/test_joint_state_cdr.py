"""JointState read from its CDR bytes: the same fields as rclpy's deserialisation, for any message."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")

from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState

from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes.conversions import JointMapper
from dream_vla_ros.nodes.joint_state_cdr import JointStateView, read_joint_state_cdr

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=200)
@given(frame_id=names, joint_names=st.lists(names, max_size=9), sec=st.integers(-2**31, 2**31 - 1),
       nanosec=st.integers(0, 2**32 - 1), data=st.data())
def test_every_field_reads_as_rclpy_reads_it(frame_id, joint_names, sec, nanosec, data):
    arrays = [data.draw(st.lists(floats, max_size=9)) for _ in range(3)]
    msg = JointState(name=joint_names, position=arrays[0], velocity=arrays[1], effort=arrays[2])
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    view = read_joint_state_cdr(serialize_message(msg), JointState)
    assert isinstance(view, JointStateView)
    assert (view.header.stamp.sec, view.header.stamp.nanosec, view.header.frame_id) == (sec, nanosec, frame_id)
    assert view.name == tuple(joint_names)
    for got, sent in zip((view.position, view.velocity, view.effort), arrays, strict=True):
        np.testing.assert_array_equal(got, np.asarray(sent, dtype=np.float64))


def test_the_mapper_reads_a_view_like_the_message():
    msg = JointState(name=["b", "a", "extra"], position=[2.0, 1.0, 9.0])
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 500_000_000
    mapper = JointMapper(["a", "b"], bounds=([-3.0, -3.0], [3.0, 3.0]))
    positions, stamp = mapper.read(read_joint_state_cdr(serialize_message(msg), JointState))
    expected, expected_stamp = mapper.read(msg)
    np.testing.assert_array_equal(positions, expected)
    assert math.isclose(stamp, expected_stamp) and list(positions) == [1.0, 2.0]
    bad = JointState(name=["a", "b"], position=[1.0, 100.0])
    with pytest.raises(InputError, match="outside"):
        mapper.read(read_joint_state_cdr(serialize_message(bad), JointState))


@pytest.mark.parametrize("cut", [6, 13, 40])
def test_truncated_or_foreign_bytes_are_an_input_error(cut):
    data = serialize_message(JointState(name=["right_j0", "right_j1"], position=[0.1, 0.2]))
    with pytest.raises(InputError, match="could not be read"):
        read_joint_state_cdr(data[:cut], JointState)
    with pytest.raises(InputError, match="could not be read"):
        read_joint_state_cdr(b"\x00\x07\x00\x00" + data[4:cut], JointState)  # not plain CDR: rclpy decides
