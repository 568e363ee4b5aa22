"""How fast the simulated closed loop may run on this host (ROS-free).

Evaluation runs the node graph on simulation time: the simulated arm publishes ``/clock`` and every node
uses it, so a host that is slower than real time stretches time for all nodes alike instead of skipping
physics (a *lag event*: the arm fell more than ``max_lag`` behind its schedule). The pace is the real-time
factor ``r`` (simulated seconds per wall second). With pacing ``auto`` it is chosen from measured headroom:

- after each episode the CPU time of the graph's processes (and of the simulated arm alone) per simulated
  second is measured from ``/proc``, with the load of everything else on the host (nice'd processes count as
  free: they yield to the graph);
- ``r`` is the largest factor, at most 1, at which the graph would use at most ``target_load`` of the cores
  the rest of the host leaves free, and the simulated arm's busiest thread (its physics or its camera
  thread, with the software rasterizer's ``llvmpipe`` threads that a frame waits for) at most
  ``single_core_load`` of one core; it only ever goes down during a run (a steady pace is comparable across episodes);
- an episode with a lag event does not count: the factor drops to ``lag_backoff`` of what it was and the
  episode runs again (at most ``max_retries`` times), so an ``auto`` result has no lag events unless the
  host could not sustain even ``min_factor``.

A fixed factor (``--real-time-factor R``) and the wall-clock mode (what a robot sees: no ``/clock``, stamps
from the wall clock) never change the pace; their lag events are reported, never hidden.
"""

from __future__ import annotations

import math
import os
import platform
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dream_vla_ros.configuration import require
from dream_vla_ros.process_stats import sample, thread_cpu_seconds

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
AUTO = 0.0  # real_time_factor value that asks for automatic pacing


@dataclass(frozen=True)
class PacingConfig:
    """How the evaluation chooses its real-time factor (see the module docstring).

    real_time_factor: simulated seconds per wall second; 0 = auto (chosen from measured headroom).
    wall_clock: run on the wall clock (no /clock, no sim time), at real_time_factor 1 or below.
    target_load: share of the cores left free by the rest of the host that the graph may use (auto).
    single_core_load: share of one core the simulated arm's busiest thread may use (auto).
    lag_backoff: factor applied to the real-time factor after a lag event (auto).
    min_factor: the slowest pace auto pacing goes down to.
    max_retries: runs of one episode that may be discarded for lag events (auto).
    window: episodes whose measurements are pooled for the next decision.
    """

    real_time_factor: float = AUTO
    wall_clock: bool = False
    target_load: float = 0.7
    single_core_load: float = 0.8
    lag_backoff: float = 0.7
    min_factor: float = 0.05
    max_retries: int = 3
    window: int = 3

    def __post_init__(self) -> None:
        r = self.real_time_factor
        require(math.isfinite(r) and 0.0 <= r <= 100.0, "real_time_factor", f"must be in [0, 100] (0 = auto), got {r}")
        require(not self.wall_clock or 0.0 < r <= 1.0, "real_time_factor",
                "the wall-clock mode needs an explicit factor of at most 1 (--real-time-factor 1 --wall-clock)")
        for name in ("target_load", "single_core_load", "lag_backoff"):
            value = getattr(self, name)
            require(0.0 < value <= 1.0, name, f"must be in (0, 1], got {value}")
        require(0.0 < self.min_factor <= 1.0, "min_factor", f"must be in (0, 1], got {self.min_factor}")
        require(self.max_retries >= 0, "max_retries", f"must be >= 0, got {self.max_retries}")
        require(self.window >= 1, "window", f"must be >= 1, got {self.window}")

    @property
    def auto(self) -> bool:
        return self.real_time_factor == AUTO

    @property
    def mode(self) -> str:
        return "wall-clock" if self.wall_clock else ("auto" if self.auto else "fixed")

    @property
    def initial_factor(self) -> float:
        return 1.0 if self.auto else self.real_time_factor


@dataclass(frozen=True)
class LoadSample:
    """CPU use while the graph ran ``sim_s`` simulated seconds in ``wall_s`` wall seconds.

    graph_cpu_s / sim_cpu_s: CPU seconds of all graph processes / of the simulated arm's process;
    other_cpu_s: CPU seconds of everything else on the host (not nice'd).
    """

    sim_s: float
    wall_s: float
    graph_cpu_s: float
    sim_cpu_s: float
    other_cpu_s: float


def sustainable_factor(samples: Sequence[LoadSample], cores: int, config: PacingConfig) -> float:
    """The largest real-time factor (at most 1) the pooled ``samples`` say the host sustains."""
    sim_s = sum(s.sim_s for s in samples)
    wall_s = sum(s.wall_s for s in samples)
    if sim_s <= 0.0 or wall_s <= 0.0:
        return 1.0
    graph = sum(s.graph_cpu_s for s in samples) / sim_s  # cores the graph needs per unit of real-time factor
    arm = sum(s.sim_cpu_s for s in samples) / sim_s
    others = sum(s.other_cpu_s for s in samples) / wall_s  # cores busy with other work
    free = max(cores - others, 0.25 * cores)  # never plan with less than a quarter of the machine
    limits = [1.0]
    if graph > 0.0:
        limits.append(config.target_load * free / graph)
    if arm > 0.0:
        limits.append(config.single_core_load / arm)
    return max(config.min_factor, min(limits))


