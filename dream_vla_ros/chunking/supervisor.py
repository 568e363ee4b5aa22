"""The chunk executor's supervisor: whether the executor may command the arm, and when its core must restart
from the measured state (pure: no ROS, no clock, no core).

The node feeds it events and does what the answers say, under the node's lock; the contract it implements is
the hand-over and hold part of ``dream_vla_ros/nodes/executor_node.py``'s docstring. Its state (``state``,
the ``~/status`` state) is made of orthogonal parts:

- lifecycle: while inactive the state is ``INACTIVE``, whatever else holds;
- controller fault: latched (``FAULT``) until ``activate`` or ``resume``;
- hand-over: ``ACTIVE`` (commanding), ``PAUSING`` (braking to rest, then ``PAUSED``), ``PAUSED`` (silent
  until ``activate``); a deactivate or a fault while pausing drops the pause (back to ``ACTIVE``);
- stop (``stopped``): an operator's ``~/stop``, latched until ``resume``: the core stays stopped;
- hold (``held``): a hold cause appeared (a joint-state fault, a missing controller): the core brakes to a hold
  until a reset from the measured state succeeds once the cause is gone;
- sync (``synced``): the core was reset from the measured state since the last lifecycle activate,
  ``activate`` or controller fault; before that nothing is sent and no chunk requested.

Control-plane events (services, lifecycle) answer a :class:`Decision` the node carries out. The control tick
asks only enums and booleans (no allocation): ``controller_fault(f)`` (True: stop the core, latch, report),
``controlling`` (else publish nothing but ~/status), ``tick(hold, measured)`` (a :class:`Step`; after a
successful reset ``reset_succeeded()``: True = stop the core again), ``synced`` (tick the core and send its
window), ``may_request`` (ask for a chunk if the core wants one) and ``braked(at_rest)`` (send nothing; once
``settle(now, settled)`` answers a Decision the pause is complete). An empty chunk stops the core and resumes it
(fresh chunks only) if ``core_may_resume``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

from dream_vla_ros import protocol

# A pause completes once the controller has answered every goal sent (so a program that starts its own motion
# when ~/status says "paused" is never preempted by a goal of ours still in flight), or after this many seconds.
PAUSE_SETTLE_TIMEOUT = 1.0
_TAKEN = "starting from the measured joint state"

Fault = TypeVar("Fault")


class State(enum.Enum):
    """The executor's state, valued as ``~/status`` names it."""

    INACTIVE = protocol.INACTIVE
    PAUSED = protocol.PAUSED
    PAUSING = protocol.PAUSING
    FAULT = protocol.FAULT
    ACTIVE = protocol.ACTIVE


class Step(enum.Enum):
    """What the node does with the core at a control tick, before ticking it."""

    KEEP = "keep"  # nothing
    HOLD = "hold"  # a hold cause appeared: stop the core (brake to a hold)
    RESET = "reset"  # reset the core from the measured state; call reset_succeeded if that worked


class CoreCall(enum.Enum):
    """What a Decision does to the core (ChunkExecutor)."""

    NONE = "none"
    STOP = "stop"  # brake to a hold, reject chunks
    RESUME = "resume"  # accept chunks from observations taken from now on


class OutputCall(enum.Enum):
    """What a Decision does to the controller outputs."""

    NONE = "none"
    START = "start"
    STOP = "stop"  # publish nothing on any controller interface


@dataclass(frozen=True)
class Decision:
    """What the node does on a service call or lifecycle transition, in this order: under its lock ``core``
    (and a new plan version if ``replan``); then ``outputs``, clear the fault on /diagnostics if
    ``fault_cleared``, log ``log`` (if any), publish ~/status if ``publish``. A service answers ``success``
    and ``message``."""

    success: bool = True
    message: str = ""
    core: CoreCall = CoreCall.NONE
    replan: bool = False
    outputs: OutputCall = OutputCall.NONE
    fault_cleared: bool = False
    log: str = ""
    publish: bool = False


SILENT_PAUSED = Decision(outputs=OutputCall.STOP, log="paused: publishing nothing", publish=True)
SILENT_INACTIVE = Decision(outputs=OutputCall.STOP, log="inactive: publishing nothing", publish=True)


