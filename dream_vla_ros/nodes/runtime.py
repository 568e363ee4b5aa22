"""Process plumbing shared by the node executables: init, spin, clean shutdown on Ctrl-C / SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence

BLOCKING_THREADS = 4  # threads for the helper nodes' blocking callbacks (see run)


def run(factories: Sequence[Callable[[], object]], *, argv: list[str] | None = None) -> int:
    """Create the nodes (after ``rclpy.init``), spin them on one executor until shutdown, clean up.

    The executor has the most threads any node asks for (its ``executor_threads`` attribute, default 1):
    1 = SingleThreadedExecutor (the lowest latency and jitter in rclpy, measured by ``bench latency``), more = a
    MultiThreadedExecutor (callback groups then run in parallel, sharing the GIL). The MultiThreadedExecutor
    re-polls its wait set in Python until a worker has taken each ready message, and under 80 Hz subscriptions it
    held the GIL most of the time (py-spy on sim_arm; docs/performance.md), starving the node's other Python
    threads. So a node whose callbacks must block (an action server's execute callbacks) puts them on helper
    nodes listed in its ``blocking_nodes`` attribute: those get their own MultiThreadedExecutor on a background
    thread, where no high-rate subscription wakes it.
    A node may define ``start()`` (called once before spinning) and ``close()`` (called before destruction).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    from dream_vla_ros.errors import DreamVlaError

    rclpy.init(args=sys.argv if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    nodes: list = []
    background = None
    try:
        try:
            for factory in factories:
                nodes.append(factory())
        except DreamVlaError as exc:  # invalid parameters: one clear line, no traceback
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
        threads = max(int(getattr(node, "executor_threads", 1)) for node in nodes)
        executor = SingleThreadedExecutor() if threads <= 1 else MultiThreadedExecutor(num_threads=threads)
        for node in nodes:
            executor.add_node(node)
        blocking = [helper for node in nodes for helper in getattr(node, "blocking_nodes", ())]
        if blocking:
            background = MultiThreadedExecutor(num_threads=BLOCKING_THREADS)
            for helper in blocking:
                background.add_node(helper)
            threading.Thread(target=_spin_quietly, args=(background,), name="blocking callbacks", daemon=True).start()
        for node in nodes:
            start = getattr(node, "start", None)
            if start is not None:
                start()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C under `ros2 launch` reaches a node twice (the terminal's SIGINT to the process group, then the one
        # launch forwards): a second one must not interrupt the clean-up below with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
        if background is not None:
            background.shutdown(timeout_sec=2.0)  # after close(): blocked callbacks have been told to return
        for node in nodes:
            for helper in getattr(node, "blocking_nodes", ()):
                helper.destroy_node()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin_quietly(executor) -> None:
    """Spin until shutdown (the main thread reports errors; shutdown under a wait is not one)."""
    from rclpy.executors import ExternalShutdownException

    with contextlib.suppress(ExternalShutdownException):
        executor.spin()
