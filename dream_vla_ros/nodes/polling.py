"""High-rate inputs read where they are used, and a control loop that is not an executor timer (rclpy).

An rclpy executor wake-up costs more CPU than a control tick's own work (figures from ``dream-vla-ros bench
nodes`` in docs/performance.md), so a node that is woken for every 500 Hz joint state and every control tick
spends most of its time in the executor, not in its own code. Two tools keep those wake-ups out of the executor:

- :class:`PolledInputs`: subscriptions on a helper node that no executor spins; the owner takes the newest
  message (or every queued one) when it needs it, at its own rate. The DDS reader keeps what the QoS history
  allows (keep last 1: only the newest sample). Topic names are resolved by the owner, so its remaps and
  namespace apply. This uses ``Subscription.handle.take_message(msg_type, raw)``, the call rclpy's own
  executors make (Humble through Kilted).
- :class:`ClockTicker`: calls a function every period of a node's clock on its own thread. On the wall clock
  it sleeps; under ``use_sim_time`` it wakes on the clock's jump callbacks (each ``/clock`` message), so the
  loop follows simulated time exactly as a timer would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import HistoryPolicy


class PolledSubscription:
    """One polled subscription (see the module docstring)."""

    def __init__(self, subscription: Any, depth: int) -> None:
        self._subscription = subscription
        self._depth = depth
        self._lock = threading.Lock()  # callbacks of a multi-threaded executor may poll at the same time

    @property
    def topic_name(self) -> str:
        return self._subscription.topic_name

    def take(self) -> Any | None:
        """The oldest queued message, or None when nothing new arrived."""
        sub = self._subscription
        with self._lock, sub.handle:
            taken = sub.handle.take_message(sub.msg_type, sub.raw)
        return None if taken is None else taken[0]

    def take_all(self) -> list[Any]:
        """Every queued message, oldest first (at most the QoS depth)."""
        messages = []
        while (msg := self.take()) is not None:
            messages.append(msg)
        return messages

    def take_newest(self) -> Any | None:
        """The newest queued message (older ones are discarded), or None when nothing new arrived."""
        if self._depth == 1:  # the reader holds at most the newest sample
            return self.take()
        messages = self.take_all()
        return messages[-1] if messages else None


class PolledInputs:
    """Polled subscriptions of ``owner`` on a helper node ``<owner>_inputs`` in the same namespace."""

    def __init__(self, owner: Node, suffix: str = "inputs") -> None:
        self._owner = owner
        name = f"{owner.get_name()}_{suffix}"
        # A command-line ``__node:=`` remap applies to every node of the process: the helper keeps its own name.
        self.node = Node(name, namespace=owner.get_namespace(), context=owner.context,
                         start_parameter_services=False, cli_args=["--ros-args", "-r", f"__node:={name}"])

    def subscribe(self, msg_type: Any, topic: str, qos: Any, raw: bool = False) -> PolledSubscription:
        """A polled subscription to ``topic`` as ``owner`` would resolve it (``raw``: messages are taken as
        serialised bytes, e.g. to be republished unchanged)."""
        resolved = self._owner.resolve_topic_name(topic)
        subscription = self.node.create_subscription(msg_type, resolved, _never_called, qos, raw=raw)
        keep_last = qos.history != HistoryPolicy.KEEP_ALL
        return PolledSubscription(subscription, qos.depth if keep_last else 0)

    def unsubscribe(self, polled: PolledSubscription) -> None:
        self.node.destroy_subscription(polled._subscription)

    def close(self) -> None:
        self.node.destroy_node()


def _never_called(msg: Any) -> None:  # pragma: no cover - no executor spins the helper node
    raise AssertionError("a polled subscription's callback ran: its helper node must not be spun")


class TickLateness:
    """How late each tick started against its schedule, as a histogram of 0.1 ms bins up to 1 s (constant
    memory however long the node runs); ``quantile`` answers for every tick so far."""

    BIN_MS = 0.1
    BINS = 10_000

    def __init__(self) -> None:
        self._counts = [0] * (self.BINS + 1)  # the last bin: 1 s or later
        self.ticks = 0
        self._lock = threading.Lock()

    def add(self, late_ms: float) -> None:
        index = min(self.BINS, max(0, int(late_ms / self.BIN_MS)))
        with self._lock:
            self._counts[index] += 1
            self.ticks += 1

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the lateness in ms (upper bin edge; nan before the first tick)."""
        with self._lock:
            counts, total = list(self._counts), self.ticks
        if not total:
            return float("nan")
        rank, seen = q * total, 0
        for index, count in enumerate(counts):
            seen += count
            if seen >= rank:
                return (index + 1) * self.BIN_MS
        return (self.BINS + 1) * self.BIN_MS


class ClockTicker:
    """Calls ``tick()`` every ``period`` seconds of ``node``'s clock on a thread of its own.

    A late tick is not repeated: the next one is due a period after it (the caller counts missed ticks);
    ``lateness`` records how late every tick started (on the node's clock).
    An exception in ``tick`` goes to ``on_error`` and the loop goes on; the loop ends with the node's context
    (shutdown) or :meth:`close`.
    """

    def __init__(self, node: Node, period: float, tick: Callable[[], None],
                 on_error: Callable[[BaseException], None], name: str = "control") -> None:
        self._clock = node.get_clock()
        self._context = node.context
        self._period_ns = round(period * 1e9)
        self._tick = tick
        self._on_error = on_error
        self._wake = threading.Condition()
        self._closed = False
        self.lateness = TickLateness()
        threshold = JumpThreshold(min_forward=Duration(nanoseconds=1), min_backward=None, on_clock_change=True)
        self._jump_handle = self._clock.create_jump_callback(threshold, post_callback=self._on_jump)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._jump_handle is not None:
            self._jump_handle.unregister()
            self._jump_handle = None

    def _on_jump(self, _jump: Any) -> None:
        with self._wake:
            self._wake.notify_all()

    def _now_ns(self) -> int:
        return self._clock.now().nanoseconds

    def _run(self) -> None:
        due = self._now_ns() + self._period_ns
        while True:
            with self._wake:
                while not self._closed and self._context.ok() and (left := due - self._now_ns()) > 0:
                    # Simulated time advances only with /clock (a jump callback wakes us); the wall clock by itself.
                    self._wake.wait(0.5 if self._clock.ros_time_is_active else left * 1e-9)
                if self._closed or not self._context.ok():
                    return
            self.lateness.add((self._now_ns() - due) * 1e-6)
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - the control loop outlives a failing tick
                if not self._context.ok():
                    return  # shutting down: the node's handles are going away
                self._on_error(exc)
            due += self._period_ns
            now = self._now_ns()
            if due <= now:  # late: the missed ticks are skipped
                due = now + self._period_ns
