"""Inference scheduling of the policy node and its work around the engine (no ROS node needed: unit-testable):
which chunk request to answer, when an observation is handed to the inference thread, the checks of what the
engine returns, the optional added delay, and the latency account.

Requests: each request (the executor's frame_id) is answered by at most one chunk; it is answered again only
when the executor still repeats it ``request_timeout`` s after the answer (the chunk was lost), and not at all
once the executor has not asked for ``request_timeout`` s.

Scheduling: an observation is taken only while no inference is running, from the newest frames (none
rejected) and joint state (healthy), all fresh and in sync (:mod:`~dream_vla_ros.nodes.inputs`; after a timing
fault an input must stay fresh for ``input_recovery_time`` s), and at most once per frame of the first camera.

Latency stages of a published chunk (ms): ``transport`` (first camera's stamp to its arrival), ``wait``
(arrival to the job's start), ``conversion`` (messages to pixels), ``preprocessing``, ``engine`` and
``postprocessing`` (from the engine's own timings), ``publish``.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes.conversions import prediction_to_trajectory
from dream_vla_ros.nodes.diagnostics import gate_slot
from dream_vla_ros.nodes.health import RecoveryGate
from dream_vla_ros.nodes.inputs import FreshnessLimits, check_freshness, timing_slots
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig
from dream_vla_ros.nodes.policy_frames import Frame
from dream_vla_ros.nodes.worker import SingleWorker
from dream_vla_ros.policy.envelope import confine

LATENCY_SAMPLES = 100  # per stage, for the medians on /diagnostics


@dataclass(frozen=True)
class Job:
    """One observation for the inference thread: the frames per camera (the model's order; the first camera's
    gives the stamp), proprio in model joint order, the goal and its epoch, when it was submitted (s)."""

    request: str
    frames: dict[str, Frame]
    proprio: np.ndarray
    goal: str
    epoch: int
    stamp: float
    submitted: float

    @property
    def first(self) -> Frame:
        """The first camera's frame."""
        return next(iter(self.frames.values()))


class ChunkRequests:
    """The executor's newest chunk request and the request answered last (the caller locks)."""

    def __init__(self) -> None:
        self._newest: tuple[str, float] | None = None
        self._served: tuple[str, float] = ("", 0.0)

    def reset(self) -> None:
        self._newest, self._served = None, ("", 0.0)

    def ask(self, request: str, now: float) -> None:
        self._newest = (request, now)

    def answered(self, request: str, now: float) -> None:
        self._served = (request, now)

    def due(self, now: float, timeout: float) -> str | None:
        """The request to answer now, or None: none yet, the executor stopped asking, or the newest one was
        answered less than ``timeout`` s ago."""
        if self._newest is None:
            return None
        request, asked = self._newest
        if now - asked > timeout:
            return None  # the executor stopped asking
        if request == self._served[0] and now - self._served[1] < timeout:
            return None  # answered; asked again after request_timeout only if that chunk never arrived
        return request


