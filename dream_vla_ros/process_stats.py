"""CPU time and resident memory of named processes (and their children): benchmarks of the node graph and
the evaluation's pacing (ROS-free).

Read from ``/proc/<pid>/stat`` (utime + stime of every thread, in clock ticks) and ``/proc/<pid>/status``
(VmRSS), so it needs no extra package; when ``psutil`` is installed it is used instead (the same figures, and
it works beyond Linux). A process's children (a node that re-execs or forks) count towards it.

CPU share is in per cent of one core: 100 = one core busy all the time, 200 = two.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

try:  # optional: the same figures where /proc is not available
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Sample:
    """One reading of one process tree: wall time (monotonic s), CPU seconds used so far, resident kB."""

    wall: float
    cpu_seconds: float
    rss_kb: int


def cpu_percent(start: Sample, end: Sample) -> float:
    """Average CPU share between two samples of one process, in per cent of one core (nan without time)."""
    elapsed = end.wall - start.wall
    if elapsed <= 0.0:
        return float("nan")
    return 100.0 * (end.cpu_seconds - start.cpu_seconds) / elapsed


def growth_percent(start: Sample, end: Sample) -> float:
    """Resident memory growth from ``start`` to ``end`` in per cent of ``start`` (nan without a start)."""
    return 100.0 * (end.rss_kb - start.rss_kb) / start.rss_kb if start.rss_kb else float("nan")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (by the parent field of /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first), or [] once the process is gone."""
    return _read_stat(Path(f"/proc/{pid}/stat"))[1]


def _read_stat(path: Path) -> tuple[str, list[str]]:
    """(command name, the fields after it) of a /proc stat file, or ("", []) once it is gone."""
    try:
        text = path.read_text()
    except OSError:
        return "", []
    return text[text.find("(") + 1:text.rfind(")")], text[text.rfind(")") + 2:].split()


def _cpu_seconds(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat)


def _proc_sample(pid: int) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for member in (pid, *_children(pid)):
        fields = _stat_fields(member)
        if not fields:
            continue
        cpu += _cpu_seconds(fields)
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                    break
        except OSError:
            continue
    return cpu, rss


def _psutil_sample(pid: int) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return cpu, rss
    for member in members:
        try:
            times = member.cpu_times()
            cpu += times.user + times.system
            rss += member.memory_info().rss // 1024
        except psutil.Error:
            continue
    return cpu, rss


def sample(pid: int) -> Sample:
    """CPU seconds and resident kB of ``pid`` and its descendants now (zeros once it has exited)."""
    wall = time.monotonic()
    cpu, rss = _psutil_sample(pid) if psutil is not None else _proc_sample(pid)
    return Sample(wall, cpu, rss)


def thread_cpu_seconds(pid: int) -> dict[tuple[int, str], float]:
    """CPU seconds each thread of ``pid`` used so far: ``(thread id, thread name) -> utime + stime`` (from
    /proc; empty where it cannot be read)."""
    out: dict[tuple[int, str], float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        name, fields = _read_stat(task / "stat")
        if fields:
            out[(int(task.name), name)] = _cpu_seconds(fields)
    return out


def sample_all(pids: Mapping[str, int]) -> dict[str, Sample]:
    """:func:`sample` of every named process."""
    return {name: sample(pid) for name, pid in pids.items()}
