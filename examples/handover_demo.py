#!/usr/bin/env python3
"""Hand-over demo: planned joint moves and VLA goals take turns on one arm controller (the simulated arm).

Each round: reset a seeded episode of the simulated arm (its answer is the language instruction), a *planned
move* (a smooth FollowJointTrajectory goal sent by this script, standing in for MoveIt) carries the arm to an
approach pose, the *VLA* runs the instruction through :class:`dream_vla_ros.commander.VlaCommander` until the
arm reports success or the timeout, and a second planned move retreats. The executor is paused whenever the
planned moves run, and each VLA goal starts from the measured state (see docs/moveit.md).

Run (the action interface needs control_msgs; in this venv build the test copy first)::

    eval "$(.venv/bin/python test/control_msgs_build.py --exports)"
    .venv/bin/dream-vla-ros up sim_arm --set policy_node.model:=metaworld_mt10 \\
        --set chunk_executor.controller_interface:=action --set chunk_executor.start_paused:=true &
    .venv/bin/python examples/handover_demo.py --task reach --rounds 2

With a real MoveIt: replace :func:`planned_move` by MoveGroup / moveit_py ``plan()`` + ``execute()`` (or the
ExecuteTrajectory action). MoveIt's trajectory execution manager sends the plan to the same
``follow_joint_trajectory`` action of the same controller and checks that the arm starts within
``allowed_start_tolerance`` (0.01 rad) of the plan's first point, which holds because the executor gives the arm
back at rest and silent. Start the executor with ``start_paused: true`` so MoveIt owns the arm first; with
``controller_interface: servo`` also pass ``servo_node``/``servo_api`` to the commander so Servo is started and
paused around each VLA goal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="reach", help="MT10 task of the episodes")
    parser.add_argument("--seed", type=int, default=100_000, help="seed of the first episode")
    parser.add_argument("--rounds", type=int, default=2, help="planned move / VLA goal / retreat rounds")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per VLA goal")
    parser.add_argument("--controller", default="/arm_controller", help="the JointTrajectoryController")
    parser.add_argument("--approach", type=float, nargs=2, default=(0.15, 0.4), metavar=("J0", "J6"),
                        help="approach pose: offsets (rad) of right_j0 and right_j6 from the episode's start pose")
    return parser.parse_args(argv)


class Arm:
    """Joint states, the arm's reset service, and planned moves through FollowJointTrajectory."""

    def __init__(self, node, controller: str) -> None:
        from control_msgs.action import FollowJointTrajectory
        from rclpy.action import ActionClient
        from sensor_msgs.msg import JointState
        from std_srvs.srv import Trigger

        from dream_vla_ros.nodes import qos

        self.node = node
        self.names: list[str] = []
        self.positions: np.ndarray | None = None
        node.create_subscription(JointState, "/joint_states", self._on_joints, qos.SENSOR)
        self.action = ActionClient(node, FollowJointTrajectory, f"{controller}/follow_joint_trajectory")
        self.goal_type = FollowJointTrajectory.Goal
        self.reset_client = node.create_client(Trigger, "/sim_arm/reset")

    def _on_joints(self, msg) -> None:
        self.names, self.positions = list(msg.name), np.array(msg.position)

    def spin_until(self, future_or_condition, timeout: float, what: str):
        import rclpy

        done = future_or_condition.done if hasattr(future_or_condition, "done") else future_or_condition
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            rclpy.spin_once(self.node, timeout_sec=0.02)
        return future_or_condition.result() if hasattr(future_or_condition, "result") else True

    def reset(self, task: str, seed: int) -> dict:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        from std_srvs.srv import Trigger

        params = self.node.create_client(SetParameters, "/sim_arm/set_parameters")
        self.spin_until(params.service_is_ready, 30.0, "/sim_arm/set_parameters")
        request = SetParameters.Request(parameters=[Parameter("task", value=task).to_parameter_msg(),
                                                    Parameter("seed", value=seed).to_parameter_msg()])
        self.spin_until(params.call_async(request), 10.0, "set_parameters")
        self.spin_until(self.reset_client.service_is_ready, 30.0, "/sim_arm/reset")
        answer = self.spin_until(self.reset_client.call_async(Trigger.Request()), 60.0, "the episode reset")
        self.positions = None
        self.spin_until(lambda: self.positions is not None, 10.0, "joint states")
        return json.loads(answer.message)

    def planned_move(self, target: np.ndarray, duration: float = 2.0):
        """A quintic joint-space move from the measured state (what MoveIt would plan and execute)."""
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from dream_vla_ros.nodes.conversions import seconds_to_duration

        self.spin_until(self.action.server_is_ready, 30.0, "the follow_joint_trajectory action")
        start = self.positions.copy()
        times = np.linspace(0.0, duration, 41)[1:]
        s = times / duration
        blend, rate = 10 * s**3 - 15 * s**4 + 6 * s**5, (30 * s**2 - 60 * s**3 + 30 * s**4) / duration
        goal = self.goal_type(trajectory=JointTrajectory(joint_names=self.names))
        goal.trajectory.points = [
            JointTrajectoryPoint(positions=(start + b * (target - start)).tolist(),
                                 velocities=(r * (target - start)).tolist(), time_from_start=seconds_to_duration(t))
            for t, b, r in zip(times, blend, rate, strict=True)
        ]
        handle = self.spin_until(self.action.send_goal_async(goal), 10.0, "goal acceptance")
        if not handle.accepted:
            raise RuntimeError("the controller rejected the planned move")
        result = self.spin_until(handle.get_result_async(), duration + 10.0, "the planned move")
        return result.result.error_code, result.result.error_string


def main(argv: list[str] | None = None) -> int:
    import rclpy

    from dream_vla_ros.commander import VlaCommander

    args = parse_args(argv)
    rclpy.init()
    # Two nodes: the commander spins its own while run_goal waits, Arm spins the other for planned moves.
    node = rclpy.create_node("handover_demo")
    vla = VlaCommander(rclpy.create_node("handover_demo_vla"), success_topic="/sim_arm/success")
    arm = Arm(node, args.controller)
    try:
        for round_ in range(args.rounds):
            event = arm.reset(args.task, args.seed + round_)
            home = arm.positions.copy()
            approach = home.copy()
            approach[0] += args.approach[0]
            approach[6] += args.approach[1]
            print(f"round {round_ + 1}: planned move to the approach pose", flush=True)
            print(f"  planned move: error_code {arm.planned_move(approach)}", flush=True)
            print(f"  VLA goal: {event['instruction']!r}", flush=True)
            started = time.monotonic()
            outcome = vla.run_goal(event["instruction"], args.timeout)
            print(f"  VLA outcome: {outcome.result.value} after {time.monotonic() - started:.1f} s "
                  f"({outcome.detail})", flush=True)
            print(f"  planned retreat: error_code {arm.planned_move(home)}", flush=True)
    finally:
        vla.destroy()
        vla.node.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