class InferenceScheduler:
    """When the node infers (thread-safe): while active (lifecycle), not stopped (``~/stop``), with a goal, for a
    chunk request that is due, on inputs that may be used (see the module docstring); one :class:`Job` at a
    time on the inference thread (``run`` gets each; ``on_error`` an exception that escaped it).

    Every change of goal, stop and deactivation starts a new *epoch*: a chunk computed in an older one is not
    wanted any more. ``diagnostics`` is the node's :class:`~dream_vla_ros.nodes.diagnostics.Diagnostics`:
    timing causes are reported there and cleared once resolved.
    """

    def __init__(self, diagnostics: Any, run: Callable[[Job], None], on_error: Callable[[BaseException], None]) -> None:
        self._diagnostics = diagnostics
        self._worker = SingleWorker(run, on_error, name="inference")
        self._lock = threading.Lock()
        self._limits: FreshnessLimits | None = None
        self._recovery = RecoveryGate(0.0)
        self._request_timeout: float | None = None  # None: unconfigured
        self._requests = ChunkRequests()
        self.active = False
        self.stopped = False
        self.goal = ""
        self._epoch = 0

    @property
    def busy(self) -> bool:
        return self._worker.busy

    def close(self) -> None:
        self._worker.close(timeout=2.0)

    def configure(self, config: PolicyNodeConfig) -> None:
        """Judge requests and inputs by ``config`` from now on (requests and input recoveries start afresh)."""
        with self._lock:
            self._limits = FreshnessLimits(config.max_image_age, config.max_joint_state_age, config.max_future,
                                           config.max_sync_skew)
            self._recovery = RecoveryGate(config.input_recovery_time)
            self._request_timeout = config.request_timeout
            self._requests.reset()

    def release(self) -> None:
        """Unconfigured: no more jobs; requests are forgotten."""
        with self._lock:
            self._request_timeout = None
            self._requests.reset()

    def activate(self) -> None:
        with self._lock:
            self.active = True

    def deactivate(self, discard: bool = True) -> None:
        """Inactive; with ``discard`` a chunk still being computed is not wanted any more."""
        with self._lock:
            self.active = False
            if discard:
                self._epoch += 1

    def stop(self) -> bool:
        """Stopped until :meth:`resume` (a chunk still being computed is not wanted); True if it was already."""
        with self._lock:
            was, self.stopped = self.stopped, True
            self._epoch += 1
            return was

    def resume(self) -> tuple[bool, bool, str]:
        """(active, was stopped, the goal); the stop is lifted only while active."""
        with self._lock:
            was = self.stopped
            if self.active:
                self.stopped = False
            return self.active, was, self.goal

    def set_goal(self, goal: str) -> bool:
        """Make ``goal`` current ('' = none: no jobs); True if it differs from the one before."""
        with self._lock:
            changed, self.goal = goal != self.goal, goal
            self._epoch += 1
            return changed

    def ask(self, request: str, now: float) -> None:
        """The executor asks for a chunk (``request`` = its frame_id)."""
        with self._lock:
            self._requests.ask(request, now)

    def wanted(self, job: Job) -> bool:
        """Whether the chunk of ``job`` may still be published."""
        with self._lock:
            return self.active and not self.stopped and job.epoch == self._epoch

    def answered(self, job: Job, now: float) -> None:
        with self._lock:
            self._requests.answered(job.request, now)

    def inputs_fresh(self, now: float, frames: Mapping[str, Frame | None],
                     joints: tuple[np.ndarray, float] | None) -> bool:
        """Check the stamps of the newest inputs; report new timing causes and clear resolved ones."""
        if self._limits is None:
            return False
        problems = check_freshness(
            now, {c: (f.stamp if f else None) for c, f in frames.items()}, joints[1] if joints else None,
            self._limits,
        )
        for problem in problems:
            self._diagnostics.report(problem.slot, problem.key, problem.message, level="warn")
        bad = {p.slot for p in problems}
        usable = [gate_slot(self._diagnostics, self._recovery, slot, slot not in bad, now)
                  for slot in timing_slots(tuple(frames))]
        return all(usable)

    def offer(self, now: float, frames: dict[str, Frame | None], joints: tuple[np.ndarray, float] | None) -> bool:
        """Start a job on the newest inputs (frames per camera, the model's order; joint positions in model
        order and their stamp) when one is due and they may be used; True if one was started (its frames are
        then marked used)."""
        with self._lock:
            if not self.active or self.stopped or not self.goal or self._request_timeout is None:
                return False
            request = self._requests.due(now, self._request_timeout)
            if request is None:
                return False
            goal, epoch = self.goal, self._epoch
        if self._worker.busy:
            return False
        if any(f is not None and f.error for f in frames.values()):
            return False  # reported when the frame arrived (or failed to decode)
        if not self._diagnostics.faults.is_healthy("joint_states"):
            return False
        if not self.inputs_fresh(now, frames, joints):
            return False
        # fresh: every frame and the joint state are there
        first = next(iter(frames.values()))
        if first.used:
            return False  # one chunk per observation: wait for the next frame
        job = Job(request, frames, joints[0].copy(), goal, epoch, first.stamp, now)
        if not self._worker.submit(job):
            return False
        for frame in frames.values():
            frame.used = True
        return True


