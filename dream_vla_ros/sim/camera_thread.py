"""Camera frames rendered on a thread of their own, from a copy of the physics state at the frame's time.

On llvmpipe a frame costs many times the CPU of a physics step (mostly vertex processing of the Sawyer's
meshes; figures in docs/performance.md); rendered inside the physics loop, two 30 Hz cameras leave that loop
almost no slack to keep real time on a 2-core machine. :class:`CameraThread` takes the rendering off it: at a
frame time the physics thread copies the state MuJoCo's scene update reads (:data:`RENDER_STATE`, a cheap
copy) and steps on; the camera thread renders every camera from that copy (MuJoCo releases the GIL while it renders)
and hands the images with the frame's time to ``on_frame``. The images are those of the physics state at
that time, pixel for pixel (``test/sim/test_camera_thread.py`` compares them with rendering in place).

At most one frame is in flight: a capture while the previous frame is still rendering waits for it, so no
frame is dropped and a renderer slower than the frame rate slows the physics down (as rendering in place
would) instead of skipping frames. The renderer (and its GL context) is made and used only in the camera
thread, anew when the scene changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import mujoco
import numpy as np

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.sim.scene import make_renderer, render_camera

# What mjv_updateScene reads from MjData for scenes without tendons, skins or flexes (all MT10 scenes).
RENDER_STATE = ("qpos", "mocap_pos", "mocap_quat", "xpos", "xquat", "xmat", "geom_xpos", "geom_xmat",
                "site_xpos", "site_xmat", "cam_xpos", "cam_xmat", "light_xpos", "light_xdir")

FrameSink = Callable[[float, dict[str, np.ndarray], float], None]


class CameraThread:
    """Renders the cameras of each :meth:`capture` at ``height`` x ``width``, in order, on its own thread.

    ``on_frame(t, {camera: image}, render_ms)`` and ``on_error(exc)`` (a failed render; the frame is skipped)
    run on the camera thread.
    """

    def __init__(self, height: int, width: int, on_frame: FrameSink,
                 on_error: Callable[[BaseException], None]) -> None:
        self._size = (height, width)
        self._on_frame = on_frame
        self._on_error = on_error
        self._wake = threading.Condition()
        # time, model, state copy (None: only make the renderer), cameras; until handed on
        self._pending: tuple[float, mujoco.MjModel, mujoco.MjData | None, tuple[str, ...]] | None = None
        self._copy: tuple[mujoco.MjModel, mujoco.MjData] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cameras", daemon=True)
        self._thread.start()

    def capture(self, t: float, model: mujoco.MjModel, data: mujoco.MjData, cameras: Sequence[str]) -> None:
        """Render ``cameras`` showing the state ``data`` holds now, as the frame of time ``t`` (waits while a
        frame is in flight)."""
        with self._wake:
            if not self._wait_idle():
                return
            if self._copy is None or self._copy[0] is not model:  # a new scene
                if model.ntendon or model.nskin or model.nflex:
                    raise ConfigError("camera thread: scenes with tendons, skins or flexes are not supported")
                self._copy = (model, mujoco.MjData(model))
            state = self._copy[1]
            for name in RENDER_STATE:
                np.copyto(getattr(state, name), getattr(data, name))
            self._pending = (t, model, state, tuple(cameras))
            self._wake.notify_all()

    def prepare(self, model: mujoco.MjModel) -> None:
        """Make the renderer of ``model`` now and wait for it (a scene's first frame is then not late)."""
        with self._wake:
            if self._wait_idle():
                self._pending = (float("nan"), model, None, ())
                self._wake.notify_all()
                self._wait_idle()

    def wait_idle(self) -> None:
        """Return once every captured frame has been handed on."""
        with self._wake:
            self._wait_idle()

    def _wait_idle(self) -> bool:
        """(Under the lock.) Wait until nothing is in flight; False once closed."""
        while self._pending is not None and not self._closed:
            self._wake.wait()
        return not self._closed

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (after the frame in flight) and release its renderer."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        renderer: mujoco.Renderer | None = None
        model: mujoco.MjModel | None = None
        try:
            while True:
                with self._wake:
                    while self._pending is None and not self._closed:
                        self._wake.wait()
                    if self._pending is None:
                        return
                    t, frame_model, state, cameras = self._pending
                try:
                    if frame_model is not model:
                        if renderer is not None:
                            renderer.close()
                        renderer, model = None, None
                        renderer, model = make_renderer(frame_model, *self._size), frame_model
                    if state is not None:
                        started = time.perf_counter()
                        images = {camera: render_camera(renderer, state, camera) for camera in cameras}
                        self._on_frame(t, images, (time.perf_counter() - started) * 1e3)
                except Exception as exc:  # noqa: BLE001 - a failed frame is reported; the next one is tried
                    self._on_error(exc)
                with self._wake:
                    self._pending = None
                    self._wake.notify_all()
        finally:
            if renderer is not None:
                renderer.close()
