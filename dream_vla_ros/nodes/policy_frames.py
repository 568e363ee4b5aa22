"""Camera frames of the policy node (ROS-free: messages are read by attribute): checked on arrival, compressed
ones decoded on a thread of their own, the newest frame of each camera kept.

Each frame's stamp and size are checked when it arrives (docs/input_validation.md, ``conversions.py``); a
compressed frame is bounded by its encoded size and the size its header declares, then the decoder thread
decodes the newest one of each camera (older undecoded ones are skipped). Only checked, decoded frames are
kept. The newest frame counts, good or bad: a bad one blocks inference and is reported on the diagnostics
under ``camera <name>`` (once per cause) until a good one replaces it, which clears the report. A good frame
of the first camera wakes the caller (a chunk request may be waiting for it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.nodes.conversions import (
    check_compressed,
    check_image,
    checked_stamp,
    compressed_to_rgb,
    image_to_rgb,
)
from dream_vla_ros.nodes.health import RateMeter, cause_key
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig
from dream_vla_ros.nodes.worker import SingleWorker


@dataclass
class Frame:
    """One camera message as received: its stamp and arrival time (s, the node's clock)."""

    msg: Any
    stamp: float
    received: float
    compressed: bool
    error: str = ""  # why the frame cannot be used ("" = not known to be bad)
    used: bool = False
    rgb: np.ndarray | None = None  # the decoded pixels of a compressed frame


class FrameIntake:
    """The newest frame per camera, checked (and decoded) before it is kept (thread-safe).

    ``diagnostics`` is the node's :class:`~dream_vla_ros.nodes.diagnostics.Diagnostics` (``report``, ``clear``,
    ``faults``); ``clock`` the node's time in s; ``on_first_frame`` is called after a good frame of the first
    camera is kept; ``on_error`` gets an exception that escaped the decoder thread.
    """

    def __init__(self, diagnostics: Any, clock: Callable[[], float], on_first_frame: Callable[[], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self._diagnostics = diagnostics
        self._clock = clock
        self._on_first_frame = on_first_frame
        self._lock = threading.Lock()
        self._config: PolicyNodeConfig | None = None
        self.cameras: tuple[str, ...] = ()
        self._frames: dict[str, Frame] = {}
        self._undecoded: dict[str, Frame] = {}  # the newest compressed frame per camera, waiting for the decoder
        self.rates: dict[str, RateMeter] = {}  # per camera slot (``camera <name>``)
        self.counts = {"frames_received": 0, "frames_rejected": 0, "frames_dropped": 0}
        self._decoder = SingleWorker(self._decode_pending, on_error, name="decode")

    def configure(self, cameras: tuple[str, ...], config: PolicyNodeConfig) -> None:
        """Take frames of ``cameras`` (the model's order), checked against ``config``; forget earlier frames."""
        with self._lock:
            self.cameras, self._config = cameras, config
            self._frames, self._undecoded = {}, {}
        for camera in cameras:
            self.rates[f"camera {camera}"] = RateMeter()

    def release(self) -> None:
        """Take no more frames and forget the kept ones."""
        with self._lock:
            self._config = None
            self._frames, self._undecoded = {}, {}

    def close(self) -> None:
        self._decoder.close(timeout=2.0)

    def snapshot(self) -> dict[str, Frame | None]:
        """The newest frame of each camera (None: none yet), in the cameras' order."""
        with self._lock:
            return {c: self._frames.get(c) for c in self.cameras}

    def newest(self) -> dict[str, Frame]:
        """The newest frame of each camera that has one."""
        with self._lock:
            return dict(self._frames)

    def image_callback(self, camera: str, compressed: bool) -> Callable[[Any], None]:
        """The subscription callback of ``camera`` (an Image, or a CompressedImage when ``compressed``)."""
        slot = f"camera {camera}"
        name = f"camera {camera!r}"

        def on_image(msg: Any) -> None:
            now = self._clock()
            self.rates[slot].tick(now)
            config = self._config
            if config is None:
                return
            self.counts["frames_received"] += 1
            stamp = 0.0
            try:
                stamp = checked_stamp(msg.header.stamp, name)
                if compressed:  # bounded before any decoding; the decoder thread decodes the newest one
                    check_compressed(msg, name, config.expected_image_size, config.compressed_limits)
                else:
                    check_image(msg, name, config.expected_image_size)
            except InputError as exc:
                self._keep(camera, Frame(msg, stamp, now, compressed, str(exc)))
                return
            frame = Frame(msg, stamp, now, compressed)
            if compressed:
                with self._lock:
                    self._undecoded[camera] = frame
                self._decoder.submit(camera)  # if busy, the running decode loop takes this frame next
                return
            self._keep(camera, frame)

        return on_image

    def images(self, frames: Mapping[str, Frame]) -> dict[str, np.ndarray] | None:
        """The RGB pixels of ``frames`` (one observation); None after marking and reporting the first frame that
        cannot be converted."""
        config = self._config
        expected = config.expected_image_size if config else None
        images = {}
        for camera, frame in frames.items():
            try:
                images[camera] = _pixels(camera, frame, expected)
            except InputError as exc:
                frame.error = str(exc)
                self._diagnostics.report(f"camera {camera}", cause_key(str(exc)), str(exc))
                return None
        return images

    def _keep(self, camera: str, frame: Frame) -> None:
        """Make ``frame`` the newest of ``camera``. The newest frame counts, good or bad: a bad one blocks
        inference (reported now) until a good one replaces it (which clears the report)."""
        slot = f"camera {camera}"
        with self._lock:
            previous = self._frames.get(camera)
            self._frames[camera] = frame
        if previous is not None and not previous.used and not previous.error:
            self.counts["frames_dropped"] += 1
        if frame.error:
            self.counts["frames_rejected"] += 1
            self._diagnostics.report(slot, cause_key(frame.error), frame.error)
            return
        if self._diagnostics.faults.active(slot) is not None:
            self._diagnostics.clear(slot)
        if camera == self.cameras[0]:
            self._on_first_frame()

    def _decode_pending(self, _camera: str) -> None:
        """Decoder thread: decode the newest undecoded frame of each camera until none is left."""
        while True:
            with self._lock:
                config = self._config
                if not self._undecoded or config is None:
                    return
                camera = next(iter(self._undecoded))
                frame = self._undecoded.pop(camera)
            try:
                frame.rgb = compressed_to_rgb(frame.msg, f"camera {camera!r}", config.expected_image_size,
                                              config.compressed_limits)
            except InputError as exc:
                frame.error = str(exc)
            self._keep(camera, frame)


def _pixels(camera: str, frame: Frame, expected: tuple[int, int] | None) -> np.ndarray:
    name = f"camera {camera!r}"
    if frame.compressed:
        if frame.rgb is None:
            raise InputError(f"{name}: compressed frame not decoded")
        return frame.rgb
    return image_to_rgb(frame.msg, name, expected)
