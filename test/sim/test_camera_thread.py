"""Frames rendered on the camera thread are the frames rendered in place, pixel for pixel, in capture order."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("metaworld")

from dream_vla_ros.errors import InputError
from dream_vla_ros.sim.camera_thread import CameraThread
from dream_vla_ros.sim.joint_arm import CONTROL_DT, JointArm, SimArmConfig
from dream_vla_ros.sim.tasks import MT10

pytestmark = pytest.mark.sim
CAMERAS = ("corner", "topview")


def test_every_mt10_scene_renders_the_same_on_the_camera_thread():
    frames: dict[float, dict[str, np.ndarray]] = {}
    errors: list[BaseException] = []
    rng = np.random.default_rng(3)
    cameras = CameraThread(64, 64, lambda t, images, _: frames.__setitem__(t, images), errors.append)
    expected: dict[float, dict[str, np.ndarray]] = {}
    with JointArm(SimArmConfig(task="reach", cameras=CAMERAS, width=64, height=64, cached_scenes=1)) as arm:
        t = 0.0
        for task in MT10:  # every scene switch gives the camera thread a new model and renderer
            state = arm.reset(task, seed=5)
            cameras.prepare(arm.physics()[0])  # as the node does at a reset
            for step in range(12):
                state = arm.step(state.positions + rng.normal(0.0, 0.05, 8))
                t += CONTROL_DT
                if step % 4 == 3:
                    expected[t] = arm.render_all()
                    cameras.capture(t, *arm.physics(), CAMERAS)  # the arm steps on while the thread renders its copy
    cameras.close()
    assert not errors
    assert list(frames) == list(expected)  # every frame, in order
    for t, images in expected.items():
        for camera in CAMERAS:
            np.testing.assert_array_equal(frames[t][camera], images[camera], err_msg=f"{camera} at {t:.4f} s")


def test_a_capture_waits_for_the_frame_in_flight_and_a_failed_frame_is_reported():
    frames: list[float] = []
    errors: list[BaseException] = []
    cameras = CameraThread(32, 32, lambda t, *_: frames.append(t), errors.append)
    with JointArm(SimArmConfig(task="reach", cameras=("corner",), width=32, height=32)) as arm:
        arm.reset(seed=1)
        for k in range(3):
            cameras.capture(k * CONTROL_DT, *arm.physics(), ("corner", "no-such-camera"))  # none dropped
    cameras.close()
    assert frames == [] and len(errors) == 3 and all(isinstance(e, InputError) for e in errors)
