"""The ROS-free pieces behind the nodes: freshness checks, cause bookkeeping, the worker, configs, engines."""

from __future__ import annotations

import threading
import time
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dream_vla_ros.configuration import field_types, load_node_config
from dream_vla_ros.errors import CheckpointError, ConfigError, EngineError
from dream_vla_ros.nodes.health import FaultTracker, RateMeter, cause_key
from dream_vla_ros.nodes.inputs import FreshnessLimits, check_freshness, timing_slots
from dream_vla_ros.nodes.policy_config import PolicyNodeConfig, is_compressed_topic
from dream_vla_ros.nodes.worker import SingleWorker
from dream_vla_ros.paths import config_dir

LIMITS = FreshnessLimits(max_image_age=0.2, max_joint_state_age=0.1, max_future=0.05, max_sync_skew=0.15)


# -- freshness -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("images", "joints", "slot", "key"),
    [
        ({"main": None}, 9.99, "camera main timing", "nothing received"),
        ({"main": 9.7}, 9.99, "camera main timing", "stale"),
        ({"main": 10.2}, 9.99, "camera main timing", "future stamp"),
        ({"main": 0.0}, 9.99, "camera main timing", "zero stamp"),
        ({"main": 9.95}, None, "joint_states timing", "nothing received"),
        ({"main": 9.95}, 9.8, "joint_states timing", "stale"),
        ({"main": 9.95, "wrist": 9.81}, 9.99, "sync", "out of sync"),
    ],
)
def test_freshness_problems_name_slot_and_cause(images, joints, slot, key):
    problems = check_freshness(10.0, images, joints, LIMITS)
    assert (problems[0].slot, problems[0].key) == (slot, key)
    assert set(timing_slots(tuple(images))) >= {p.slot for p in problems}


@given(age=st.floats(0.0, 0.19), joint_age=st.floats(0.0, 0.09), lead=st.floats(0.0, 0.04))
def test_fresh_inputs_pass(age, joint_age, lead):
    now = 100.0
    assert check_freshness(now, {"main": now - age + lead}, now - joint_age, FreshnessLimits(0.2, 0.1, 0.05, 1.0)) == []


# -- causes --------------------------------------------------------------------------------------------------
def test_a_cause_is_new_once_per_episode():
    faults = FaultTracker()
    assert faults.report("camera main", "stale", "0.5 s old")
    assert not faults.report("camera main", "stale", "0.7 s old")  # same cause, new details: not new
    assert faults.active("camera main").count == 2
    assert faults.report("camera main", "future stamp", "ahead")  # another cause in the slot: new
    assert faults.clear("camera main").key == "future stamp"
    assert faults.clear("camera main") is None
    assert faults.report("camera main", "stale", "again")  # a new episode logs again
    assert faults.last_error == "camera main: again"
    assert not faults.is_healthy("camera main") and faults.is_healthy("goal")


def test_cause_keys_ignore_numbers():
    assert cause_key("frame is 0.532 s old (limit 0.2 s)") == cause_key("frame is 12 s old (limit 0.2 s)")
    assert cause_key("size 32x24") != cause_key("unsupported encoding")


def test_rate_meter():
    meter = RateMeter(window=1.0)
    for i in range(201):
        meter.tick(i * 0.01)
    assert meter.value(2.0) == pytest.approx(100.0, rel=0.02)
    assert meter.value(10.0) == 0.0


# -- worker --------------------------------------------------------------------------------------------------
def test_worker_runs_one_job_at_a_time_and_survives_errors():
    release = threading.Event()
    done, errors = [], []

    def run(job):
        if job == "boom":
            raise RuntimeError("engine exploded")
        release.wait(5)
        done.append(job)

    worker = SingleWorker(run, errors.append)
    assert worker.submit("a")
    assert not worker.submit("b")  # busy: dropped, never queued
    release.set()
    deadline = time.monotonic() + 5
    while worker.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.submit("boom")
    while (worker.busy or not errors) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == ["a"] and "engine exploded" in str(errors[0])
    assert worker.submit("c")
    worker.close()
    assert done == ["a", "c"] and not worker.submit("d")


