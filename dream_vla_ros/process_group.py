"""Start a set of node processes, stream their output with a name prefix, and always stop them cleanly.

Used by ``dream-vla-ros up`` (a launch substitute where ``ros2 launch`` is not installed), by evaluation and
by the ROS test harness. Each process gets its own process group, so stopping reaches its children too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

from dream_vla_ros.bringup import Bringup

# Variables that must not leak into a child with a different environment (see ENVIRONMENT.md: the ROS
# wheels' bootstrap re-execs the interpreter once and marks that in the environment).
_NON_INHERITABLE = ("_ROS_WHEELS_BOOTSTRAP_COMPLETE",)


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment for a child process, without bootstrap markers, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _NON_INHERITABLE}
    env.update(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.popen.poll() is None


class ProcessGroup:
    """A set of named child processes; a context manager that stops them all on exit."""

    def __init__(self, echo: IO[str] | None = sys.stdout, keep_lines: int = 2000) -> None:
        self._echo = echo
        self._keep = keep_lines
        self._lock = threading.Lock()
        self.processes: dict[str, ManagedProcess] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        popen = subprocess.Popen(
            argv,
            env=child_environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        proc = ManagedProcess(name, popen)
        self.processes[name] = proc
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        return proc

    def _pump(self, proc: ManagedProcess) -> None:
        assert proc.popen.stdout is not None
        for line in proc.popen.stdout:
            line = line.rstrip("\n")
            with self._lock:
                proc.lines.append(line)
                del proc.lines[: -self._keep]
                if self._echo is not None:
                    print(f"[{proc.name}] {line}", file=self._echo, flush=True)

    def output(self, name: str) -> str:
        with self._lock:
            return "\n".join(self.processes[name].lines)

    def wait_for_line(self, name: str, needle: str, timeout: float) -> bool:
        """Poll the output of ``name`` until a line contains ``needle`` (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output(name):
                return True
            if not self.processes[name].running:
                return needle in self.output(name)
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 5.0) -> dict[str, int | None]:
        """SIGINT every process group, then SIGTERM, then SIGKILL; return exit codes."""
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            alive = [p for p in self.processes.values() if p.running]
            for proc in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, sig)
            deadline = time.monotonic() + wait
            for proc in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(max(0.0, deadline - time.monotonic()))
        return {name: p.popen.poll() for name, p in self.processes.items()}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def node_argv(module: str, ros_args: list[str]) -> list[str]:
    """Command line that runs a node module with the current interpreter."""
    return [sys.executable, "-m", module, *ros_args]


def start_bringup(group: ProcessGroup, bringup: Bringup, env: dict[str, str] | None = None) -> None:
    """Start every node of ``bringup`` in ``group``."""
    for node in bringup.nodes:
        group.start(node.name, node_argv(node.module, node.ros_args()), {**bringup.environment, **(env or {})})