@dataclass(frozen=True)
class PaceDecision:
    """What to do after an episode: run it again (``retry``, it had lag events) and at which factor."""

    factor: float
    retry: bool
    reason: str = ""


class Pacer:
    """Chooses the real-time factor episode by episode (see the module docstring)."""

    def __init__(self, config: PacingConfig, cores: int) -> None:
        self.config = config
        self.cores = cores
        self.factor = config.initial_factor
        self._samples: deque[LoadSample] = deque(maxlen=config.window)

    def after_episode(self, sample: LoadSample | None, lag_events: int, attempt: int) -> PaceDecision:
        """The decision after attempt ``attempt`` (0-based) of an episode with ``lag_events`` lag events."""
        config = self.config
        if sample is not None and sample.sim_s > 0.0:
            self._samples.append(sample)
        if not config.auto:
            return PaceDecision(self.factor, False)
        measured = _floor(sustainable_factor(list(self._samples), self.cores, config))
        if lag_events > 0:
            lowered = max(config.min_factor, _floor(min(measured, self.factor * config.lag_backoff)))
            retry = attempt < config.max_retries and lowered < self.factor
            reason = (f"{lag_events} lag event(s) at real-time factor {self.factor:g}: "
                      + (f"running the episode again at {lowered:g}" if retry else "kept, flagged"))
            self.factor = lowered
            return PaceDecision(lowered, retry, reason)
        if measured < 0.9 * self.factor:
            reason = f"measured headroom: real-time factor {self.factor:g} -> {measured:g}"
            self.factor = measured
            return PaceDecision(measured, False, reason)
        return PaceDecision(self.factor, False)


def _floor(factor: float) -> float:
    """Round a factor down to two decimals (at least 0.01)."""
    return max(0.01, math.floor(factor * 100.0 + 1e-9) / 100.0)


# -- measuring, from /proc (Linux; process CPU through dream_vla_ros.process_stats) ---------------------------
def host_busy_seconds() -> float | None:
    """CPU seconds the whole host spent busy since boot, nice'd processes excluded (None without /proc)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    user, _nice, system, _idle, _iowait, irq, softirq, *rest = (int(v) for v in first[1:])
    steal = rest[0] if rest else 0
    return (user + system + irq + softirq + steal) / CLOCK_TICKS


class LoadMeter:
    """Measures a :class:`LoadSample` between :meth:`begin` and :meth:`end` for the given processes."""

    def __init__(self, graph_pids: Iterable[int], sim_pid: int | None) -> None:
        self.graph_pids = tuple(graph_pids)
        self.sim_pid = sim_pid
        self._start: tuple[float, float, float, float, dict[tuple[int, str], float]] | None = None

    def _read(self) -> tuple[float, float, float, float, dict[tuple[int, str], float]] | None:
        import time

        graph = [sample(pid) for pid in self.graph_pids]
        host = host_busy_seconds()
        if host is None or any(not s.rss_kb for s in graph):  # no /proc, or a process has ended
            return None
        sim = sum(s.cpu_seconds for pid, s in zip(self.graph_pids, graph, strict=True) if pid == self.sim_pid)
        threads = thread_cpu_seconds(self.sim_pid) if self.sim_pid is not None else {}
        return time.monotonic(), sum(s.cpu_seconds for s in graph), sim, host, threads

    def begin(self) -> None:
        self._start = self._read()

    def end(self, sim_s: float) -> LoadSample | None:
        """The sample since :meth:`begin` (None where /proc cannot be read or a process ended)."""
        now = self._read()
        if self._start is None or now is None:
            return None
        wall, graph, sim, host = (b - a for a, b in zip(self._start[:4], now[:4], strict=True))
        busiest = _busiest_chain({k: v - self._start[4].get(k, 0.0) for k, v in now[4].items()})
        return LoadSample(sim_s=sim_s, wall_s=wall, graph_cpu_s=graph, sim_cpu_s=sim if busiest is None else busiest,
                          other_cpu_s=max(0.0, host - graph))


def _busiest_chain(threads: dict[tuple[int, str], float]) -> float | None:
    """CPU seconds of the busiest thread plus the ``llvmpipe`` rasterizer threads it waits on (None: no threads)."""
    raster = sum(cpu for (_, name), cpu in threads.items() if name.startswith("llvmpipe"))
    others = [cpu for (_, name), cpu in threads.items() if not name.startswith("llvmpipe")]
    return max(others) + raster if others else None


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def host_description() -> dict[str, object]:
    """The host's CPU model and the cores available, for results files."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cores": available_cores()}
