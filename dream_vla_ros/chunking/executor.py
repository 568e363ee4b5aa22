"""ChunkExecutor: action chunks in, smooth and limit-safe controller windows out (pure numpy, no clock).

How the node drives it (all times are float seconds on ONE clock the caller supplies, e.g. ROS time; chunk
stamps are observation stamps on that clock; the executor never reads a clock)::

    executor = ChunkExecutor(config)
    executor.reset(now, measured_positions)      # on activation: hold where the arm is, no jump
    # policy side, whenever executor.wants_chunk(now) and no inference is in flight:
    result = executor.add_chunk(ActionChunk(names, t0=obs_stamp, dt=dt, positions=p), now)
    # control timer, every config.control_period:
    window = executor.tick(now)                  # -> JointTrajectory (see window.py for stamps, JTC setup)
    # or, on a tick whose window would not be sent: executor.advance(now); later executor.window(now)
    executor.stop(now); executor.resume(now)     # operator stop; motion resumes with a fresh chunk only

Inside, the executor keeps a commanded state (positions, velocities) on a grid of control periods that
starts at ``reset``; it advances by one limited constant-acceleration step per period (``limits.py``),
following the reference of the timeline (``timeline.py``, merged by ``merge.py``) or braking to rest when
there is none. A *plan* continues that state a window ahead; windows are cut from it, so consecutive windows
agree, and a chunk arrival re-plans from the commanded state at that moment.

The measured state is used only by ``reset``: afterwards the executor plans from its own commanded state,
which is what a controller interpolating from its desired state executes (see window.py). If the arm stops
following (collision, e-stop, controller switch), the node calls ``reset`` again with the measured positions.
``now`` must not go backwards between calls (a late call does not undo committed steps).

Modes: ``idle`` (before reset; tick returns None), ``holding`` (at rest, no reference: after reset, after
a stop or starvation came to rest), ``running`` (following chunks), ``stopping`` (braking after stop()),
``starved`` (braking because the queue ran dry). After a starvation the executor follows chunks again only once
the queue reaches ``starvation_recovery`` seconds past now (hysteresis: chunks that each arrive barely in
time would otherwise move the arm in bursts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dream_vla_ros.chunking import chunk as reasons
from dream_vla_ros.chunking.chunk import ActionChunk, RejectedChunkError, conform
from dream_vla_ros.chunking.limits import LIMIT_KINDS, JointLimits, LimitedIntegrator
from dream_vla_ros.chunking.merge import MergeConfig
from dream_vla_ros.chunking.plan import Plan
from dream_vla_ros.chunking.stats import TARGET_POSITION, ExecutorStats
from dream_vla_ros.chunking.timeline import Timeline
from dream_vla_ros.chunking.tracking import braking_velocity, tracking_velocity
from dream_vla_ros.chunking.window import Window, WindowConfig, braking_tail
from dream_vla_ros.configuration import require
from dream_vla_ros.errors import InputError

IDLE, HOLDING, RUNNING, STOPPING, STARVED = "idle", "holding", "running", "stopping", "starved"
MODES = (IDLE, HOLDING, RUNNING, STOPPING, STARVED)
_GRID_TOLERANCE = 1e-9  # in control periods: a time this close below a grid point counts as on it


@dataclass(frozen=True)
class ExecutorConfig:
    """Everything the executor needs; loadable from YAML with ``configuration.from_mapping``.

    joint_names: the joints, in the order of every array the executor returns (required).
    limits: per-joint limits, tuples aligned with joint_names (or one value for all joints).
    control_period: seconds between ticks (the grid of the commanded motion).
    merge: how a new chunk combines with the queued one (rule and its parameters).
    window: the trajectory sent to the controller each tick and its stamp policy.
    low_water_margin: seconds of queued motion, beyond the expected chunk delay, below which
        wants_chunk asks for the next chunk.
    initial_latency: seconds assumed for the chunk delay before any was measured.
    latency_samples: number of recent chunk delays the estimate uses.
    latency_quantile: the delay estimate is this quantile of the recent delays (robust to one fast chunk).
    catch_up_fraction: share of the acceleration limit spent closing a tracking error (the rest stays for
        the reference's own acceleration).
    brake_fraction: share of the acceleration limit used to stop (stop() and starvation).
    max_clock_skew: seconds a chunk stamp may lie in the future before it is rejected (another clock).
    starvation_recovery: seconds of queued motion past now that chunks must reach after a starvation before
        the executor follows them again (0 = at once).
    """

    joint_names: tuple[str, ...] = ()
    limits: JointLimits = field(default_factory=JointLimits)
    control_period: float = 0.01
    merge: MergeConfig = field(default_factory=MergeConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    low_water_margin: float = 0.1
    initial_latency: float = 0.2
    latency_samples: int = 20
    latency_quantile: float = 0.9
    catch_up_fraction: float = 0.5
    brake_fraction: float = 1.0
    max_clock_skew: float = 0.05
    starvation_recovery: float = 0.05

    def __post_init__(self) -> None:
        names = self.joint_names
        require(len(names) > 0, "joint_names", "at least one joint is required")
        require(all(isinstance(n, str) and n for n in names), "joint_names", f"must be non-empty strings: {names}")
        require(len(set(names)) == len(names), "joint_names", f"names repeat: {list(names)}")
        self.limits.resolve(len(names))
        require(0 < self.control_period <= 1, "control_period", f"must be in (0, 1] s, got {self.control_period}")
        for key in ("low_water_margin", "initial_latency", "max_clock_skew", "starvation_recovery"):
            value = getattr(self, key)
            require(math.isfinite(value) and value >= 0, key, f"must be a finite number of seconds >= 0, got {value}")
        require(self.latency_samples >= 1, "latency_samples", f"must be >= 1, got {self.latency_samples}")
        require(0 <= self.latency_quantile <= 1, "latency_quantile", f"must be in [0, 1], got {self.latency_quantile}")
        for key in ("catch_up_fraction", "brake_fraction"):
            value = getattr(self, key)
            require(0 < value <= 1, key, f"must be in (0, 1], got {value}")


@dataclass(frozen=True)
class MergeResult:
    """What add_chunk did with a chunk.

    accepted: merged into the timeline. reason: "accepted" or a rejection reason (chunk.REJECT_REASONS).
    detail: a human-readable line naming what is wrong ("" when accepted).
    dropped_points: points already in the past on arrival (not used). delay: arrival time - observation
    stamp in seconds (NaN if the chunk was rejected before its stamp could be trusted).
    overlap_points: kept points that overlapped the queue (merged by the rule).
    buffered_until: time of the last queued point after the call (-inf when nothing is queued).
    """

    accepted: bool
    reason: str
    detail: str = ""
    dropped_points: int = 0
    delay: float = math.nan
    overlap_points: int = 0
    buffered_until: float = -math.inf


@dataclass(frozen=True, eq=False)
class CommandedState:
    """The commanded state at a grid time: what the controller is executing now."""

    time: float
    positions: np.ndarray
    velocities: np.ndarray


class ChunkExecutor:
    """Turns a stream of action chunks into controller windows that never violate the joint limits.

    Not thread-safe: call it from one thread (or under one lock).
    """

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self._names = tuple(config.joint_names)
        self._limits = config.limits.resolve(len(self._names))
        self._h = config.control_period
        self._integrator = LimitedIntegrator(self._limits, self._h)
        self._catch_up = config.catch_up_fraction * self._limits.max_acceleration
        self._brake = config.brake_fraction * self._limits.max_acceleration
        self._timeline = Timeline(len(self._names))
        self._stats = ExecutorStats(delay_window=config.latency_samples)
        self._mode = IDLE
        self._stopped = False
        self._origin = 0.0
        self._k = 0
        self._q = np.zeros(len(self._names))
        self._v = np.zeros(len(self._names))
        self._plan = Plan(len(self._names))
        self._epoch = -math.inf
        self._epoch_reason = reasons.PREDATES_RESET
        self._newest_t0 = -math.inf
        self._starved = False  # latched by a starvation until the queue reaches starvation_recovery

    # ----------------------------------------------------------------------------------------- queries
    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def mode(self) -> str:
        """One of ``idle``, ``holding``, ``running``, ``stopping``, ``starved``."""
        return self._mode

    @property
    def recovering(self) -> bool:
        """A starvation is latched: queued chunks are not followed until they reach starvation_recovery."""
        return self._starved

    @property
    def stopped(self) -> bool:
        """stop() is latched: chunks are rejected until resume()."""
        return self._stopped

    @property
    def stats(self) -> ExecutorStats:
        """Live counters (read them, do not change them)."""
        return self._stats

    @property
    def timeline(self) -> Timeline:
        """The queued reference (read it, do not change it)."""
        return self._timeline

    @property
    def state(self) -> CommandedState | None:
        """The commanded state at the last grid time reached; None before reset."""
        if self._mode == IDLE:
            return None
        return CommandedState(self._time(self._k), self._q.copy(), self._v.copy())

    @property
    def latency_estimate(self) -> float:
        """Expected chunk delay in seconds: a high quantile of the recent ones (initial_latency before any)."""
        if not len(self._stats.delays):
            return self.config.initial_latency
        return self._stats.delays.quantile(self.config.latency_quantile)

    def wants_chunk(self, now: float) -> bool:
        """Should the policy start an inference now? True while the queued motion ends within the expected
        chunk delay plus ``low_water_margin`` of ``now`` (so the next chunk lands before the queue runs dry).
        False before reset and while stopped. It stays True until a chunk arrives: the caller runs one
        inference at a time."""
        if self._mode == IDLE or self._stopped:
            return False
        return self._timeline.end - now <= self.latency_estimate + self.config.low_water_margin

    # ----------------------------------------------------------------------------------------- commands
    def reset(self, now: float, measured_positions: Sequence[float], joint_names: Sequence[str] | None = None) -> None:
        """Hold at the measured positions from ``now`` on (activation); clears the queue and a latched stop.

        ``joint_names`` gives the order of ``measured_positions`` if it is not the configured one (it may
        hold more joints, as /joint_states does). Raises InputError for missing joints, NaN, or a position
        outside the limits (the executor cannot hold there without violating them).
        """
        if not math.isfinite(now):
            raise InputError(f"reset: now must be a finite time, got {now}")
        values = np.asarray(measured_positions, dtype=float).reshape(-1)
        if joint_names is not None:
            names = list(joint_names)
            missing = [n for n in self._names if n not in names]
            if missing or len(names) != values.size:
                raise InputError(f"reset: measured state lacks joints {missing} or has {values.size} values")
            values = values[[names.index(n) for n in self._names]]
        if values.size != len(self._names):
            raise InputError(f"reset: expected {len(self._names)} positions, got {values.size}")
        if not np.isfinite(values).all():
            raise InputError("reset: NaN or inf in the measured positions")
        outside = [n for n, ok in zip(self._names, self._limits.contains(values), strict=True) if not ok]
        if outside:
            raise InputError(f"reset: joints {outside} are outside their position limits")
        self._origin, self._k = float(now), 0
        self._q, self._v = values.copy(), np.zeros_like(values)
        self._timeline.clear()
        self._plan.clear()
        self._stopped = False
        self._epoch, self._epoch_reason = float(now), reasons.PREDATES_RESET
        self._newest_t0 = -math.inf
        self._starved = False
        self._mode = HOLDING

    def add_chunk(self, chunk: ActionChunk, now: float) -> MergeResult:
        """Merge a chunk into the timeline, or reject it whole with a counted reason."""
        self._stats.chunks_received += 1
        delay = math.nan
        try:
            if self._mode == IDLE:
                raise RejectedChunkError(reasons.NOT_INITIALISED, "reset() has not been called")
            if self._stopped:
                raise RejectedChunkError(reasons.STOPPED, "stop() is latched; resume() first")
            t0, dt, positions, velocities = conform(chunk, self._names)
            if t0 > now + self.config.max_clock_skew:
                raise RejectedChunkError(reasons.FROM_FUTURE, f"stamp {t0:.3f} s is later than now {now:.3f} s")
            if t0 < self._epoch:
                raise RejectedChunkError(
                    self._epoch_reason, f"observation {t0:.3f} s is older than {self._epoch:.3f} s"
                )
            if t0 <= self._newest_t0:
                raise RejectedChunkError(
                    reasons.OUT_OF_ORDER, f"stamp {t0:.3f} s is not newer than the queued {self._newest_t0:.3f} s"
                )
            delay = now - t0
            self._stats.delays.add(delay)
            times = t0 + dt * np.arange(1, positions.shape[0] + 1)
            first = int(np.searchsorted(times, now, side="right"))
            if first == len(times):
                raise RejectedChunkError(reasons.STALE, f"all points end by {times[-1]:.3f} s, before now {now:.3f} s")
        except RejectedChunkError as rejection:
            self._stats.reject(rejection.reason)
            return MergeResult(
                False, rejection.reason, rejection.detail, delay=delay, buffered_until=self._timeline.end
            )

        self._advance(now)
        clipped = np.clip(positions, self._limits.position_min, self._limits.position_max)
        if not np.array_equal(clipped, positions):
            self._stats.limit_clamps[TARGET_POSITION] += 1
        if velocities is None:
            velocities = np.gradient(clipped, times, axis=0) if len(times) > 1 else np.zeros_like(clipped)
        overlap = self._timeline.merge(
            times[first:], clipped[first:], velocities[first:], self.config.merge, self._time(self._k)
        )
        self._newest_t0 = t0
        self._plan.clear()
        if self._starved and self._timeline.end - now >= self.config.starvation_recovery:
            self._starved = False
        if not self._starved:
            self._mode = RUNNING
        stats = self._stats
        stats.chunks_accepted += 1
        stats.dropped_points += first
        if overlap and self.config.merge.rule != "replace":
            stats.blends += 1
            stats.blended_points += overlap
        return MergeResult(True, "accepted", "", first, delay, overlap, self._timeline.end)

    def tick(self, now: float) -> Window | None:
        """Advance to ``now`` and return the window to send (None before reset: nothing may be sent)."""
        self.advance(now)
        return self.window(now)

    def advance(self, now: float) -> None:
        """One control tick without a window: commit the plan up to ``now`` (for a tick whose window would not
        be sent; the windows of later ticks are the same as if every tick had built one)."""
        if self._mode == IDLE:
            return
        self._stats.ticks += 1
        self._advance(now)

    def window(self, now: float) -> Window | None:
        """The window to send at ``now`` (call :meth:`advance` for the tick first; None before reset)."""
        if self._mode == IDLE:
            return None
        self._advance(now)
        window = self.config.window
        start = now + window.lead if window.stamp == "now_plus_lead" else now
        base = max(self._grid_index(start), self._k)
        step = window.spacing_ticks
        first = base - self._k + step - 1  # plan index i holds grid index k + i + 1
        offsets = np.arange(first, first + step * window.points, step)
        self._extend_plan(int(offsets[-1]) + 1)
        positions, velocities = self._plan.rows(offsets)
        times = self._origin + (self._k + 1 + offsets) * self._h - start
        tail_times, tail_q, tail_v = braking_tail(positions[-1], velocities[-1], self._limits.max_acceleration)
        if not tail_times.size:
            velocities[-1] = 0.0  # below the tail's resolution: at rest up to rounding
        return Window(
            joint_names=self._names,
            positions=np.concatenate([positions, tail_q]),
            velocities=np.concatenate([velocities, tail_v]),
            time_from_start=np.concatenate([times, times[-1] + tail_times]),
            stamp=start if window.stamp == "now_plus_lead" else 0.0,
            start_time=start,
            planned_points=len(offsets),
            mode=self._mode,
        )

    def stop(self, now: float) -> None:
        """Brake to a hold at once (within the acceleration limits) and reject chunks until resume()."""
        self._stats.stops += 1
        self._stopped = True
        if self._mode == IDLE:
            return
        self._advance(now)
        self._timeline.clear()
        self._plan.clear()
        self._mode = STOPPING if np.any(self._v != 0) else HOLDING

    def resume(self, now: float) -> None:
        """Accept chunks again, but only from observations taken at or after ``now`` (a fresh chunk)."""
        if self._stopped:
            self._stopped = False
            self._epoch, self._epoch_reason = float(now), reasons.PREDATES_RESUME

    # ----------------------------------------------------------------------------------------- internals
    def _time(self, k: int) -> float:
        return self._origin + k * self._h

    def _grid_index(self, t: float) -> int:
        return math.floor((t - self._origin) / self._h + _GRID_TOLERANCE)

    def _step(self, q: np.ndarray, v: np.ndarray, k: int):
        """Plan the step from grid index k to k + 1."""
        t0, t1 = self._time(k), self._time(k + 1)
        timeline = self._timeline
        tracked = not self._stopped and not self._starved and timeline.covers(t1)
        if tracked:
            ref_q, ref_v = timeline.sample(t0)
            _, ref_v_next = timeline.sample(t1)
            wanted = tracking_velocity(q, v, ref_q, ref_v, ref_v_next, self._catch_up, self._h)
        else:
            wanted = braking_velocity(v, self._brake, self._h)
        q1, v1, clamped = self._integrator.step(q, v, wanted)
        return q1, v1, clamped, tracked

    def _extend_plan(self, length: int) -> None:
        while len(self._plan) < length:
            q, v = self._plan.last() if len(self._plan) else (self._q, self._v)
            self._plan.append(*self._step(q, v, self._k + len(self._plan)))

    def _advance(self, now: float) -> None:
        """Commit the planned steps up to the last grid time at or before ``now``."""
        target = self._grid_index(now)
        while self._k < target:
            if not len(self._plan) and self._mode == HOLDING and not self._timeline.covers(self._time(self._k + 1)):
                self._k = target  # at rest with nothing to follow: every step is the same hold
                break
            self._extend_plan(1)
            q, v, clamped, tracked = self._plan.pop()
            self._commit(q, v, clamped, tracked)
        self._timeline.prune(self._time(self._k))

    def _commit(self, q: np.ndarray, v: np.ndarray, clamped: tuple[bool, bool, bool], tracked: bool) -> None:
        self._k += 1
        self._q, self._v = q, v
        for kind, hit in zip(LIMIT_KINDS, clamped, strict=True):
            if hit:
                self._stats.limit_clamps[kind] += 1
        if tracked:
            self._mode = RUNNING
            return
        if self._mode == RUNNING and not self._stopped:
            self._stats.starvation_events += 1
            self._starved = self.config.starvation_recovery > 0.0
            self._mode = STARVED
        if not np.any(v != 0):
            self._mode = HOLDING
        elif self._stopped:
            self._mode = STOPPING
