"""The executor's supervisor (chunking/supervisor.py): explicit transitions, the service answers, and random event
sequences driven through a stand-in of the node (a fake core and outputs) that must keep the hand-over
contract of nodes/executor_node.py: nothing sent unless active or pausing and restarted from the measured state
since the arm was last taken, ~/stop latched until ~/resume, faults cleared only by ~/activate or ~/resume, a
pause ends silent and stays so until ~/activate."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dream_vla_ros import protocol
from dream_vla_ros.chunking.supervisor import (
    PAUSE_SETTLE_TIMEOUT,
    SILENT_PAUSED,
    CoreCall,
    OutputCall,
    State,
    Step,
    Supervisor,
)


def active(start_paused: bool = False) -> Supervisor[str]:
    """Lifecycle-active, taken (unless start_paused) and reset from the measured state."""
    supervisor: Supervisor[str] = Supervisor(start_paused)
    supervisor.lifecycle_activate()
    if not start_paused:
        assert supervisor.tick(hold=False, measured=True) is Step.RESET
        assert not supervisor.reset_succeeded()
    return supervisor


def test_start_and_take_over_from_the_measured_state():
    supervisor: Supervisor[str] = Supervisor()
    assert supervisor.state is State.INACTIVE and not supervisor.controlling
    decision = supervisor.lifecycle_activate()
    assert decision.outputs is OutputCall.START and decision.replan and decision.core is CoreCall.NONE
    assert supervisor.state is State.ACTIVE and supervisor.controlling
    assert not supervisor.synced and not supervisor.may_request
    assert supervisor.tick(hold=False, measured=False) is Step.KEEP  # no joint state yet: nothing to reset from
    assert supervisor.tick(hold=False, measured=True) is Step.RESET
    assert supervisor.tick(hold=False, measured=True) is Step.RESET  # the reset failed: try again
    assert not supervisor.reset_succeeded()
    assert supervisor.synced and supervisor.may_request
    assert supervisor.tick(hold=False, measured=True) is Step.KEEP


def test_start_paused_waits_for_activate():
    supervisor = active(start_paused=True)
    assert supervisor.state is State.PAUSED and not supervisor.controlling
    assert supervisor.lifecycle_activate().log == "active: paused until ~/activate"
    decision = supervisor.activate()
    assert decision.success and decision.outputs is OutputCall.START and decision.publish
    assert decision.log == "activated (~/activate, was paused): starting from the measured joint state"
    assert supervisor.state is State.ACTIVE and not supervisor.synced


def test_activate_is_refused_while_the_lifecycle_is_inactive():
    supervisor: Supervisor[str] = Supervisor(start_paused=True)
    decision = supervisor.activate()
    assert not decision.success and "~/change_state" in decision.message
    assert decision.outputs is OutputCall.NONE and not decision.replan
    supervisor.lifecycle_activate()
    assert supervisor.state is State.PAUSED


def test_stop_is_latched_until_resume_and_survives_activate():
    supervisor = active()
    decision = supervisor.stop()
    assert decision.core is CoreCall.STOP and decision.log and supervisor.stopped
    assert supervisor.stop().log == ""  # logged once
    assert not supervisor.core_may_resume
    assert supervisor.activate().message.endswith("; stopped (~/stop) until ~/resume")
    assert supervisor.stopped
    assert supervisor.tick(hold=False, measured=True) is Step.RESET
    assert supervisor.reset_succeeded()  # the reset clears the core's stop: stop it again
    decision = supervisor.resume()
    assert decision.core is CoreCall.RESUME and decision.message == "resumed" and not supervisor.stopped
    assert supervisor.resume().log == ""  # nothing was latched


def test_hold_cause_stops_the_core_until_a_reset_from_the_measured_state():
    supervisor = active()
    assert supervisor.tick(hold=True, measured=True) is Step.HOLD
    assert supervisor.held and supervisor.synced  # braking to a hold: windows still go out
    assert supervisor.tick(hold=True, measured=True) is Step.KEEP
    assert not supervisor.core_may_resume
    decision = supervisor.resume()
    assert decision.core is CoreCall.NONE and decision.message == "resumed; holding until the fault clears"
    assert supervisor.tick(hold=False, measured=False) is Step.KEEP
    assert supervisor.tick(hold=False, measured=True) is Step.RESET
    assert supervisor.held  # a failed reset keeps holding
    assert not supervisor.reset_succeeded()
    assert not supervisor.held and supervisor.core_may_resume


def test_controller_fault_latches_until_resume_or_activate():
    supervisor = active()
    assert supervisor.controller_fault("aborted")
    assert supervisor.state is State.FAULT and supervisor.fault == "aborted" and not supervisor.controlling
    assert not supervisor.controller_fault("again")  # silent: nothing more to latch
    supervisor.lifecycle_deactivate()
    supervisor.lifecycle_activate()
    assert supervisor.state is State.FAULT
    decision = supervisor.resume()
    assert decision.fault_cleared and decision.outputs is OutputCall.START and decision.core is CoreCall.NONE
    assert decision.log == "resumed (~/resume): restarting from the measured state"
    assert supervisor.state is State.ACTIVE and not supervisor.synced
    assert supervisor.tick(hold=False, measured=True) is Step.RESET
    supervisor.reset_succeeded()
    assert supervisor.controller_fault("rejected")
    decision = supervisor.activate()
    assert decision.fault_cleared and supervisor.fault is None and supervisor.state is State.ACTIVE


def test_faults_are_ignored_while_silent():
    supervisor: Supervisor[str] = Supervisor()
    assert not supervisor.controller_fault("late")  # inactive
    supervisor = active(start_paused=True)
    assert not supervisor.controller_fault("late") and supervisor.state is State.PAUSED


def test_pause_brakes_to_rest_then_goes_silent_once_settled():
    supervisor = active()
    decision = supervisor.pause()
    assert decision.core is CoreCall.STOP and decision.replan and decision.publish and decision.log
    assert decision.message == "pausing: braking to rest, then silent"
    assert supervisor.state is State.PAUSING and supervisor.controlling and not supervisor.may_request
    assert not supervisor.braked(at_rest=False)
    assert supervisor.braked(at_rest=True)
    assert supervisor.settle(10.0, settled=False) is None
    assert supervisor.settle(10.0 + PAUSE_SETTLE_TIMEOUT, settled=False) is None
    assert supervisor.settle(10.0 + PAUSE_SETTLE_TIMEOUT + 0.01, settled=False) is SILENT_PAUSED
    assert SILENT_PAUSED.outputs is OutputCall.STOP and SILENT_PAUSED.publish
    assert supervisor.state is State.PAUSED and not supervisor.controlling
    assert supervisor.pause().message == "paused (was paused)"


def test_pause_completes_at_once_when_the_controller_answered_everything():
    supervisor = active()
    supervisor.pause()
    assert supervisor.pause().log == ""  # pausing already
    assert supervisor.settle(3.0, settled=True) is SILENT_PAUSED


def test_pause_before_the_reset_is_at_rest_and_a_reset_while_pausing_stops_the_core():
    supervisor: Supervisor[str] = Supervisor()
    supervisor.lifecycle_activate()
    supervisor.pause()
    assert supervisor.braked(at_rest=False)  # nothing was sent since the take-over
    assert supervisor.tick(hold=False, measured=True) is Step.RESET
    assert supervisor.reset_succeeded()


def test_pause_while_silent_takes_effect_once_nothing_else_holds():
    supervisor: Supervisor[str] = Supervisor()
    decision = supervisor.pause()
    assert decision.core is CoreCall.NONE and decision.message == "paused (was inactive)"
    supervisor.lifecycle_activate()
    assert supervisor.state is State.PAUSED
    supervisor = active()
    supervisor.controller_fault("aborted")
    supervisor.pause()
    assert supervisor.state is State.FAULT
    supervisor.resume()
    assert supervisor.state is State.PAUSED  # the program that paused it still has the arm


def test_deactivate_or_fault_while_pausing_drops_the_pause():
    supervisor = active()
    supervisor.pause()
    decision = supervisor.lifecycle_deactivate()
    assert decision.outputs is OutputCall.STOP and decision.publish
    assert supervisor.state is State.INACTIVE
    supervisor.lifecycle_activate()
    assert supervisor.state is State.ACTIVE
    supervisor.pause()
    supervisor.controller_fault("preempted")
    supervisor.resume()
    assert supervisor.state is State.ACTIVE


def test_states_are_the_protocol_strings():
    assert [s.value for s in State] == [protocol.INACTIVE, protocol.PAUSED, protocol.PAUSING, protocol.FAULT,
                                        protocol.ACTIVE]
    assert protocol.resolve("/chunk_executor", protocol.PAUSE) == "/chunk_executor/pause"
    assert protocol.resolve("/ns/arm/", protocol.STATUS_TOPIC) == "/ns/arm/status"
    assert protocol.resolve("/x", "/abs") == "/abs"


# ------------------------------------------------------------------------------------------- random sequences
class Rig:
    """The node's side, reduced: a core with a stop latch, outputs on or off, what was sent and requested."""

    def __init__(self, start_paused: bool) -> None:
        self.supervisor: Supervisor[int] = Supervisor(start_paused)
        self.now = 0.0
        self.core_reset = False  # ChunkExecutor.reset was called (it is idle before)
        self.core_stopped = False
        self.outputs = False
        self.faults = 0
        self.sends: list[float] = []
        self.requests: list[float] = []
        # the contract, tracked independently of the supervisor
        self.lifecycle = False
        self.operator_stop = False
        self.fault = False
        self.paused = start_paused
        self.fresh = False  # reset from the measured state since the last take-over or fault
        self.pause_brakes = False  # a pause stopped the core (an empty chunk or ~/resume since resumes it)

    def apply(self, decision) -> None:
        if decision.core is CoreCall.STOP:
            self.core_stopped = True
        elif decision.core is CoreCall.RESUME:
            self.core_stopped = False
        if decision.outputs is not OutputCall.NONE:
            self.outputs = decision.outputs is OutputCall.START

    def event(self, name: str) -> None:
        supervisor = self.supervisor
        was_controlling = supervisor.controlling
        if name == "lifecycle_activate":
            self.lifecycle, self.fresh = True, False
        elif name == "lifecycle_deactivate":
            self.lifecycle = False
        elif name == "stop":
            self.operator_stop = True
        elif name == "resume":
            if self.fault:
                self.fresh = False
            self.operator_stop = self.fault = False
        elif name == "activate" and self.lifecycle:
            self.fault = self.paused = self.fresh = False
        elif name == "pause":
            self.paused = self.paused or not was_controlling
            self.pause_brakes = was_controlling
        if name in ("empty_chunk", "resume"):
            self.pause_brakes = False
        if name == "empty_chunk":
            self.core_stopped = not supervisor.core_may_resume
        else:
            self.apply(getattr(supervisor, name)())

    def tick(self, hold: bool, measured: bool, reset_ok: bool, at_rest: bool, settled: bool, fault: bool) -> None:
        supervisor = self.supervisor
        self.now += 0.3
        if fault:
            was_controlling = supervisor.controlling
            latched = supervisor.controller_fault(self.faults)
            assert latched == was_controlling  # faults are taken only while active or pausing
            if latched:
                self.core_stopped, self.outputs = True, False
                self.fault, self.fresh = True, False
                self.faults += 1
                return
        if not supervisor.controlling:
            return
        step = supervisor.tick(hold, measured)
        just_reset = False
        if step is Step.HOLD:
            self.core_stopped = True
        elif step is Step.RESET:
            assert measured and not hold
            if reset_ok:
                self.core_reset, self.core_stopped, self.fresh, just_reset = True, False, True, True
                if supervisor.reset_succeeded():
                    self.core_stopped = True
        if not hold and measured and reset_ok:  # the cause is gone: following again from the measured state
            assert not supervisor.held and supervisor.synced
        if supervisor.state is State.PAUSING and self.pause_brakes:
            assert self.core_stopped
        at_rest = self.core_reset and (at_rest or just_reset)  # idle before a reset, holding right after one
        window = supervisor.synced and self.core_reset
        wants = self.core_reset and not self.core_stopped and supervisor.may_request
        if supervisor.braked(at_rest):
            done = supervisor.settle(self.now, settled)
            if done is not None:
                self.apply(done)
                self.paused = True
            return
        if window:
            assert supervisor.state in (State.ACTIVE, State.PAUSING) and supervisor.synced
            assert self.outputs and self.fresh and self.lifecycle and not self.fault and not self.paused
            self.sends.append(self.now)
        if wants:
            assert supervisor.state is State.ACTIVE and self.fresh
            self.requests.append(self.now)

    def check(self) -> None:
        supervisor = self.supervisor
        assert supervisor.state.value in (protocol.INACTIVE, protocol.PAUSED, protocol.PAUSING, protocol.FAULT,
                                          protocol.ACTIVE)
        assert (supervisor.state is State.INACTIVE) == (not self.lifecycle)
        assert supervisor.controlling == (supervisor.state.value in protocol.COMMANDING)
        assert supervisor.stopped == self.operator_stop
        assert (supervisor.fault is not None) == self.fault
        assert (supervisor.state is State.PAUSED) == (self.paused and self.lifecycle and not self.fault)
        if self.paused:
            assert not supervisor.controlling
        if self.operator_stop or supervisor.held:
            assert self.core_stopped  # (ChunkExecutor.stop latches even before the first reset)
        if supervisor.synced:
            assert self.fresh


