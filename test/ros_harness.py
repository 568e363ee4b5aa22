"""ROS 2 test harness: an isolated DDS domain per test, nodes in separate processes, graph polling.

- :func:`allocate_domain_id` gives each test its own ``ROS_DOMAIN_ID`` (discovery kept on this host), so
  tests and parallel test runs never see each other's traffic.
- :class:`RosTestBed` starts processes in that domain (with the large-image Fast DDS profile), owns an
  in-process rclpy context on the same domain for probing the graph and talking to the nodes, and always
  tears everything down.
- Waits poll the graph with a timeout (the package's :mod:`dream_vla_ros.ros_calls`, TimeoutError when they
  run out); nothing sleeps a fixed time hoping the graph is ready.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from dream_vla_ros.bringup import dds_environment
from dream_vla_ros.process_group import ProcessGroup
from dream_vla_ros.ros_calls import call_service, wait_for

# Fast DDS derives ports from the domain id; ids 0..101 are valid for every RMW. 0 (the default) is avoided.
_DOMAIN_RANGE = range(1, 102)
_domain_counter = itertools.count(random.Random(os.getpid() ^ int(time.time())).randrange(len(_DOMAIN_RANGE)))


def allocate_domain_id() -> int:
    """A domain id for one test: distinct within this run, randomised across parallel runs."""
    return _DOMAIN_RANGE[next(_domain_counter) % len(_DOMAIN_RANGE)]


class RosTestBed:
    """Processes and an in-process rclpy node, all in one private ROS domain."""

    def __init__(self, domain_id: int | None = None) -> None:
        import rclpy

        self.domain_id = allocate_domain_id() if domain_id is None else domain_id
        self.env = {
            "ROS_DOMAIN_ID": str(self.domain_id),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            **dds_environment({}),
        }
        os.environ.update({k: v for k, v in self.env.items() if k != "ROS_DOMAIN_ID"})
        self.processes = ProcessGroup(echo=None)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = rclpy.create_node(f"test_probe_{os.getpid()}", context=self.context)
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    # -- processes -------------------------------------------------------------------------------------------
    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        return self.processes.start(name, argv, {**self.env, **(env or {})})

    def start_python(self, name: str, script_or_module: str, *args: str, env: dict[str, str] | None = None):
        """Run a Python file (path) or module (dotted name) in the domain."""
        head = [sys.executable, script_or_module] if script_or_module.endswith(".py") else [
            sys.executable, "-m", script_or_module]
        return self.start(name, [*head, *args], env)

    def json_result(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait for process ``name`` to exit and return the last JSON object it printed."""
        proc = self.processes.processes[name]
        proc.popen.wait(timeout)
        time.sleep(0.05)  # let the output pump drain the pipe
        for line in reversed(self.processes.output(name).splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"{name} printed no JSON result; output:\n{self.processes.output(name)[-3000:]}")

    # -- graph and messages ----------------------------------------------------------------------------------
    def _spin_once(self) -> None:
        self.executor.spin_once(timeout_sec=0.02)

    def spin_until(self, condition: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
        """Spin the probe node until ``condition`` holds."""
        return wait_for(condition, timeout, what, pause=self._spin_once)

    def wait_for_publisher(self, topic: str, timeout: float = 10.0, count: int = 1) -> None:
        wait_for(lambda: self.node.count_publishers(topic) >= count, timeout, f"a publisher on {topic}")

    def wait_for_subscriber(self, topic: str, timeout: float = 10.0, count: int = 1) -> None:
        wait_for(lambda: self.node.count_subscribers(topic) >= count, timeout, f"a subscriber on {topic}")

    def wait_for_service(self, client, timeout: float = 10.0) -> None:
        wait_for(client.service_is_ready, timeout, f"service {client.srv_name}")

    def call(self, client, request, timeout: float = 10.0):
        """Call a service from the probe node and return its response."""
        return call_service(client, request, timeout, pause=self._spin_once)

    def outputs(self) -> str:
        return "\n".join(
            f"--- {name} (exit {p.popen.poll()}) ---\n{self.processes.output(name)[-4000:]}"
            for name, p in self.processes.processes.items()
        )

    def close(self) -> None:
        import rclpy

        try:
            self.processes.stop(timeout=5.0)
        finally:
            self.executor.shutdown()
            self.node.destroy_node()
            rclpy.shutdown(context=self.context)
