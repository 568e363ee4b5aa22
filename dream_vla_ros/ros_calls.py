"""Polling waits and service calls of a client node: shared by the evaluation session, the commander, the
``record`` and benchmark clients and the ROS test harness.

A wait calls ``condition`` until it returns something truthy, and returns that. Between tries it calls
``pause``: the default sleeps 20 ms (for a node spun by another thread); a waiter that spins its node itself
passes a spin-once. ``check`` runs before each pause and may raise (e.g. when a process the wait depends on has
exited). A wait that runs out raises ``error`` (TimeoutError unless the caller names its own type) with
"timed out after <timeout> s waiting for <what>".

Nothing here imports rclpy at module level: a client is anything with ``service_is_ready()``, ``call_async()``
and ``srv_name`` (an rclpy client).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.02  # s between the tries of a wait that does not spin


def sleep(seconds: float = POLL_INTERVAL) -> Callable[[], None]:
    """A ``pause`` that sleeps ``seconds``."""
    return lambda: time.sleep(seconds)


def wait_for(condition: Callable[[], T], timeout: float, what: str, *, pause: Callable[[], None] | None = None,
             check: Callable[[], None] | None = None, error: type[Exception] = TimeoutError) -> T:
    """Call ``condition`` until it returns a truthy value and return it (see the module docstring)."""
    pause = pause or sleep()
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        pause()


def call_service(client: Any, request: Any, timeout: float, *, pause: Callable[[], None] | None = None,
                 check: Callable[[], None] | None = None, error: type[Exception] = TimeoutError) -> Any:
    """Wait up to ``timeout`` s for the service, call it, and wait up to ``timeout`` s for its response."""
    waits = {"pause": pause, "check": check, "error": error}
    wait_for(client.service_is_ready, timeout, f"service {client.srv_name}", **waits)
    future = client.call_async(request)
    wait_for(future.done, timeout, f"an answer from {client.srv_name}", **waits)
    return future.result()


def lifecycle_state(client: Any, timeout: float, *, pause: Callable[[], None] | None = None,
                    check: Callable[[], None] | None = None, error: type[Exception] = TimeoutError) -> str:
    """The label of a lifecycle node's current state (``unconfigured``, ``inactive``, ``active``, ...) from its
    ``~/get_state`` (a lifecycle_msgs/srv/GetState ``client``)."""
    from lifecycle_msgs.srv import GetState

    response = call_service(client, GetState.Request(), timeout, pause=pause, check=check, error=error)
    return str(response.current_state.label)
