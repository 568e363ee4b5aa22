"""The pure parts of the input-validation contract (docs/input_validation.md): stamps, compressed-frame
bounds read from headers, joint ranges, hysteresis, log throttling, chunk hysteresis, ``up --only`` and the
process sampler of the graph benchmarks."""

from __future__ import annotations

import os
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

cv2 = pytest.importorskip("cv2")

from dream_vla_ros.chunking import ActionChunk, ChunkExecutor, ExecutorConfig, JointLimits  # noqa: E402
from dream_vla_ros.errors import ConfigError, InputError  # noqa: E402
from dream_vla_ros.nodes import conversions as cv  # noqa: E402
from dream_vla_ros.nodes.health import LogBudget, RecoveryGate  # noqa: E402
from dream_vla_ros.process_stats import Sample, cpu_percent, growth_percent, sample  # noqa: E402


def stamp(sec: int, nanosec: int):
    return SimpleNamespace(sec=sec, nanosec=nanosec)


def frame(data: bytes, fmt: str = "png"):
    return SimpleNamespace(data=data, format=fmt)


def png_declaring(width: int, height: int, bits: int = 8) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bits, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# -- stamps --------------------------------------------------------------------------------------------------
@given(st.integers(0, 2**31 - 1), st.integers(0, 999_999_999))
def test_valid_stamps_pass_exactly(sec, nanosec):
    assert cv.checked_stamp(stamp(sec, nanosec), "x") == sec + nanosec * 1e-9


@given(st.integers(0, 2**31 - 1), st.integers(1_000_000_000, 2**32 - 1))
def test_nanosec_of_a_second_or_more_is_rejected(sec, nanosec):
    with pytest.raises(InputError, match="x: invalid header stamp \\(nanosec"):
        cv.checked_stamp(stamp(sec, nanosec), "x")


def test_negative_sec_is_rejected():
    with pytest.raises(InputError, match="negative sec"):
        cv.checked_stamp(stamp(-1, 0), "x")


def test_joint_state_and_chunk_readers_check_the_stamp():
    msg = SimpleNamespace(name=["a"], position=[0.5], header=SimpleNamespace(stamp=stamp(3, 1_000_000_000)))
    with pytest.raises(InputError, match="joint_states: invalid header stamp"):
        cv.JointMapper(["a"]).read(msg)
    msg.header.stamp = stamp(3, 250_000_000)
    positions, t = cv.JointMapper(["a"]).read(msg)
    assert positions.tolist() == [0.5] and t == 3.25


# -- compressed frames ---------------------------------------------------------------------------------------
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([".png", ".jpg"]), st.booleans())
def test_header_size_is_the_decoded_size(width, height, extension, gray):
    shape = (height, width) if gray else (height, width, 3)
    ok, data = cv2.imencode(extension, np.full(shape, 77, np.uint8))
    assert ok
    fmt, w, h, bits = cv.compressed_header(data.tobytes())
    assert (fmt, w, h, bits) == (extension[1:].replace("jpg", "jpeg"), width, height, 8)
    assert cv.compressed_to_rgb(frame(data.tobytes())).shape == (height, width, 3)


def test_a_bomb_is_rejected_from_its_header_without_decoding():
    data = png_declaring(8000, 8000)
    assert len(data) < 100
    with pytest.raises(InputError, match="declares 8000x8000 = 64000000 pixels \\(limit 2304000\\); not decoded"):
        cv.compressed_to_rgb(frame(data), "camera 'c'")
    limits = cv.CompressedLimits(max_bytes=1 << 20, max_pixels=8000 * 8000)
    with pytest.raises(InputError, match="size 8000x8000, expected 64x48"):
        cv.check_compressed(frame(data), "c", (64, 48), limits)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "compressed image without data"),
    (b"GIF89a" + bytes(20), "cannot decode compressed image \\(format 'png', 26 bytes\\): not a PNG or JPEG"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "PNG without an IHDR header"),
    (b"\xff\xd8\xff\xda\x00\x08" + bytes(20), "JPEG without a frame header"),
    (b"\xff\xd8\x00\x00" + bytes(20), "JPEG marker expected"),
    (png_declaring(64, 48, bits=16), "16-bit samples, expected 8-bit"),
    (png_declaring(0, 48), "invalid size 0x48"),
    (png_declaring(64, 48) + bytes(2000), "compressed image of 2069 bytes \\(limit 2000\\)"),
])
def test_compressed_frames_outside_the_contract_name_their_cause(data, message):
    with pytest.raises(InputError, match=message):
        cv.check_compressed(frame(data), limits=cv.CompressedLimits(max_bytes=2000))