def check_prediction(prediction: Any, meta: Any) -> np.ndarray:
    """The positions of an engine's ChunkPrediction, after checking its shape, joints, values and dt against the
    model's metadata (InputError naming what is wrong)."""
    positions = np.asarray(prediction.positions, dtype=np.float64)
    expected = (meta.chunk_length, len(meta.joint_names))
    if positions.shape != expected:
        raise InputError(f"engine returned a chunk of shape {list(positions.shape)}, expected {list(expected)}")
    if tuple(prediction.joint_names) != meta.joint_names:
        raise InputError(
            f"engine returned joints {list(prediction.joint_names)}, expected {list(meta.joint_names)}"
        )
    if not np.all(np.isfinite(positions)):
        raise InputError("engine returned a chunk with NaN or infinite positions")
    if not (math.isfinite(prediction.dt) and prediction.dt > 0):
        raise InputError(f"engine returned dt {prediction.dt!r}")
    return positions


def chunk_message(prediction: Any, meta: Any, margin: float, robot_joints: Sequence[str],
                  stamp: Any) -> tuple[Any, int]:
    """(the JointTrajectory of a checked prediction, confined to the model's envelope plus ``margin``, with
    header ``stamp``; how many positions the envelope changed)."""
    positions, confined = confine(check_prediction(prediction, meta), meta.envelope, margin)
    return prediction_to_trajectory(positions, robot_joints, prediction.dt, stamp), confined


def latency_stages(job: Job, prediction: Any, marks: tuple[float, float, float, float]) -> dict[str, float]:
    """The stages (ms) of one chunk; ``marks`` = perf_counter s at the job's start, after conversion, after the
    engine (and the chunk's checks), after publishing."""
    t0, t1, t2, t3 = marks
    engine_ms = dict(prediction.timings_ms)
    preprocess = float(engine_ms.get("preprocess", 0.0))
    postprocess = float(engine_ms.get("postprocess", 0.0))
    total = float(engine_ms.get("total", (t2 - t1) * 1e3))
    first = job.first
    return {
        "transport": (first.received - first.stamp) * 1e3,
        "wait": (job.submitted - first.received) * 1e3,
        "conversion": (t1 - t0) * 1e3,
        "preprocessing": preprocess,
        "engine": max(0.0, total - preprocess - postprocess),
        "postprocessing": postprocess + max(0.0, (t2 - t1) * 1e3 - total),
        "publish": (t3 - t2) * 1e3,
    }


class LatencyAccount:
    """The stages of the recent chunks, the iterations and halting reason of the last one, and the optional
    profile file (one JSON line per chunk)."""

    def __init__(self) -> None:
        self._timings: dict[str, deque[float]] = {}
        self._last: tuple[int, str] = (0, "")
        self._profile: TextIO | None = None

    def open_profile(self, path: str) -> None:
        self._profile = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close_profile

    def close_profile(self) -> None:
        if self._profile is not None:
            self._profile.close()
            self._profile = None

    def add(self, job: Job, prediction: Any, marks: tuple[float, float, float, float], published_at: float) -> None:
        """Account one published chunk (``published_at``: the node's clock, s)."""
        stages = latency_stages(job, prediction, marks)
        for stage, ms in stages.items():
            self._timings.setdefault(stage, deque(maxlen=LATENCY_SAMPLES)).append(ms)
        self._last = (int(prediction.iterations), str(prediction.halt_reason))
        if self._profile is not None:
            record = {"stamp": job.stamp, "request": job.request, "published": published_at,
                      "iterations": int(prediction.iterations), **{f"{k}_ms": v for k, v in stages.items()}}
            self._profile.write(json.dumps(record) + "\n")

    def values(self) -> dict[str, object]:
        """``latency <stage> ms (median|last)``, ``iterations k`` and ``halting reason`` for /diagnostics."""
        values: dict[str, object] = {}
        for stage, samples in list(self._timings.items()):
            recent = list(samples)
            if recent:
                values[f"latency {stage} ms (median)"] = float(np.median(recent))
                values[f"latency {stage} ms (last)"] = recent[-1]
        values["iterations k"], values["halting reason"] = self._last
        return values


class AddedDelay:
    """The ``added_delay`` test setting: hold a chunk back ``delay`` +- ``jitter`` s of ``clock`` (uniform draws
    from a fixed seed), returning early once ``cancel`` is set."""

    def __init__(self, clock: Callable[[], float], cancel: threading.Event) -> None:
        self._clock = clock
        self._cancel = cancel
        self._rng = random.Random(0)

    def wait(self, delay: float, jitter: float) -> None:
        until = self._clock() + max(0.0, delay + self._rng.uniform(-jitter, jitter))
        while (left := until - self._clock()) > 0.0:
            if self._cancel.wait(min(left, 0.005)):
                return
