"""The shared polling waits and service calls (no DDS: stand-in clients)."""

from __future__ import annotations

import types

import pytest

from dream_vla_ros.errors import DreamVlaError
from dream_vla_ros.ros_calls import call_service, wait_for


def test_wait_returns_the_first_truthy_value_and_names_what_timed_out():
    values = iter([0, None, "", 7])
    pauses: list[int] = []
    assert wait_for(lambda: next(values), 1.0, "seven", pause=lambda: pauses.append(1)) == 7
    assert len(pauses) == 3
    with pytest.raises(TimeoutError, match=r"timed out after 0.05 s waiting for nothing"):
        wait_for(lambda: False, 0.05, "nothing")
    with pytest.raises(DreamVlaError, match="waiting for nothing"):
        wait_for(lambda: False, 0.0, "nothing", error=DreamVlaError)


def test_wait_stops_at_once_when_the_check_fails():
    def dead() -> None:
        raise DreamVlaError("policy_node exited with 1")

    with pytest.raises(DreamVlaError, match="exited"):
        wait_for(lambda: False, 10.0, "the policy node", check=dead)


def test_call_waits_for_the_service_then_for_its_answer():
    class Client:
        srv_name = "/sim_arm/reset"

        def __init__(self) -> None:
            self.polls = 0

        def service_is_ready(self) -> bool:
            self.polls += 1
            return self.polls > 2

        def call_async(self, request):
            return types.SimpleNamespace(done=lambda: True, result=lambda: f"answer to {request}")

    assert call_service(Client(), "hello", 1.0, pause=lambda: None) == "answer to hello"

    class Silent(Client):
        def call_async(self, request):
            return types.SimpleNamespace(done=lambda: False)

    with pytest.raises(TimeoutError, match="an answer from /sim_arm/reset"):
        call_service(Silent(), "hello", 0.05)
