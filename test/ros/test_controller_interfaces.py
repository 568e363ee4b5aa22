"""The chunk executor's controller interfaces over real DDS: FollowJointTrajectory against the simulated arm's
action server, JointJog through a JointJog integrator that stands in for MoveIt Servo (it is not Servo: no
collision checking, no smoothing), aborted and rejected goals, and hand-over back and forth with planned motion.

``control_msgs`` is not installable here: the ``control_msgs_env`` fixture builds the test copy in
``test/interfaces/control_msgs`` once (cached under ``.cache/control_msgs_ws``) and skips with the reason when
the build tools are missing. The probe plays the policy node: it answers each chunk request with a chunk that
heads for a target at a fixed speed, stamped with the joint state it was computed from."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

VMAX, AMAX = 1.0, 5.0  # arm joint limits of the executor under test (rad/s, rad/s^2)
SIM = {"width": 64, "height": 64, "reset_pause": 0.15, "max_steps": 0, "diagnostics_period": 0.2}


@pytest.fixture(scope="session")
def control_msgs_env():
    import control_msgs_build as build

    try:
        built = build.ensure_built()
    except build.BuildUnavailableError as exc:
        print(f"skipping: {exc}")
        pytest.skip(str(exc))
    build.activate(built)
    return built


def executor_overrides(interface: str, **extra):
    arm = [VMAX] * 7
    overrides = {
        "controller_interface": interface,
        "start_paused": True,
        "diagnostics_period": 0.2,
        "chunking.limits.max_velocity": [*arm, 40.0],
        "chunking.limits.max_acceleration": [AMAX] * 7 + [800.0],
    }
    overrides.update(extra)
    return overrides


def start_graph(ros, interface: str, **extra) -> None:
    """sim_arm (waits until its controller is active), then the chunk executor, paused."""
    from dream_vla_ros.bringup import describe

    graph = describe("sim_arm", only=("sim_arm", "chunk_executor"),
                     overrides={"sim_arm": SIM, "chunk_executor": executor_overrides(interface, **extra)})
    nodes = {n.name: n for n in graph.nodes}
    ros.start_python("sim_arm", nodes["sim_arm"].module, *nodes["sim_arm"].ros_args())
    from std_msgs.msg import String

    from dream_vla_ros.nodes import qos

    events = []
    ros.node.create_subscription(String, "/sim_arm/episode", lambda m: events.append(json.loads(m.data)), qos.EVENTS)
    ros.spin_until(lambda: any(e["event"] == "reset" for e in events), 60.0, "the arm's first episode")
    ros.start_python("executor", nodes["chunk_executor"].module, *nodes["chunk_executor"].ros_args())


class Probe:
    """Joint states, executor status, sim diagnostics, and the policy's part (chunks toward ``target``)."""

    def __init__(self, ros, speed: float = 0.6, horizon: int = 10, dt: float = 0.05) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Header, String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from dream_vla_ros.nodes import qos

        self.ros, self.node = ros, ros.node
        self.speed, self.horizon, self.dt = speed, horizon, dt
        self.samples: list[tuple[float, np.ndarray, np.ndarray]] = []  # stamp, positions, velocities
        self.names: list[str] = []
        self.target: np.ndarray | None = None
        self.status: dict = {}
        self.statuses: list[dict] = []
        self.events: list[tuple[float, str]] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.reports: dict[str, int] = {}
        self.answered: set[str] = set()
        self.chunks = 0
        node = self.node
        node.create_subscription(JointState, "/joint_states", self._on_joints, qos.SENSOR)
        node.create_subscription(String, "/chunk_executor/status", self._on_status, qos.GOAL)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        node.create_subscription(Header, "/chunk_executor/chunk_request", self._on_request, qos.REQUEST)
        self.chunk_pub = node.create_publisher(JointTrajectory, "/policy_node/action_chunk", qos.CHUNK)
        self.triggers = {name: node.create_client(Trigger, f"/chunk_executor/{name}")
                         for name in ("activate", "pause", "resume", "stop")}

    def _on_joints(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.names = list(msg.name)
        self.samples.append((stamp, np.array(msg.position), np.array(msg.velocity)))

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)
        self.statuses.append(self.status)
        self.events.append((self.status["stamp"], f"{self.status['state']}/{self.status['mode']}"))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.values:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
                self.reports[status.name] = self.reports.get(status.name, 0) + 1

    def fresh_diagnostics(self, *nodes: str) -> None:
        """Wait for two more /diagnostics reports of each node (so the values include everything before now)."""
        counts = {n: self.reports.get(n, 0) for n in nodes}
        self.wait(lambda: all(self.reports.get(n, 0) >= counts[n] + 2 for n in nodes), what=f"diagnostics of {nodes}")

    def _on_request(self, msg) -> None:
        if self.target is None or msg.frame_id in self.answered or not self.samples:
            return
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from dream_vla_ros.nodes.conversions import seconds_to_duration, seconds_to_stamp

        self.answered.add(msg.frame_id)
        stamp, q0, _ = self.samples[-1]
        steps = np.arange(1, self.horizon + 1)[:, None] * self.speed * self.dt
        rows = q0 + np.clip(self.target - q0, -steps, steps)
        out = JointTrajectory(joint_names=self.names)
        out.header.stamp = seconds_to_stamp(stamp)
        out.points = [JointTrajectoryPoint(positions=row, time_from_start=seconds_to_duration(i * self.dt))
                      for i, row in enumerate(rows.tolist(), 1)]
        self.chunk_pub.publish(out)
        self.chunks += 1

    # -- helpers ---------------------------------------------------------------------------------------------
    def wait(self, condition, timeout: float = 20.0, what: str = "condition"):
        try:
            return self.ros.spin_until(condition, timeout, what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nstatus: {self.status}\n{self.ros.outputs()}") from None

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ros.executor.spin_once(timeout_sec=0.01)

    def q(self) -> np.ndarray:
        return self.samples[-1][1].copy()

    def trigger(self, name: str):
        from std_srvs.srv import Trigger

        return self.ros.call(self.triggers[name], Trigger.Request())

    def reached(self, target: np.ndarray, tolerance: float = 0.03) -> bool:
        return bool(self.samples) and float(np.max(np.abs(self.q()[:7] - target[:7]))) < tolerance

    def value(self, node: str, key: str) -> str:
        return self.diagnostics.get(node, {}).get(key, "")

    def check_smooth(self, span: float = 0.1, slack: float = 0.04) -> None:
        """No jump: over every ``span`` s the arm moved at most VMAX * span plus ``slack`` (tracking and timing
        error). Single 12.5 ms steps are not compared: the simulated controller starts each replacement at its
        next 80 Hz update, so delivery jitter shows up as short speed spikes in topic and action mode alike."""
        stamps = np.array([s[0] for s in self.samples])
        q = np.array([s[1][:7] for s in self.samples])
        later = np.searchsorted(stamps, stamps + span)
        valid = later < len(stamps)
        moved = np.abs(q[later[valid]] - q[valid]).max(axis=1)
        # The bound uses the time that really passed between the two samples: a gap in the joint states (a
        # loaded machine) makes the pair span more than ``span``.
        elapsed = stamps[later[valid]] - stamps[valid]
        excess = moved - (VMAX * elapsed + slack)
        worst = int(np.argmax(excess))
        at = stamps[valid][worst]
        context = (f"t={at - stamps[0]:.3f} s over {elapsed[worst]:.3f} s; events before: "
                   f"{[(round(t - stamps[0], 3), e) for t, e in self.events if t <= at][-3:]}")
        assert float(excess[worst]) <= 0.0, (float(moved[worst]), context)


def send_planned_move(ros, goal_q: np.ndarray, names: list[str], q0: np.ndarray, duration: float = 1.5):
    """The 'MoveIt' side: a FollowJointTrajectory goal (smooth quintic, within VMAX) to the arm's controller."""
    from control_msgs.action import FollowJointTrajectory
    from rclpy.action import ActionClient
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from dream_vla_ros.nodes.conversions import seconds_to_duration

    client = getattr(ros, "_planner_client", None) or ActionClient(ros.node, FollowJointTrajectory,
                                                                   "/arm_controller/follow_joint_trajectory")
    ros._planner_client = client
    ros.spin_until(client.server_is_ready, 20.0, "the arm's action server")
    times = np.linspace(0.0, duration, 31)[1:]
    s = times / duration
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    rate = (30 * s**2 - 60 * s**3 + 30 * s**4) / duration
    goal = FollowJointTrajectory.Goal(trajectory=JointTrajectory(joint_names=names))
    goal.trajectory.points = [
        JointTrajectoryPoint(positions=(q0 + b * (goal_q - q0)).tolist(), velocities=(r * (goal_q - q0)).tolist(),
                             time_from_start=seconds_to_duration(t))
        for t, b, r in zip(times, blend, rate, strict=True)
    ]
    future = client.send_goal_async(goal)
    ros.spin_until(future.done, 10.0, "the planned goal's acceptance")
    handle = future.result()
    assert handle.accepted
    result = handle.get_result_async()
    ros.spin_until(result.done, duration + 10.0, "the planned goal's result")
    return result.result()


def test_action_interface_drives_the_sim_arm(ros, control_msgs_env):
    start_graph(ros, "action")
    probe = Probe(ros)
    probe.wait(lambda: probe.status.get("state") == "paused" and probe.samples, what="the paused executor")
    assert ros.node.count_publishers("/arm_controller/joint_trajectory") == 0  # the action only
    names = ros.node.get_node_names()  # the action server's helper node has its own name
    assert names.count("sim_arm") == 1 and names.count("sim_arm_action_server") == 1, names
    q0 = probe.q()
    probe.target = q0 + np.array([0.3, 0, 0, 0, 0, 0, 0.4, 0])
    assert probe.trigger("activate").success
    probe.wait(lambda: probe.reached(probe.target), 20.0, "the arm at the target through FollowJointTrajectory")
    probe.wait(lambda: probe.value("chunk_executor", "goals_accepted") not in ("", "0")
               and probe.value("chunk_executor", "feedback") not in ("", "0"), what="goal and feedback counts")
    executor = probe.diagnostics["chunk_executor"]
    assert executor["controller_interface"] == "action" and executor["goals_failed"] == "0", executor
    assert int(executor["goals_sent"]) < int(executor["ticks"]) / 2  # goals at goal_period, not every tick
    assert probe.status["state"] == "active" and probe.status["controller_fault"] is None
    # Lifecycle deactivate: silent at once (no goals); activate: back from the measured state.
    assert change_state(ros, "deactivate")
    probe.wait(lambda: probe.value("chunk_executor", "state") == "inactive", what="inactive (on /diagnostics)")
    probe.fresh_diagnostics("chunk_executor")
    sent = probe.value("chunk_executor", "goals_sent")
    probe.spin_for(0.5)
    probe.fresh_diagnostics("chunk_executor")
    assert probe.value("chunk_executor", "goals_sent") == sent
    probe.target = q0
    assert change_state(ros, "activate")
    probe.wait(lambda: probe.reached(q0), 20.0, "the arm back at the start after a lifecycle activate")
    probe.check_smooth()


def change_state(ros, transition: str) -> bool:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ids = {"activate": Transition.TRANSITION_ACTIVATE, "deactivate": Transition.TRANSITION_DEACTIVATE}
    client = ros.node.create_client(ChangeState, "/chunk_executor/change_state")
    request = ChangeState.Request(transition=Transition(id=ids[transition]))
    return bool(ros.call(client, request).success)


def test_servo_interface_drives_the_sim_arm_through_a_jog_integrator(ros, control_msgs_env):
    start_graph(ros, "servo")
    ros.start_python("servo_stand_in", "dream_vla_ros.nodes.sim.jog_integrator_node", "--ros-args", "-p",
                     "output_topic:=/arm_controller/joint_trajectory")
    probe = Probe(ros)
    probe.wait(lambda: probe.status.get("state") == "paused" and probe.samples, what="the paused executor")
    ros.wait_for_subscriber("/servo_node/delta_joint_cmds", timeout=20)
    q0 = probe.q()
    probe.target = q0 + np.array([-0.3, 0, 0, 0, 0, 0, 0.4, 0])
    assert probe.trigger("activate").success
    probe.wait(lambda: probe.reached(probe.target), 20.0, "the arm at the target through JointJog")
    probe.wait(lambda: probe.value("chunk_executor", "jog_commands") not in ("", "0"), what="jog counts")
    probe.check_smooth()
    # Pause: the executor brakes, then sends nothing; the integrator halts and the arm stays put.
    assert probe.trigger("pause").success
    probe.wait(lambda: probe.value("chunk_executor", "state") == "paused", what="paused (on /diagnostics)")
    commands = probe.value("chunk_executor", "jog_commands")
    held = probe.q()
    probe.spin_for(0.6)
    assert probe.value("chunk_executor", "jog_commands") == commands
    assert float(np.max(np.abs(probe.q()[:7] - held[:7]))) < 0.01


def test_rejected_and_aborted_goals_make_the_executor_hold_and_report(ros, tmp_path, control_msgs_env):
    """A stand-in action server (in the probe) aborts, then accepts, then rejects the executor's goals."""
    from control_msgs.action import FollowJointTrajectory
    from node_rig import HOME, Rig, executor_params, start_node, write_params
    from rclpy.action import ActionServer, GoalResponse

    mode = {"value": "abort"}
    received: list[float] = []

    def on_goal(goal):
        received.append(time.monotonic())
        return GoalResponse.REJECT if mode["value"] == "reject" else GoalResponse.ACCEPT

    def execute(handle):
        result = FollowJointTrajectory.Result()
        if mode["value"] == "abort":
            result.error_code = FollowJointTrajectory.Result.PATH_TOLERANCE_VIOLATED
            result.error_string = "shoulder position error 0.3 exceeds 0.1"
            handle.abort()
        else:
            handle.succeed()
        return result

    ActionServer(ros.node, FollowJointTrajectory, "/arm_controller/follow_joint_trajectory", execute_callback=execute,
                 goal_callback=on_goal)
    section = executor_params(controller_interface="action")
    del section["joint_controllers"]  # one controller (one action server) for all joints
    params = write_params(tmp_path / "params.yaml", chunk_executor=section)
    rig = Rig(ros)
    start_node(ros, "executor", "dream_vla_ros.nodes.executor_node", params)
    status: list[dict] = []
    from std_msgs.msg import String

    from dream_vla_ros.nodes import qos

    ros.node.create_subscription(String, "/chunk_executor/status", lambda m: status.append(json.loads(m.data)),
                                 qos.GOAL)

    def fault():
        return status[-1]["controller_fault"] if status and status[-1]["state"] == "fault" else None

    # Abort: hold, report the controller's code and string, send nothing more, ask for no chunks.
    rig.wait(fault, timeout=20, what="the aborted goal reported")
    assert fault() == {"controller": "arm_controller", "kind": "aborted", "error_code": -4,
                       "error_string": "shoulder position error 0.3 exceeds 0.1"}
    rig.wait(lambda: rig.cause_status("chunk_executor", "PATH_TOLERANCE_VIOLATED"), what="the fault on /diagnostics")
    goals, requests = len(received), len(rig.requests)
    rig.wait_until(rig.now() + 0.5)
    assert len(received) == goals and len(rig.requests) == requests, "the executor went on after an abort"

    # ~/resume: restart from the measured state; goals are accepted and succeed.
    mode["value"] = "accept"
    assert rig.call_trigger("/chunk_executor/resume").success
    rig.wait(lambda: status[-1]["state"] == "active" and len(received) > goals, what="goals after resume")
    rig.publish_chunk([[h + 0.02 * (i + 1) for h in HOME] for i in range(10)])
    rig.wait(lambda: rig.mode() == "running", what="running on a chunk")

    # Rejection of the newest goal: hold and report (a rejection has no result, hence no error code).
    mode["value"] = "reject"
    rig.publish_chunk([[h - 0.02 * (i + 1) for h in HOME] for i in range(10)])
    rig.wait(fault, timeout=10, what="the rejected goal reported")
    assert fault()["kind"] == "rejected" and fault()["error_code"] is None
    assert rig.call_trigger("/chunk_executor/activate").success
    rig.wait(lambda: status[-1]["state"] in ("active", "fault"), what="activated again")
    assert rig.alive("executor")


def test_handover_back_and_forth_without_jumps(ros, control_msgs_env):
    """Planned move -> VLA goal -> planned move -> VLA goal on one controller; the executor is silent while the
    planner moves the arm, each VLA goal starts from the measured state, and nothing exceeds the limits."""
    import rclpy
    from std_msgs.msg import Bool

    from dream_vla_ros.commander import TaskResult, VlaCommander

    start_graph(ros, "action")
    probe = Probe(ros)
    probe.wait(lambda: probe.status.get("state") == "paused" and probe.samples, what="the paused executor")
    done_pub = ros.node.create_publisher(Bool, "/test/vla_done", 10)
    program = rclpy.create_node("cell_program", context=ros.context)
    commander = VlaCommander(program, policy="", success_topic="/test/vla_done")
    home = probe.q()
    names = list(probe.names)

    def counts() -> tuple[int, int]:
        probe.fresh_diagnostics("sim_arm", "chunk_executor")
        return (int(probe.value("sim_arm", "goals_accepted")), int(probe.value("chunk_executor", "goals_sent") or 0))

    def planned_move(target: np.ndarray) -> None:
        accepted, sent = counts()
        result = send_planned_move(ros, target, names, probe.q())
        assert result.status == 4 and result.result.error_code == 0, result  # SUCCEEDED: nobody preempted it
        assert counts() == (accepted + 1, sent), "the paused executor sent goals during the planned move"

    def vla_goal(target: np.ndarray, instruction: str) -> None:
        probe.target = target
        outcome: list = []
        worker = threading.Thread(target=lambda: outcome.append(commander.run_goal(instruction, timeout=20.0)))
        worker.start()
        probe.wait(lambda: probe.reached(target), 25.0, f"the VLA at {instruction!r}")
        done_pub.publish(Bool(data=True))
        probe.wait(lambda: not worker.is_alive(), 10.0, "run_goal to return")
        assert outcome and outcome[0].result is TaskResult.SUCCEEDED, outcome
        assert not commander.is_active()
        probe.wait(lambda: probe.status["state"] == "paused", 2.0, "the paused status")
        probe.target = None

    offsets = [np.array([0.25, 0, 0, 0, 0, 0, 0.3, 0]), np.array([-0.2, 0, 0, 0, 0, 0, -0.3, 0])]
    try:
        for round_, offset in enumerate(offsets):
            planned = home + np.array([0.0, 0, 0, 0, 0, 0, 0.5 * (round_ + 1), 0])
            planned_move(planned)
            start = probe.q()
            activations = sum(1 for s in probe.statuses if s["state"] == "active")
            vla_goal(planned + offset, f"vla step {round_}")
            assert sum(1 for s in probe.statuses if s["state"] == "active") > activations
            assert float(np.max(np.abs(start[:7] - planned[:7]))) < 0.05
        probe.check_smooth()
    finally:
        commander.destroy()
        program.destroy_node()