EVENTS = ["lifecycle_activate", "lifecycle_deactivate", "stop", "resume", "pause", "activate", "empty_chunk"]


def often(true: int, false: int = 1) -> st.SearchStrategy[bool]:
    return st.sampled_from([True] * true + [False] * false)


# (tick, hold, measured, reset_ok, at_rest, settled, controller fault)
TICK = st.tuples(st.just("tick"), often(1, 3), often(3), often(3), often(1), often(1), often(1, 7))
STEPS = st.lists(st.one_of(st.sampled_from(EVENTS).map(lambda e: (e,)), TICK, TICK), min_size=1, max_size=80)


def run(start_paused: bool, steps, lifecycle_active: bool = True) -> Rig:
    rig = Rig(start_paused)
    if lifecycle_active:
        rig.event("lifecycle_activate")
    for step in steps:
        if step[0] == "tick":
            rig.tick(*step[1:])
        else:
            rig.event(step[0])
        rig.check()
    return rig


@settings(max_examples=500, deadline=None)
@given(st.booleans(), STEPS, often(4))
def test_random_events_keep_the_hand_over_contract(start_paused, steps, lifecycle_active):
    run(start_paused, steps, lifecycle_active)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), STEPS, st.booleans(), st.booleans())
def test_a_pause_ends_silent_and_stays_so_until_activate(start_paused, steps, settled, measured):
    """Also without joint states (``measured`` False: the core may never have been reset)."""
    rig = run(start_paused, steps)
    rig.event("pause")
    sends = len(rig.sends)
    for _ in range(int(PAUSE_SETTLE_TIMEOUT / 0.3) + 2):  # at rest, the controller busy unless settled
        rig.tick(hold=not measured, measured=measured, reset_ok=True, at_rest=True, settled=settled, fault=False)
    assert len(rig.sends) == sends
    assert rig.supervisor.state in (State.PAUSED, State.INACTIVE, State.FAULT) and not rig.supervisor.controlling
    for name in ("lifecycle_deactivate", "lifecycle_activate", "resume", "stop", "pause", "empty_chunk"):
        rig.event(name)
        rig.tick(hold=False, measured=True, reset_ok=True, at_rest=False, settled=True, fault=True)
        assert not rig.supervisor.controlling
    assert len(rig.sends) == sends
    rig.event("activate")
    assert rig.supervisor.state is State.ACTIVE
