"""The commanded motion planned ahead of the current grid time (rows for grid indices k+1, k+2, ...)."""

from __future__ import annotations

import numpy as np

StepNote = tuple[tuple[bool, bool, bool], bool]  # (position, velocity, acceleration clamped), tracked


class Plan:
    """A queue of planned states: append at the end, commit from the front, read rows for a window."""

    def __init__(self, n_joints: int, capacity: int = 64) -> None:
        self._q = np.empty((capacity, n_joints))
        self._v = np.empty((capacity, n_joints))
        self._notes: list[StepNote] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._notes)

    def clear(self) -> None:
        self._notes.clear()
        self._head = 0

    def last(self) -> tuple[np.ndarray, np.ndarray]:
        """The last planned (positions, velocities); the plan must not be empty."""
        row = self._head + len(self._notes) - 1
        return self._q[row], self._v[row]

    def append(self, q: np.ndarray, v: np.ndarray, clamped: tuple[bool, bool, bool], tracked: bool) -> None:
        n = len(self._notes)
        if self._head + n == len(self._q):
            if n * 2 > len(self._q):  # mostly full: grow, else slide the rows to the front
                self._q = np.concatenate([self._q, np.empty_like(self._q)])
                self._v = np.concatenate([self._v, np.empty_like(self._v)])
            self._q[:n] = self._q[self._head : self._head + n]
            self._v[:n] = self._v[self._head : self._head + n]
            self._head = 0
        self._q[self._head + n] = q
        self._v[self._head + n] = v
        self._notes.append((clamped, tracked))

    def pop(self) -> tuple[np.ndarray, np.ndarray, tuple[bool, bool, bool], bool]:
        """Remove and return the first planned step (copies of its positions and velocities)."""
        clamped, tracked = self._notes.pop(0)
        row = self._head
        self._head += 1
        if not self._notes:
            self._head = 0
        return self._q[row].copy(), self._v[row].copy(), clamped, tracked

    def rows(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions and velocities [len(offsets), J] of the planned steps at ``offsets`` from the front."""
        index = self._head + offsets
        return self._q[index], self._v[index]
