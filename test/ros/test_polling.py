"""Polled subscriptions and the clock-driven control loop (nodes/polling.py), over real DDS in one process."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")


def _joint_state(position: float):
    from sensor_msgs.msg import JointState

    return JointState(name=["a"], position=[position])


def _owner(ros, name: str, **kwargs):
    return rclpy.create_node(name, context=ros.context, **kwargs)


def test_polled_subscription_takes_the_newest_sample_without_any_executor(ros):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from dream_vla_ros.nodes import qos
    from dream_vla_ros.nodes.polling import PolledInputs
    from dream_vla_ros.ros_calls import wait_for

    owner = _owner(ros, "polling_owner", namespace="/arm")
    inputs = PolledInputs(owner)
    try:
        newest = inputs.subscribe(JointState, "joint_states", qos.SENSOR)  # relative: resolved in /arm
        queued = inputs.subscribe(JointState, "joint_states", QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE))
        assert newest.topic_name == "/arm/joint_states"
        assert inputs.node.get_name() == "polling_owner_inputs" and inputs.node.get_namespace() == "/arm"
        publisher = ros.node.create_publisher(JointState, "/arm/joint_states", 10)  # reliable: matches both
        ros.wait_for_subscriber("/arm/joint_states", count=2)
        wait_for(lambda: publisher.get_subscription_count() >= 2, 10.0, what="both polled readers matched")
        assert newest.take() is None  # nothing published yet
        for i in range(3):
            publisher.publish(_joint_state(float(i)))
        seen: list = []
        wait_for(lambda: seen.extend(queued.take_all()) or len(seen) >= 3, 5.0, what="three samples delivered")
        msg = newest.take_newest()
        assert msg is not None and list(msg.position) == [2.0]  # keep last 1: only the newest is kept
        assert newest.take_newest() is None  # taken: nothing new since
        publisher.publish(_joint_state(7.0))
        assert wait_for(newest.take_newest, 5.0, what="the next sample").position[0] == 7.0
    finally:
        inputs.close()
        owner.destroy_node()


def test_polled_reliable_queue_keeps_order(ros):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from dream_vla_ros.nodes.polling import PolledInputs
    from dream_vla_ros.ros_calls import wait_for

    profile = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
    owner = _owner(ros, "polling_queue_owner")
    inputs = PolledInputs(owner)
    try:
        polled = inputs.subscribe(JointState, "/queue", profile)
        publisher = ros.node.create_publisher(JointState, "/queue", profile)
        wait_for(lambda: publisher.get_subscription_count() >= 1, 10.0, what="the polled reader matched")
        for i in range(4):
            publisher.publish(_joint_state(float(i)))
        taken: list[float] = []
        wait_for(lambda: taken.extend(m.position[0] for m in polled.take_all()) or len(taken) >= 4, 5.0,
             what="four samples")
        assert taken == [0.0, 1.0, 2.0, 3.0]
    finally:
        inputs.close()
        owner.destroy_node()


def test_clock_ticker_follows_simulated_time(ros):
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from dream_vla_ros.nodes.conversions import seconds_to_stamp
    from dream_vla_ros.nodes.polling import ClockTicker
    from dream_vla_ros.ros_calls import wait_for

    node = _owner(ros, "ticker_sim", parameter_overrides=[Parameter("use_sim_time", value=True)])
    ros.executor.add_node(node)
    ticks: list[float] = []
    errors: list[BaseException] = []

    def tick() -> None:
        ticks.append(node.get_clock().now().nanoseconds * 1e-9)
        if len(ticks) == 3:
            raise RuntimeError("a failing tick")

    ticker = ClockTicker(node, 0.0125, tick, errors.append)
    clock = ros.node.create_publisher(Clock, "/clock", 10)
    spin = threading.Event()

    def spinner() -> None:
        while not spin.is_set():
            ros.executor.spin_once(timeout_sec=0.01)

    thread = threading.Thread(target=spinner, daemon=True)
    thread.start()
    try:
        wait_for(lambda: clock.get_subscription_count() >= 1, 10.0, what="the node's /clock subscription")
        clock.publish(Clock(clock=seconds_to_stamp(1.0)))
        wait_for(lambda: node.get_clock().now().nanoseconds == 1_000_000_000, 5.0, what="sim time 1.0")
        ticker.start()
        time.sleep(0.3)
        assert ticks == []  # simulated time stands still: no tick, however long the wall clock runs
        for k in range(1, 9):  # eight steps of one period each
            clock.publish(Clock(clock=seconds_to_stamp(1.0 + k * 0.0125)))
            wait_for(lambda k=k: len(ticks) >= k, 5.0, what=f"tick {k}")
        assert len(ticks) == 8
        assert ticks == pytest.approx([1.0 + k * 0.0125 for k in range(1, 9)], abs=1e-9)
        assert len(errors) == 1 and "a failing tick" in str(errors[0])  # reported, and the loop went on
        clock.publish(Clock(clock=seconds_to_stamp(2.0)))  # a jump of many periods: one tick, not eighty
        wait_for(lambda: len(ticks) >= 9, 5.0, what="the tick after the jump")
        time.sleep(0.2)
        assert len(ticks) == 9
    finally:
        ticker.close()
        spin.set()
        thread.join(2.0)
        ros.executor.remove_node(node)
        node.destroy_node()
    count = len(ticks)
    time.sleep(0.1)
    assert len(ticks) == count  # closed: no tick after close()


def test_clock_ticker_on_the_wall_clock_ticks_at_its_period_and_stops_on_close(ros):
    from dream_vla_ros.nodes.polling import ClockTicker

    node = _owner(ros, "ticker_wall")
    ticks: list[float] = []
    ticker = ClockTicker(node, 0.01, lambda: ticks.append(time.monotonic()), lambda exc: None)
    ticker.start()
    time.sleep(0.5)
    ticker.close()
    count = len(ticks)
    time.sleep(0.1)
    try:
        assert len(ticks) == count
        assert 10 <= count <= 52  # about 50 on an idle machine: late ticks are skipped, never made up for
    finally:
        node.destroy_node()


def test_tick_lateness_quantiles_cover_every_tick_in_constant_memory():
    from dream_vla_ros.nodes.polling import TickLateness

    lateness = TickLateness()
    assert lateness.quantile(0.99) != lateness.quantile(0.99)  # nan before the first tick
    for ms in [0.05] * 980 + [3.0] * 15 + [40.0] * 4 + [5000.0]:
        lateness.add(ms)
    assert lateness.ticks == 1000
    assert lateness.quantile(0.5) == pytest.approx(0.1)  # the upper edge of the first 0.1 ms bin
    assert lateness.quantile(0.99) == pytest.approx(3.1)
    assert lateness.quantile(0.999) == pytest.approx(40.1)
    assert lateness.quantile(1.0) > 1000.0  # later than the histogram reaches: its overflow bin