def test_a_frame_with_a_good_header_but_broken_pixels_fails_in_the_decoder():
    truncated = png_declaring(64, 48)[:40]
    with pytest.raises(InputError, match="cannot decode compressed image"):
        cv.compressed_to_rgb(frame(truncated))


# -- joint ranges --------------------------------------------------------------------------------------------
@given(st.floats(-10, 10), st.floats(0, 1))
def test_joint_positions_outside_limits_plus_margin_are_a_sensor_fault(value, margin):
    mapper = cv.JointMapper(["a", "b"], bounds=(np.array([-1.0, -2.0]) - margin, np.array([1.0, 2.0]) + margin))
    msg = SimpleNamespace(name=["b", "a"], position=[0.0, value])
    if -1.0 - margin <= value <= 1.0 + margin:
        assert mapper.positions(msg).tolist() == [value, 0.0]
    else:
        with pytest.raises(InputError, match=r"joint 'a' at .* is outside .*limits \+ margin\): sensor fault"):
            mapper.positions(msg)


# -- hysteresis ----------------------------------------------------------------------------------------------
def test_recovery_gate_needs_an_unbroken_good_stretch():
    gate = RecoveryGate(0.5)
    assert gate.update("s", True, 0.0)  # never bad: usable at once
    assert not gate.update("s", False, 1.0)
    assert not gate.update("s", True, 1.1) and gate.remaining("s", 1.3) == pytest.approx(0.3)
    assert not gate.update("s", False, 1.4)  # a break restarts the count
    assert not gate.update("s", True, 1.5)
    assert not gate.update("s", True, 1.9)
    assert gate.update("s", True, 2.0) and gate.remaining("s", 2.0) == 0.0
    assert gate.update("s", True, 2.01)


@given(st.floats(0.05, 1.0), st.floats(0.01, 0.45), st.floats(0.0, 1.0))
def test_a_stream_that_keeps_crossing_its_limit_never_releases(period, max_age, phase):
    """Joint states every ``period`` s against an age limit shorter than the period and the 0.5 s recovery:
    once held, never released (without hysteresis the input would be fresh, and the robot move, for
    max_age / period of the time)."""
    assume(period - max_age >= 0.02)  # stale for at least two of the 10 ms checks per period
    gate = RecoveryGate(0.5)
    faulted, released = False, []
    for k in range(1, 400):
        now = k * 0.01
        fresh = (now + phase) % period <= max_age
        faulted |= not fresh
        usable = gate.update("joint_states timing", fresh, now)
        if faulted:
            released.append(usable)
    assert released and not any(released)


def test_log_budget_thins_a_flood_of_one_kind_but_not_other_causes():
    now = [0.0]
    budget = LogBudget(burst=3, period=1.0, clock=lambda: now[0])
    allowed = []
    for i in range(300):  # 300 goal changes in 3 s
        now[0] = i * 0.01
        allowed.append(budget.take("goal", "empty goal"))
    kept = [a for a in allowed if a is not None]
    assert 9 <= len(kept) <= 12  # 3 in each of the 3 s
    assert any("more like this not logged" in a for a in kept[1:])
    assert budget.take("goal", "too long") == ""  # another cause: its own budget
    assert budget.take("camera main", "empty goal") == ""


# -- chunk hysteresis ----------------------------------------------------------------------------------------
NAMES = ("a", "b")
LIMITS = JointLimits(position_min=(-2.0,), position_max=(2.0,), max_velocity=(1.0,), max_acceleration=(4.0,))


