"""One background thread that runs one job at a time (ROS-free).

The policy node hands inference jobs to it so executor callbacks never wait for the model: :meth:`submit`
returns False at once when a job is still running (the caller drops the request; the executor asks again).
An exception inside a job goes to ``on_error`` and never ends the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class SingleWorker:
    def __init__(self, run: Callable[[Any], None], on_error: Callable[[BaseException], None], name: str = "worker"):
        self._run = run
        self._on_error = on_error
        self._condition = threading.Condition()
        self._job: Any = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._condition:
            return self._busy

    def submit(self, job: Any) -> bool:
        """Start ``job`` unless one is running (or the worker is closed); True if it was accepted."""
        with self._condition:
            if self._busy or self._closed:
                return False
            self._busy = True
            self._job = job
            self._condition.notify()
            return True

    def _loop(self) -> None:
        while True:
            with self._condition:
                while self._job is None and not self._closed:
                    self._condition.wait()
                if self._job is None:
                    return
                job, self._job = self._job, None
            try:
                self._run(job)
            except BaseException as exc:  # noqa: BLE001 - the worker outlives any job
                self._on_error(exc)
            finally:
                with self._condition:
                    self._busy = False

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting jobs and wait up to ``timeout`` s for the one accepted last to finish."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
