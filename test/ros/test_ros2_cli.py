"""The README's robot commands through the real ROS 2 tooling: ``ros2 launch``, ``topic``, ``lifecycle``, ``param``.

The ``ros2`` command comes from ``test/ros_tooling.py`` (the upstream Jazzy tooling installed from
``../shared/ros2_python``, else the system's; the tests skip with the reason when there is neither). Each test
starts one launched graph in its own ROS domain and runs several commands against it, so the graph starts as
few times as possible. Commands whose lines the README's "On a robot" block holds are taken from there and run
as written (the model path and extra launch arguments substituted); ``--no-daemon`` is added to the commands
that would otherwise leave a ``ros2 daemon`` running after the test. Graph queries are repeated until they show
what is expected (a fresh ``ros2`` process discovers the graph in its 0.5 s spin only on an idle machine).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dream_vla_ros.paths import share_dir

pytestmark = pytest.mark.ros

README = share_dir() / "README.md"
EXPORT_MODEL = "metaworld_mt10"
# Commands that would start (or use) a `ros2 daemon` unless told --no-daemon; `topic pub` takes no such flag.
DAEMON_VERBS = ("lifecycle", "param", "node", "service", "topic")
NO_DAEMON_FLAG = (("topic", "pub"),)


def readme_robot_commands() -> list[list[str]]:
    """The ``ros2 ...`` lines of the README's "On a robot" code block, as argv lists without ``ros2``."""
    text = README.read_text()
    section = text[text.index("## On a robot"):]
    block = section[section.index("```bash") + len("```bash"):section.index("```", section.index("```bash") + 7)]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [argv[1:] for argv in commands if argv and argv[0] == "ros2"]


def readme_command(*head: str) -> list[str]:
    """The README's command starting with ``ros2 <head...>`` (exactly one)."""
    (argv,) = [a for a in readme_robot_commands() if tuple(a[:len(head)]) == head]
    return argv


def readme_launch_arguments() -> list[str]:
    """The names of the README's "Launch arguments: `a`, `b` (...), ..." sentence."""
    text = README.read_text()
    sentence = text[text.index("Launch arguments:"):]
    return re.findall(r"`(\w+)`", sentence[:sentence.index(". ")])