def _starved(recovery: float) -> ChunkExecutor:
    executor = ChunkExecutor(ExecutorConfig(joint_names=NAMES, limits=LIMITS, control_period=0.01,
                                            starvation_recovery=recovery))
    executor.reset(0.0, [0.0, 0.0])
    positions = 0.1 * np.arange(1, 5)[:, None] * np.ones(2)
    assert executor.add_chunk(ActionChunk(NAMES, 0.0, 0.05, positions), 0.0).accepted
    for k in range(60):
        executor.tick(k * 0.01)
    assert executor.stats.starvation_events == 1
    return executor


def _chunk_covering(now: float, coverage: float) -> ActionChunk:
    return ActionChunk(NAMES, now - 0.2 + coverage, 0.05, np.full((4, 2), 0.6))


def test_after_a_starvation_short_chunks_are_not_followed():
    executor = _starved(0.1)
    start = executor.state.positions.copy()
    for k in range(60, 200):
        now = k * 0.01
        if k % 10 == 0:
            assert executor.add_chunk(_chunk_covering(now, 0.03), now).accepted
        executor.tick(now)
        assert executor.recovering and executor.mode != "running"
    # it only brakes to rest from the starvation, never heads for the short chunks' target
    assert np.all(np.abs(executor.state.velocities) == 0.0)
    assert np.all(executor.state.positions >= start - 1e-9) and np.all(executor.state.positions < 0.5)
    assert executor.add_chunk(_chunk_covering(2.0, 0.15), 2.0).accepted
    assert not executor.recovering and executor.mode == "running"


def test_without_hysteresis_a_chunk_resumes_at_once():
    executor = _starved(0.0)
    assert executor.add_chunk(_chunk_covering(0.6, 0.03), 0.6).accepted
    assert executor.mode == "running" and not executor.recovering


def test_starvation_recovery_is_checked():
    with pytest.raises(ConfigError, match="starvation_recovery"):
        ExecutorConfig(joint_names=NAMES, starvation_recovery=-1.0)


# -- up --only -----------------------------------------------------------------------------------------------
def test_only_takes_comma_lists_and_names_the_known_nodes():
    from dream_vla_ros.bringup import describe
    from dream_vla_ros.commands.up import only_nodes

    assert only_nodes(["policy_node,chunk_executor", " sim_arm ", "policy_node"]) == (
        "policy_node", "chunk_executor", "sim_arm")
    nodes = describe("sim_arm", only=only_nodes(["policy_node,chunk_executor"])).nodes
    assert [n.name for n in nodes] == ["policy_node", "chunk_executor"]
    with pytest.raises(ConfigError, match="has no node 'policy'; its nodes: policy_node, chunk_executor, sim_arm"):
        describe("sim_arm", only=("policy",))


# -- process sampling ----------------------------------------------------------------------------------------
def test_process_sampler_reads_cpu_time_and_memory_of_a_process():
    first = sample(os.getpid())
    total = sum(i * i for i in range(2_000_000))  # burn some CPU
    second = sample(os.getpid())
    assert total > 0 and second.rss_kb > 1000
    assert second.cpu_seconds > first.cpu_seconds
    assert 0.0 < cpu_percent(first, second) <= 100.0 * (os.cpu_count() or 1) + 1e-6
    assert sample(2**22 + 12345).rss_kb == 0  # no such process: zeros


def test_percentages():
    assert cpu_percent(Sample(0.0, 1.0, 100), Sample(2.0, 2.0, 150)) == 50.0
    assert growth_percent(Sample(0.0, 1.0, 100), Sample(2.0, 2.0, 150)) == 50.0
    assert np.isnan(cpu_percent(Sample(1.0, 1.0, 1), Sample(1.0, 2.0, 1)))


def test_graph_benchmark_figures_from_diagnostics_counters():
    from dream_vla_ros.benchmarks.closed_loop import counter_change

    first = {"chunk_executor": {"missed_ticks": 2.0}, "sim_arm": {"lag_events": 1.0}}
    last = {"chunk_executor": {"missed_ticks": 5.0}, "sim_arm": {"lag_events": 1.0}}
    assert counter_change(first, last, "chunk_executor", "missed_ticks") == 3.0
    assert counter_change(first, last, "sim_arm", "lag_events") == 0.0
    assert np.isnan(counter_change(first, last, "policy_node", "ticks"))  # never seen: not a zero
