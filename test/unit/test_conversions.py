"""Message <-> array conversions: strict validation, zero-copy views, round trips (no DDS needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("sensor_msgs.msg")
cv2 = pytest.importorskip("cv2")

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from dream_vla_ros.errors import InputError  # noqa: E402
from dream_vla_ros.nodes import conversions as cv  # noqa: E402


def raw_image(rgb: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An Image with ``pad`` extra bytes at the end of every row."""
    if encoding == "bgr8":
        pixels = rgb[..., ::-1]
    elif encoding == "mono8":
        pixels = rgb[..., :1]
    else:
        pixels = rgb
    h, w, c = pixels.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, : w * c] = pixels.reshape(h, w * c)
    return Image(height=h, width=w, encoding=encoding, step=w * c + pad, data=rows.tobytes())


images = st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1)).map(
    lambda t: np.random.default_rng(t[2]).integers(0, 256, (t[0], t[1], 3), dtype=np.uint8)
)


# -- images --------------------------------------------------------------------------------------------------
@given(rgb=images, encoding=st.sampled_from(["rgb8", "bgr8"]), pad=st.integers(0, 5))
def test_color_images_convert_exactly_with_any_row_padding(rgb, encoding, pad):
    out = cv.image_to_rgb(raw_image(rgb, encoding, pad))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


@given(rgb=images, pad=st.integers(0, 3))
def test_mono_images_become_gray_rgb(rgb, pad):
    out = cv.image_to_rgb(raw_image(rgb, "mono8", pad))
    assert out.shape == rgb.shape
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], rgb[..., 0])


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_conversion_is_a_read_only_view_of_the_message(encoding):
    msg = raw_image(np.full((4, 5, 3), 7, np.uint8), encoding, pad=3)
    out = cv.image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert not out.flags.writeable


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"encoding": "rgba8"}, "unsupported encoding"),
        ({"encoding": "16UC1"}, "unsupported encoding"),
        ({"encoding": ""}, "unsupported encoding"),
        ({"width": 0}, "invalid size"),
        ({"height": 0}, "invalid size"),
        ({"step": 5 * 3 - 1}, "step"),
        ({"data": bytes(4 * 15 - 1)}, "truncated"),
        ({"data": bytes(4 * 15 + 1)}, "oversized"),
        ({"data": b""}, "truncated"),
    ],
)
def test_malformed_images_are_rejected_with_the_cause(change, needle):
    msg = raw_image(np.zeros((4, 5, 3), np.uint8), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(InputError, match=needle):
        cv.image_to_rgb(msg, "camera 'main'")


def test_expected_size_is_enforced():
    msg = raw_image(np.zeros((4, 5, 3), np.uint8), "rgb8")
    assert cv.image_to_rgb(msg, expected_size=(5, 4)).shape == (4, 5, 3)
    with pytest.raises(InputError, match=r"size 5x4, expected 6x4"):
        cv.image_to_rgb(msg, expected_size=(6, 4))


def test_rgb_to_image_round_trips():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for encoding in ("rgb8", "bgr8"):
        np.testing.assert_array_equal(cv.image_to_rgb(cv.rgb_to_image(rgb, encoding)), rgb)
    assert cv.rgb_to_image(rgb, "mono8").step == 7
    with pytest.raises(InputError):
        cv.rgb_to_image(rgb, "yuv422")


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images_decode_to_rgb(extension):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (255, 0, 0)
    ok, data = cv2.imencode(extension, rgb[..., ::-1])
    assert ok
    out = cv.compressed_to_rgb(CompressedImage(format=extension[1:], data=data.tobytes()))
    assert out.shape == (16, 24, 3)
    assert abs(int(out[8, 4, 0]) - 255) < 8 and int(out[8, 4, 2]) < 8  # red stays red (not BGR)
    with pytest.raises(InputError, match="expected 10x10"):
        cv.compressed_to_rgb(CompressedImage(format="png", data=data.tobytes()), expected_size=(10, 10))


def test_compressed_gray_and_alpha_pngs_decode():
    ok, gray = cv2.imencode(".png", np.full((5, 6), 9, np.uint8))
    assert ok and cv.compressed_to_rgb(CompressedImage(data=gray.tobytes())).shape == (5, 6, 3)
    ok, bgra = cv2.imencode(".png", np.full((5, 6, 4), 9, np.uint8))
    assert ok and cv.compressed_to_rgb(CompressedImage(data=bgra.tobytes())).shape == (5, 6, 3)


@pytest.mark.parametrize(("data", "needle"), [(b"", "without data"), (b"\x00garbage" * 10, "cannot decode")])
def test_corrupt_compressed_images_are_rejected(data, needle):
    with pytest.raises(InputError, match=needle):
        cv.compressed_to_rgb(CompressedImage(format="jpeg", data=data))


# -- joint states --------------------------------------------------------------------------------------------
NAMES = ("a", "b", "gripper")


def joint_state(names, positions) -> JointState:
    return JointState(name=list(names), position=[float(p) for p in positions])


@given(perm=st.permutations(range(3)), extra=st.lists(st.sampled_from(["x", "y", "z"]), unique=True),
       values=st.lists(st.floats(-10, 10), min_size=6, max_size=6))
def test_joint_states_are_ordered_by_name(perm, extra, values):
    names = [NAMES[i] for i in perm] + extra
    msg = joint_state(names, values[: len(names)])
    out = cv.JointMapper(NAMES).positions(msg)
    expected = [values[names.index(n)] for n in NAMES]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    ("names", "positions", "needle"),
    [
        (["a", "b"], [0.0, 0.0], "missing joint 'gripper'"),
        (["a", "b", "grip"], [0.0, 0.0, 0.0], "missing joint 'gripper'"),
        (["a", "b", "gripper", "a"], [0.0] * 4, "duplicate joint name 'a'"),
        (["a", "b", "gripper"], [0.0, 0.0], "3 names but 2 positions"),
        (["a", "b", "gripper"], [0.0, math.nan, 0.0], "non-finite position for joint 'b'"),
        (["a", "b", "gripper"], [math.inf, 0.0, 0.0], "non-finite position for joint 'a'"),
        ([], [], "missing joint"),
    ],
)
def test_bad_joint_states_are_rejected(names, positions, needle):
    with pytest.raises(InputError, match=needle):
        cv.JointMapper(NAMES).positions(joint_state(names, positions))


