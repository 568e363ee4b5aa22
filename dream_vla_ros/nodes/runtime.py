"""Process plumbing shared by the node executables: init, spin, clean shutdown on Ctrl-C / SIGTERM."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence


def run(factories: Sequence[Callable[[], object]], *, argv: list[str] | None = None) -> int:
    """Create the nodes (after ``rclpy.init``), spin them on one executor until shutdown, clean up.

    The executor has the most threads any node asks for (its ``executor_threads`` attribute, default 1):
    1 = SingleThreadedExecutor (the lowest latency and jitter in rclpy, measured by ``bench latency``), more = a
    MultiThreadedExecutor (callback groups then run in parallel, sharing the GIL). Ask for more only where a
    callback must block (an action server's execute callbacks): the MultiThreadedExecutor re-polls its wait set
    in Python while callbacks are in flight, and under 80 Hz subscriptions it held the GIL ~90% of the time
    (py-spy on sim_arm), starving the node's other Python threads.
    A node may define ``start()`` (called once before spinning) and ``close()`` (called before destruction).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    from dream_vla_ros.errors import DreamVlaError

    rclpy.init(args=sys.argv if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    nodes: list = []
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
        for node in nodes:
            start = getattr(node, "start", None)
            if start is not None:
                start()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