class Graph:
    """One ``ros2 launch`` in the test bed's domain plus the ``ros2`` commands run against it."""

    def __init__(self, bed, tooling, launch_argv: list[str]) -> None:
        self.bed, self.tooling = bed, tooling
        self.launch = bed.start("launch", tooling.argv("launch", *launch_argv), env=tooling.env)

    def ros2(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        from dream_vla_ros.process_group import child_environment

        argv = list(args)
        if argv[0] in DAEMON_VERBS and tuple(argv[:2]) not in NO_DAEMON_FLAG:
            argv.append("--no-daemon")
        env = child_environment({**self.bed.env, **self.tooling.env})
        return subprocess.run(self.tooling.argv(*argv), env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def texts(self, *args: str) -> tuple[str, str]:
        """stdout and stderr of ``ros2 <args>``; empty after 20 s (a service reply lost while discovery was still
        settling leaves ros2 waiting forever)."""
        try:
            result = self.ros2(*args, timeout=20.0)
        except subprocess.TimeoutExpired:
            return "", "(timed out after 20 s)"
        return result.stdout, result.stderr

    def until(self, args: tuple[str, ...], holds: Callable[[str], bool], timeout: float = 60.0) -> str:
        """Repeat ``ros2 <args>`` until its output (stdout + stderr) satisfies ``holds``; returns that output."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.launch.running, f"ros2 launch exited:\n{self.output()[-3000:]}"
            out, err = self.texts(*args)
            if holds(out + err):
                return out + err
            if time.monotonic() > deadline:
                raise AssertionError(f"`ros2 {' '.join(args)}` never showed what was expected; last output:\n"
                                     f"{out}{err}")
            time.sleep(0.5)

    def ok(self, *args: str, expect: str) -> str:
        """Run ``ros2 <args>`` until its output contains ``expect`` (a fresh process may miss part of the graph)."""
        return self.until(tuple(args), lambda out: expect in out)

    def transition(self, command: list[str], state: str) -> None:
        """``ros2 lifecycle set NODE TRANSITION`` until it succeeds, or until ``lifecycle get`` shows ``state``
        (a call whose reply was lost may have made the transition)."""
        node = command[2]
        self.until(tuple(command), lambda out: "Transitioning successful" in out
                   or state in self.texts("lifecycle", "get", node)[0])

    def output(self) -> str:
        return self.bed.processes.output("launch")

    def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the process group of ``ros2 launch`` (launch and its nodes;
        launch then forwards one more to each node). Returns the exit code of ``ros2 launch``."""
        os.killpg(self.launch.popen.pid, signal.SIGINT)
        code = self.launch.popen.wait(timeout)
        time.sleep(0.1)  # let the output pump drain the pipe
        return code


def assert_clean_exit(graph: Graph, code: int, processes: list[str]) -> None:
    out = graph.output()
    assert code == 0, out[-3000:]
    assert "Traceback" not in out and "process has died" not in out, out[-3000:]
    for name in processes:
        finished = re.search(rf"\[{name}-\d+\]: process has finished cleanly", out)
        assert finished, f"{name} did not exit with 0:\n{out[-3000:]}"


@pytest.fixture
def graph_bed(ros, ros2_tooling):
    """(bed, tooling); the bed's processes (the launch) are stopped after the test whatever happens."""
    return ros, ros2_tooling


def test_launch_file_arguments_and_package_resolve(graph_bed):
    """`ros2 launch --show-args` lists every launch argument the README names; `ros2 run` finds every node
    executable; jetson_arm without a model fails at once with one line saying what to set."""
    bed, tooling = graph_bed
    graph = Graph(bed, tooling, ["dream_vla_ros", "jetson_arm.launch.py"])
    code = graph.launch.popen.wait(60)
    time.sleep(0.1)
    out = graph.output()
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert code != 0 and len(errors) == 1, out
    assert "policy_node: no model: pass model:=" in errors[0] and "Traceback" not in out
    assert "process started" not in out  # nothing was started

    shown = graph.ros2("launch", "dream_vla_ros", "sim_arm.launch.py", "--show-args")
    declared = set(re.findall(r"^\s+'(\w+)':", shown.stdout, flags=re.MULTILINE))
    assert set(readme_launch_arguments()) == declared, shown.stdout
    executables = graph.ros2("pkg", "executables", "dream_vla_ros").stdout.split()
    from dream_vla_ros.bringup import EXECUTABLES

    assert set(executables) - {"dream_vla_ros"} == set(EXECUTABLES)


def _sim_config(tmp_path: Path) -> Path:
    """sim_arm.yaml with the task the README's goal names (drawer-open, no step limit), the simulation at half
    speed on its /clock (under use_sim_time:=true) and looser freshness limits (a loaded CI machine must not
    decide the outcome), a lower halting threshold than the checkpoint's (so that 0.002 visibly moves k) and a
    per-chunk profile (k of every chunk)."""
    data = yaml.safe_load((share_dir() / "config" / "sim_arm.yaml").read_text())
    data["sim_arm"]["ros__parameters"].update(task="drawer-open", seed=0, max_steps=0, real_time_factor=0.5)
    data["policy_node"]["ros__parameters"].update(
        halting_delta=0.0003, profile_path=str(tmp_path / "profile.jsonl"), max_image_age=1.0,
        max_joint_state_age=1.0, max_sync_skew=0.5, warmup_runs=1)
    data["chunk_executor"]["ros__parameters"].update(max_joint_state_age=0.5)
    path = tmp_path / "drawer.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _chunk_iterations(profile: Path) -> list[int]:
    if not profile.is_file():
        return []
    return [json.loads(line)["iterations"] for line in profile.read_text().splitlines() if line.strip()]


def test_sim_arm_launch_completes_the_readme_goal_under_the_cli(graph_bed, tmp_path):
    """One launched sim_arm graph: config_file, model and use_sim_time take effect, the README's `ros2 topic pub --once`
    goal is completed by the simulated arm, lifecycle deactivate holds and activate resumes (executor and
    policy), `ros2 param set ... halting_delta 0.002` moves k live, `ros2 topic echo /diagnostics --once` shows
    a node's status, and Ctrl-C ends every node with exit code 0 and no traceback."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from dream_vla_ros.nodes import qos

    bed, tooling = graph_bed
    config = _sim_config(tmp_path)
    profile = tmp_path / "profile.jsonl"
    events: list[dict] = []
    chunks: list[int] = []  # points per chunk message (0 = the stop a deactivation sends)
    joints: list[tuple[float, ...]] = []
    bed.node.create_subscription(String, "/sim_arm/episode", lambda m: events.append(json.loads(m.data)), qos.GOAL)
    bed.node.create_subscription(JointTrajectory, "/policy_node/action_chunk",
                                 lambda m: chunks.append(len(m.points)), qos.CHUNK)
    bed.node.create_subscription(JointState, "/joint_states", lambda m: joints.append(tuple(m.position)),
                                 qos.SENSOR)
    graph = Graph(bed, tooling, ["dream_vla_ros", "sim_arm.launch.py", f"config_file:={config}",
                                 f"model:={EXPORT_MODEL}", "use_sim_time:=true"])

    graph.ok(*readme_command("lifecycle", "get"), expect="active [3]")
    graph.until(("node", "list"), lambda out: {"/policy_node", "/chunk_executor", "/sim_arm"} <= set(out.split()))
    graph.ok("param", "get", "/sim_arm", "task", expect="String value is: drawer-open")  # config_file
    assert f"loading model '{EXPORT_MODEL}'" in graph.output()  # model
    bed.wait_for_publisher("/clock", 30.0)  # use_sim_time: the arm runs on its own clock and publishes it

    # Executor inactive: the goal arrives, but nothing moves.
    executor_off = readme_command("lifecycle", "set", "/chunk_executor")
    assert executor_off[-1] == "deactivate"
    graph.transition(executor_off, "inactive [2]")
    published = graph.ros2(*readme_command("topic", "pub"))
    assert published.returncode == 0 and "publishing #1" in published.stdout, published.stdout + published.stderr
    assert bed.processes.wait_for_line("launch", "goal: 'open the drawer'", 30.0), graph.output()[-3000:]
    start = len(joints)
    bed.spin_until(lambda: len(joints) > start + 40, 30.0, what="joint states while the executor is inactive")
    held = [joints[start], joints[-1]]
    assert max(abs(a - b) for a, b in zip(*held, strict=True)) < 1e-3, held
    assert not any(e["event"] == "success" for e in events)

    # Executor active: the arm opens the drawer.
    graph.transition([*executor_off[:-1], "activate"], "active [3]")
    bed.spin_until(lambda: any(e["event"] == "success" for e in events), 120.0, what="the drawer opened")
    assert any(e["event"] == "success" and e["task"] == "drawer-open" for e in events)

    # Policy inactive: one stop (an empty chunk), then no chunks; active again: chunks resume.
    policy_off = readme_command("lifecycle", "set", "/policy_node")
    assert policy_off[-1] == "deactivate"
    graph.transition(policy_off, "inactive [2]")
    bed.spin_until(lambda: 0 in chunks, 10.0, what="the stop chunk of a deactivation")
    stopped = len(chunks)
    deadline = time.monotonic() + 1.5
    bed.spin_until(lambda: time.monotonic() > deadline, 5.0)
    assert chunks[stopped:] == []
    graph.transition([*policy_off[:-1], "activate"], "active [3]")
    bed.spin_until(lambda: sum(1 for n in chunks[stopped:] if n) >= 5, 30.0, what="chunks after activate")

    # Halting threshold, live: k of the chunks before and after `ros2 param set`.
    bed.spin_until(lambda: len(_chunk_iterations(profile)) >= 10, 30.0, what="profiled chunks")
    before = _chunk_iterations(profile)[-10:]
    graph.ok(*readme_command("param", "set"), expect="Set parameter successful")
    count = len(_chunk_iterations(profile))
    bed.spin_until(lambda: len(_chunk_iterations(profile)) >= count + 11, 30.0, what="chunks after the change")
    after = _chunk_iterations(profile)[count + 1:count + 11]  # the first may have started before the change
    assert sum(after) / len(after) < sum(before) / len(before), (before, after)
    refused = graph.until(("param", "set", "/policy_node", "halting_k_max", "-1"), lambda out: "failed" in out)
    assert "halting_k_max" in refused and ">= 0" in refused, refused  # checked like the params file

    echoed = graph.until(tuple(readme_command("topic", "echo")), lambda out: "\nstatus:" in out and "\n---" in out)
    message = yaml.safe_load(echoed[echoed.index("header:"):].split("\n---")[0])  # warnings may come first
    status = message["status"][0]
    assert status["name"] in {"policy_node", "chunk_executor", "sim_arm"} and status["values"], echoed

    assert_clean_exit(graph, graph.interrupt(), ["policy_node", "chunk_executor", "sim_arm"])


def test_jetson_arm_launch_arguments_take_effect(graph_bed, tmp_path):
    """jetson_arm.launch.py on this machine: the README's launch line with an ONNX export and backend:=onnxruntime
    device:=cpu reaches active; namespace, use_sim_time, camera_topics, controller and composed show in
    `ros2 node list`, `ros2 param get` and `ros2 topic list`; Ctrl-C ends the composed process cleanly."""
    pytest.importorskip("onnxruntime")
    from dream_vla_ros.engines.export import export_model
    from dream_vla_ros.paths import resolve_model

    bed, tooling = graph_bed
    export = tmp_path / "onnx"
    export_model(resolve_model(EXPORT_MODEL), export, accuracy_samples=2)
    launch = [f"model:={export}" if a.startswith("model:=") else a for a in readme_command("launch")[1:]]
    launch += ["backend:=onnxruntime", "device:=cpu", "namespace:=arm", "use_sim_time:=true",
               "camera_topics:=cam/a/image_raw,cam/b/image_raw", "controller:=my_controller", "composed:=true"]
    graph = Graph(bed, tooling, launch)

    graph.ok("lifecycle", "get", "/arm/policy_node", expect="active [3]")
    graph.until(("node", "list"), lambda out: {"/arm/policy_node", "/arm/chunk_executor"} <= set(out.split()))
    out = graph.output()
    assert re.search(r"\[composed-\d+\]: process started", out) and "[policy_node-" not in out, out[-3000:]
    # model, backend, device and the fp32 the backend switch implies, as the node configured them:
    assert f"loading model '{export}' with backend 'onnxruntime'" in out and "configured: onnxruntime cpu fp32" in out
    for node, name, shown in (("policy_node", "backend", "String value is: onnxruntime"),
                              ("policy_node", "use_sim_time", "Boolean value is: True"),
                              ("chunk_executor", "use_sim_time", "Boolean value is: True")):  # both, composed
        graph.ok("param", "get", f"/arm/{node}", name, expect=shown)
    wanted = {"/arm/cam/a/image_raw", "/arm/cam/b/image_raw", "/arm/my_controller/joint_trajectory",
              "/arm/gripper_controller/joint_trajectory", "/arm/goal", "/arm/joint_states"}
    topics = set(graph.until(("topic", "list"), lambda out: wanted <= set(out.split())).split())
    assert "/arm/arm_controller/joint_trajectory" not in topics

    assert_clean_exit(graph, graph.interrupt(), ["composed"])
