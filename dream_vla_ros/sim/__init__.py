"""What is the robot in tests? A Meta-World Sawyer arm driven by joint-position targets (no ROS, no torch).

Importing this package sets ``MUJOCO_GL=egl`` (headless rendering through Mesa) and ``LP_NUM_THREADS=1``
(one llvmpipe thread per process; parallelism comes from worker processes) unless they are already set;
both must be in the environment before ``mujoco`` is first imported. Override them by exporting other
values (for example ``MUJOCO_GL=osmesa``) before starting Python.

Modules: ``tasks`` (MT10 task list and phrasings), ``joint_arm`` (the simulated arm), ``scene`` (its
Meta-World scene and offscreen rendering), ``expert`` (scripted-expert demonstrations in joint space),
``collect`` (parallel demonstration collection); for the simulated arm node: ``trajectory_follower`` and
``goal_tolerances`` (JointTrajectoryController semantics), ``controller`` (the controller with its
FollowJointTrajectory goals), ``episode`` (reset sequence, success, truncation), ``pacing`` (the physics
loop's clock); ``jog_integrator`` (the core of the MoveIt Servo stand-in).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")
