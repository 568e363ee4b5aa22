"""What MoveIt Servo does with a JointJog command on its simplest path, without ROS (the core of the stand-in
``dream_vla_ros/nodes/sim/jog_integrator_node.py``; not Servo: no collision checking, no singularity or
joint-limit handling, no smoothing).

At every update, if the newest command is fresh (its stamp within ``command_timeout`` of now), the commanded
joint positions advance by velocity * elapsed time (the elapsed time capped at ``command_timeout``; joints
not in the command hold). The integration starts from the measured joint state, and again after every halt;
when the commands go stale the integrator halts: one hold at the commanded positions, then nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Command = tuple[float, Mapping[str, float]]  # stamp (s), joint name -> velocity
Measured = tuple[list[str], np.ndarray]  # joint names, positions


class JogIntegrator:
    """JointJog velocities -> commanded joint positions (see the module docstring)."""

    def __init__(self, command_timeout: float) -> None:
        self.command_timeout = command_timeout
        self.names: list[str] = []  # the commanded joints: those of the joint state it started from
        self.running = False
        self._q: np.ndarray | None = None
        self._t = 0.0

    def update(self, now: float, command: Command | None, measured: Measured | None
               ) -> tuple[np.ndarray, np.ndarray] | None:
        """The (positions, velocities) to command at ``now`` for ``self.names``, or None (command nothing)."""
        fresh = command is not None and now - command[0] < self.command_timeout
        if not fresh:
            if not self.running:
                return None
            self.running = False  # halt: hold the commanded positions once
            return self._q, np.zeros_like(self._q)
        if not self.running:
            if measured is None:
                return None
            self.names, self._q, self._t = list(measured[0]), np.array(measured[1], dtype=float), now
            self.running = True
        velocity = np.array([command[1].get(name, 0.0) for name in self.names])
        self._q = self._q + velocity * min(now - self._t, self.command_timeout)
        self._t = now
        return self._q, velocity