class Supervisor(Generic[Fault]):
    """See the module docstring. ``Fault`` is whatever the node reports a controller fault as (kept, returned)."""

    def __init__(self, start_paused: bool = False) -> None:
        self._lifecycle = False
        self._hand = State.PAUSED if start_paused else State.ACTIVE
        self._fault: Fault | None = None
        self._stopped = False
        self._held = False
        self._synced = False
        self._braked_since: float | None = None

    # ----------------------------------------------------------------------------------------------- queries
    @property
    def state(self) -> State:
        if not self._lifecycle:
            return State.INACTIVE
        if self._fault is not None:
            return State.FAULT
        return self._hand

    @property
    def controlling(self) -> bool:
        """Active or pausing: the node runs the control tick (otherwise it publishes nothing but ~/status)."""
        return self._lifecycle and self._fault is None and self._hand is not State.PAUSED

    @property
    def fault(self) -> Fault | None:
        """The latched controller fault."""
        return self._fault

    @property
    def stopped(self) -> bool:
        """~/stop is latched."""
        return self._stopped

    @property
    def held(self) -> bool:
        """A hold cause keeps the core stopped (``fault_hold`` on ~/status)."""
        return self._held

    @property
    def synced(self) -> bool:
        """The core was reset from the measured state since the arm was taken: it may tick, its windows be sent."""
        return self._synced

    @property
    def may_request(self) -> bool:
        """Chunks may be requested (if the core wants one): synced and not pausing."""
        return self._synced and self._hand is not State.PAUSING

    @property
    def core_may_resume(self) -> bool:
        """After a stop from the policy (an empty chunk) the core accepts fresh chunks again, unless ~/stop or a
        hold cause keeps it stopped."""
        return not self._stopped and not self._held

    # ------------------------------------------------------------------------------------ control plane
    def lifecycle_activate(self) -> Decision:
        """Lifecycle activate: the core restarts from the measured state (unless paused: until ``activate``)."""
        self._lifecycle, self._synced = True, False
        paused = self._hand is State.PAUSED
        return Decision(replan=True, outputs=OutputCall.START,
                        log="active: " + ("paused until ~/activate" if paused else _TAKEN))

    def lifecycle_deactivate(self) -> Decision:
        """Lifecycle deactivate, shutdown or error: silent at once; a pause in progress is dropped."""
        self._lifecycle = False
        self._end_pause(State.ACTIVE)
        return SILENT_INACTIVE

    def stop(self) -> Decision:
        """~/stop: brake to a hold, latched until ``resume``."""
        newly, self._stopped = not self._stopped, True
        return Decision(message="stopped", core=CoreCall.STOP, replan=True,
                        log="stopped (~/stop): holding until ~/resume" if newly else "")

    def resume(self) -> Decision:
        """~/resume: clear the stop and a latched fault (the outputs start again and the core restarts from the
        measured state); without a fault the core accepts fresh chunks at once unless a hold cause keeps it
        stopped."""
        was, fault = self._stopped, self._fault
        self._stopped, self._fault = False, None
        cleared = fault is not None
        log = "resumed (~/resume)" + (": restarting from the measured state" if cleared else "")
        return Decision(message="resumed; holding until the fault clears" if self._held else "resumed",
                        core=CoreCall.RESUME if not cleared and self.core_may_resume else CoreCall.NONE,
                        replan=True, outputs=OutputCall.START if cleared else OutputCall.NONE,
                        fault_cleared=cleared, log=log if was or cleared else "")

    def pause(self) -> Decision:
        """~/pause. While controlling: brake to rest (see ``settle``), then silent. Otherwise the executor stays
        silent and is paused once nothing else (lifecycle, fault) keeps it so."""
        was = self.state
        if not self.controlling:
            self._hand = State.PAUSED
            return Decision(message=f"paused (was {was.value})", publish=True)
        self._hand, self._braked_since = State.PAUSING, None
        log = "pausing (~/pause): braking to rest, then publishing nothing" if was is State.ACTIVE else ""
        return Decision(message="pausing: braking to rest, then silent", core=CoreCall.STOP, replan=True, log=log,
                        publish=True)

    def activate(self) -> Decision:
        """~/activate: take the arm; clears a pause and a latched fault, not a stop; the core restarts from the
        measured state. Refused (nothing changes) while the lifecycle is inactive."""
        if not self._lifecycle:
            return Decision(False, "the node is not active (lifecycle): activate it with ~/change_state first")
        was, cleared = self.state, self._fault is not None
        self._hand, self._braked_since = State.ACTIVE, None
        self._fault, self._synced = None, False
        stopped = "; stopped (~/stop) until ~/resume" if self._stopped else ""
        return Decision(message=f"activated: {_TAKEN}{stopped}", replan=True, outputs=OutputCall.START,
                        fault_cleared=cleared, log=f"activated (~/activate, was {was.value}): {_TAKEN}", publish=True)

    # ------------------------------------------------------------------------------------- control tick
    def controller_fault(self, fault: Fault) -> bool:
        """A controller stopped following. True while controlling: ``fault`` is latched and the executor is
        silent at once (the controller holds the arm); otherwise it is ignored."""
        if not self.controlling:
            return False
        self._fault, self._synced = fault, False
        self._end_pause(State.ACTIVE)
        return True

    def tick(self, hold: bool, measured: bool) -> Step:
        """A control tick while ``controlling``: ``hold`` = a hold cause is present now, ``measured`` = a valid
        joint state is known."""
        if hold:
            if self._held:
                return Step.KEEP
            self._held = True
            return Step.HOLD
        if measured and (self._held or not self._synced):
            return Step.RESET
        return Step.KEEP

    def reset_succeeded(self) -> bool:
        """The core was reset from the measured state (a failed reset changes nothing: the executor keeps
        holding and tries again next tick). True: stop the core again at once (~/stop or a pause holds)."""
        self._held, self._synced = False, True
        return self._stopped or self._hand is State.PAUSING

    def braked(self, at_rest: bool) -> bool:
        """After the core's tick: True while pausing with the core at rest (``at_rest``: it holds) or not reset
        yet. The last window sent already ends at rest, so nothing more is sent; the node calls ``settle``."""
        return self._hand is State.PAUSING and (at_rest or not self._synced)

    def settle(self, now: float, settled: bool) -> Decision | None:
        """While ``braked``: the pause is complete (paused, silent) once the controller answered every goal sent
        (``settled``) or PAUSE_SETTLE_TIMEOUT s passed since the first braked tick; None until then."""
        if self.state is not State.PAUSING:
            return None
        if self._braked_since is None:
            self._braked_since = now
        if not settled and now - self._braked_since <= PAUSE_SETTLE_TIMEOUT:
            return None
        self._end_pause(State.PAUSED)
        return SILENT_PAUSED

    def _end_pause(self, hand: State) -> None:
        if self._hand is State.PAUSING:
            self._hand = hand
        self._braked_since = None