# -- configs and parameters ----------------------------------------------------------------------------------
def test_every_node_parameter_has_a_ros_type_and_a_description():
    import typing

    params = pytest.importorskip("dream_vla_ros.nodes.params")
    from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig

    for cls in (PolicyNodeConfig, ExecutorNodeConfig):
        for name, annotation in field_types(cls).items():
            params.parameter_type(annotation)
            if not name.startswith("chunking."):
                *parents, leaf = name.split(".")  # nested configs document their own fields (as declare reads them)
                owner = cls
                for part in parents:
                    owner = typing.get_type_hints(owner)[part]
                assert params._field_docs(owner).get(leaf), f"{cls.__name__}.{name} is not documented"
    defaults = params._defaults(ExecutorNodeConfig)
    assert defaults["chunking.control_period"] == 0.01 and "chunking.joint_names" in defaults


@pytest.mark.parametrize("config", ["sim_arm", "jetson_arm"])
def test_shipped_configs_load_into_the_node_configs(config):
    from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig

    path = config_dir() / f"{config}.yaml"
    policy = load_node_config(PolicyNodeConfig, path, "policy_node")
    executor = load_node_config(ExecutorNodeConfig, path, "chunk_executor")
    columns = executor.controller_columns()
    assert sorted(i for c in columns.values() for i in c) == list(range(len(executor.chunking.joint_names)))
    assert not policy.joint_names or len(policy.joint_names) == len(executor.chunking.joint_names)


def test_every_node_parameter_in_the_shipped_configs_is_commented():
    """Every parameter of the policy_node and chunk_executor sections carries a comment (units, meaning)."""
    for path in config_dir().glob("*.yaml"):
        section = ""
        for line in path.read_text().splitlines():
            if line and not line.startswith((" ", "#")):
                section = line.split(":")[0]
            if section not in ("policy_node", "chunk_executor"):
                continue
            code = line.split("#")[0].strip()
            key, sep, value = code.partition(":")
            if not sep or not value.strip() or code.startswith("-") or not key.isidentifier():
                continue  # comments, section headers, list items, continuation lines
            assert "#" in line, f"{path.name}: {section}.{key} has no comment"


@pytest.mark.parametrize(
    ("change", "key"),
    [({"camera_topics": ()}, "camera_topics"), ({"max_image_age": 0.0}, "max_image_age"),
     ({"image_width": 640}, "image_height"), ({"joint_names": ("a", "a")}, "joint_names")],
)
def test_policy_config_rejects_bad_values(change, key):
    with pytest.raises(ConfigError, match=key):
        PolicyNodeConfig(**change)


def test_executor_config_needs_one_controller_per_joint():
    from dream_vla_ros.chunking import ExecutorConfig
    from dream_vla_ros.nodes.executor_config import ExecutorNodeConfig

    core = ExecutorConfig(joint_names=("a", "b", "gripper"))
    config = ExecutorNodeConfig(core, joint_controllers=("arm", "arm", "hand"))
    assert config.controller_columns() == {"arm": [0, 1], "hand": [2]}
    assert ExecutorNodeConfig(core).controller_columns() == {"arm_controller": [0, 1, 2]}
    with pytest.raises(ConfigError, match="joint_controllers"):
        ExecutorNodeConfig(core, joint_controllers=("arm",))


def test_compose_merges_both_sections_with_their_own_overrides(tmp_path):
    import yaml

    from dream_vla_ros.bringup import describe
    from dream_vla_ros.nodes.composed import compose, strip_node_remap

    graph = describe("sim_arm", namespace="arm", use_sim_time=True, only=("policy_node", "chunk_executor"),
                     overrides={"policy_node": {"model": "/m"}, "chunk_executor": {"chunking.control_period": 0.02}})
    (node,) = compose(graph, tmp_path).nodes
    assert node.executable == "composed" and node.namespace == "arm"
    assert node.parameters == {}
    document = yaml.safe_load(node.params_file.read_text())
    assert document["/**"]["ros__parameters"]["use_sim_time"] is True  # for both nodes, whatever the process name
    assert document["policy_node"]["ros__parameters"]["model"] == "/m"
    executor = document["chunk_executor"]["ros__parameters"]
    assert executor["chunking"]["control_period"] == 0.02
    assert executor["chunking"]["joint_names"][-1] == "gripper"
    args = strip_node_remap(["x", *node.ros_args()])
    assert "__node:=composed" not in args and "__ns:=/arm" in args
    with pytest.raises(ConfigError, match="composing needs"):
        compose(describe("sim_arm", only=("policy_node",)), tmp_path)