def test_strict_mapping_rejects_unknown_joints_and_nan_elsewhere_is_ignored():
    msg = joint_state(["a", "b", "gripper", "wheel"], [1, 2, 3, math.nan])
    np.testing.assert_array_equal(cv.JointMapper(NAMES).positions(msg), [1, 2, 3])
    with pytest.raises(InputError, match="unknown joint 'wheel'"):
        cv.JointMapper(NAMES, strict=True).positions(msg)


def test_joint_mapper_caches_per_name_list_and_stays_correct():
    mapper = cv.JointMapper(NAMES)
    for i in range(40):  # more distinct name lists than the cache holds
        names = ["gripper", "a", "b", f"extra{i}"]
        np.testing.assert_array_equal(mapper.positions(joint_state(names, [3, 1, 2, 0])), [1, 2, 3])


# -- goals ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [("  open the drawer \n", "open the drawer"), ("", ""), ("   \t", ""), ("ÖFFNE die Tür", "ÖFFNE die Tür")],
)
def test_goals_are_stripped(text, expected):
    assert cv.check_goal(text, 1024) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [("x" * 1025, "too long"), ("é" * 513, "too long"), ("bad \ufffd bytes", "not valid UTF-8"),
     ("beep\x07", "control characters"), ("a\x00b", "control characters")],
)
def test_bad_goals_are_rejected(text, needle):
    with pytest.raises(InputError, match=needle):
        cv.check_goal(text, 1024)


def test_invalid_utf8_on_the_wire_is_detected_after_rclpy_decodes_it():
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import String

    wire = b"\x00\x01\x00\x00" + (4).to_bytes(4, "little") + b"\xff\xfeA\x00"
    text = deserialize_message(wire, String).data
    with pytest.raises(InputError, match="not valid UTF-8"):
        cv.check_goal(text, 1024)


# -- time ----------------------------------------------------------------------------------------------------
@given(st.floats(0, 4e9))
def test_stamps_round_trip_to_the_nanosecond(seconds):
    stamp = cv.seconds_to_stamp(seconds)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert abs(cv.stamp_to_seconds(stamp) - seconds) <= 1e-9 * max(1.0, seconds) + 1e-9


# -- chunks --------------------------------------------------------------------------------------------------
chunks = st.tuples(st.integers(1, 6), st.integers(0, 2**32 - 1), st.floats(0.005, 0.5)).map(
    lambda t: (np.random.default_rng(t[1]).normal(size=(t[0], 3)), t[2])
)


@given(chunk=chunks, perm=st.permutations(range(3)), t0=st.floats(1.0, 2e9))
def test_chunks_round_trip_through_joint_trajectory_in_any_joint_order(chunk, perm, t0):
    positions, dt = chunk
    names = [NAMES[i] for i in perm]
    msg = cv.prediction_to_trajectory(positions[:, perm], names, dt, cv.seconds_to_stamp(t0))
    assert [cv.duration_to_seconds(p.time_from_start) for p in msg.points] == pytest.approx(
        [(i + 1) * dt for i in range(len(positions))], abs=1e-9
    )
    back = cv.trajectory_to_chunk(msg, NAMES)
    np.testing.assert_allclose(back.positions, positions)
    assert back.dt == pytest.approx(dt, abs=1e-9)
    assert back.t0 == pytest.approx(t0, abs=1e-6)
    assert back.velocities is None


def test_predictions_with_nan_are_never_turned_into_messages():
    with pytest.raises(InputError, match="NaN"):
        cv.prediction_to_trajectory(np.array([[0.0, math.nan, 0.0]]), NAMES, 0.1, Time(sec=1))
    with pytest.raises(InputError, match="shape"):
        cv.prediction_to_trajectory(np.zeros((2, 2)), NAMES, 0.1, Time(sec=1))


def trajectory(names, rows, times, stamp=5.0, velocities=None) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    msg.header.stamp = cv.seconds_to_stamp(stamp)
    for i, (row, t) in enumerate(zip(rows, times, strict=True)):
        point = JointTrajectoryPoint(positions=[float(v) for v in row], time_from_start=cv.seconds_to_duration(t))
        if velocities is not None:
            point.velocities = [float(v) for v in velocities[i]]
        msg.points.append(point)
    return msg


@pytest.mark.parametrize(
    ("msg", "needle"),
    [
        (trajectory(["a", "b", "x"], [[0, 0, 0]], [0.1]), "unknown joint 'x'"),
        (trajectory(["a", "b"], [[0, 0]], [0.1]), "missing joint 'gripper'"),
        (trajectory(["a", "a", "gripper"], [[0, 0, 0]], [0.1]), "duplicate"),
        (trajectory(NAMES, [[0, math.nan, 0]], [0.1]), "NaN"),
        (trajectory(NAMES, [[0, 0, 0]], [0.1], velocities=[[0, math.inf, 0]]), "NaN"),
        (trajectory(NAMES, [[0, 0]], [0.1]), "point 0 has 2 positions"),
        (trajectory(NAMES, [[0, 0, 0], [0, 0, 0]], [0.1, 0.3]), "evenly spaced"),
        (trajectory(NAMES, [[0, 0, 0], [0, 0, 0]], [0.1, 0.1]), "evenly spaced"),
        (trajectory(NAMES, [[0, 0, 0]], [0.0]), "must be > 0"),
        (trajectory(NAMES, [[0, 0, 0]], [0.1], stamp=0.0), "observation time"),
    ],
)
def test_bad_chunks_are_rejected(msg, needle):
    with pytest.raises(InputError, match=needle):
        cv.trajectory_to_chunk(msg, NAMES)


def test_empty_trajectory_is_the_stop_signal_and_velocities_are_kept():
    assert cv.trajectory_to_chunk(JointTrajectory(joint_names=list(NAMES)), NAMES) is None
    msg = trajectory(["gripper", "a", "b"], [[3, 1, 2]], [0.1], velocities=[[30, 10, 20]])
    chunk = cv.trajectory_to_chunk(msg, NAMES)
    np.testing.assert_array_equal(chunk.positions, [[1, 2, 3]])
    np.testing.assert_array_equal(chunk.velocities, [[10, 20, 30]])


def test_windows_split_by_controller_columns():
    positions = np.arange(6.0).reshape(2, 3)
    msg = cv.window_to_trajectory(NAMES, positions, -positions, [0.01, 0.02], None, [2])
    assert msg.joint_names == ["gripper"]
    assert [list(p.positions) for p in msg.points] == [[2.0], [5.0]]
    assert [list(p.velocities) for p in msg.points] == [[-2.0], [-5.0]]
    assert msg.header.stamp.sec == 0 and msg.header.stamp.nanosec == 0
    with pytest.raises(InputError):
        cv.window_to_trajectory(NAMES, positions * math.nan, None, [0.01, 0.02])