def test_launch_overrides_cover_cameras_controller_backend_and_device():
    from dream_vla_ros.launch_support import LAUNCH_ARGUMENTS, overrides

    assert {"composed", "camera_topics", "controller", "model", "backend", "device", "precision"} <= set(
        LAUNCH_ARGUMENTS)
    values = {"model": "/m", "camera_topics": "/a/image_raw, /b/image_raw/compressed", "controller": "my_controller"}
    arm = ["my_controller"] * 7 + ["gripper_controller"]  # joint_controllers naming the config's controller follow it
    assert overrides("jetson_arm", values) == {
        "policy_node": {"model": "/m", "camera_topics": ["/a/image_raw", "/b/image_raw/compressed"]},
        "chunk_executor": {"controller": "my_controller", "joint_controllers": arm},
    }
    assert overrides("sim_arm", {"controller": "c"}) == {"chunk_executor": {"controller": "c"}}
    assert overrides("jetson_arm", {}) == {}
    # The config's precision (fp16, for TensorRT) does not carry over to another backend or device.
    assert overrides("jetson_arm", {"backend": "onnxruntime", "device": "cpu"}) == {
        "policy_node": {"backend": "onnxruntime", "device": "cpu", "precision": "fp32"}}
    assert overrides("jetson_arm", {"device": "cpu", "precision": "int8"})["policy_node"]["precision"] == "int8"


def test_launch_refuses_a_graph_without_a_model():
    from dream_vla_ros.bringup import describe
    from dream_vla_ros.launch_support import check_model

    with pytest.raises(ConfigError, match="policy_node: no model: pass model:="):
        check_model(describe("jetson_arm"))
    check_model(describe("jetson_arm", overrides={"policy_node": {"model": "/m"}}))
    check_model(describe("sim_arm", only=("sim_arm",)))


def test_compressed_topics_are_recognised():
    assert is_compressed_topic("camera/image_raw/compressed")
    assert not is_compressed_topic("camera/image_raw")


def test_literal_fields_map_to_string_parameters():
    params = pytest.importorskip("dream_vla_ros.nodes.params")
    from rcl_interfaces.msg import ParameterType

    assert params.parameter_type(typing.Literal["a", "b"]) == ParameterType.PARAMETER_STRING
    assert params.parameter_type(tuple[float, ...]) == ParameterType.PARAMETER_DOUBLE_ARRAY
    with pytest.raises(ConfigError):
        params.parameter_type(dict)


# -- engines -------------------------------------------------------------------------------------------------
def test_loader_refuses_unknown_backends_and_missing_models(tmp_path):
    from dream_vla_ros.engines.loader import load_engine

    with pytest.raises(CheckpointError, match="no model given"):
        load_engine("")
    with pytest.raises(CheckpointError, match="not found"):
        load_engine(tmp_path / "nothing")
    with pytest.raises(EngineError, match="unknown backend 'tensorflow'; available: onnxruntime, tensorrt, torch"):
        load_engine(tmp_path, "tensorflow")
    with pytest.raises(EngineError, match="unavailable"):
        load_engine(tmp_path, "no_such_module:Engine")


def test_loader_reports_corrupt_checkpoints(tmp_path):
    pytest.importorskip("torch")
    from dream_vla_ros.engines.loader import load_engine

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_engine(tmp_path, "torch")


def test_torch_engine_runs_the_tiny_preset_and_checks_settings(tmp_path):
    pytest.importorskip("torch")
    from dream_vla_ros.engines.base import Engine, dummy_observation, warm_up
    from dream_vla_ros.engines.loader import load_engine
    from dream_vla_ros.policy.checkpoint import save_checkpoint
    from dream_vla_ros.policy.config import preset
    from dream_vla_ros.policy.model import build_model

    save_checkpoint(build_model(preset("tiny")), tmp_path)
    engine = load_engine(tmp_path, "torch", threads=1, halting_k_max=3)
    assert isinstance(engine, Engine)
    assert engine.metadata.joint_names == ("joint_a", "joint_b", "gripper") and engine.metadata.chunk_length == 4
    warm_up(engine, 1)
    prediction = engine.infer(dummy_observation(engine.metadata, "pick"))
    assert prediction.positions.shape == (4, 3) and 1 <= prediction.iterations <= 3
    with pytest.raises(EngineError, match="unknown setting 'gpu'"):
        load_engine(tmp_path, "torch", gpu=True)
    with pytest.raises(EngineError, match="precision"):
        load_engine(tmp_path, "torch", precision="int4")
