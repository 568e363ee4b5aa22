"""Bringup: config files describe the node graph that `up` and the launch files start."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from dream_vla_ros import bringup, launch_support
from dream_vla_ros.paths import config_dir, share_dir

ROOT = share_dir()


def setup_py_node_executables() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODE_EXECUTABLES":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no NODE_EXECUTABLES")


def test_setup_py_declares_exactly_the_bringup_executables():
    declared = setup_py_node_executables()
    assert set(declared) == set(bringup.EXECUTABLES)
    for name, module in bringup.EXECUTABLES.items():
        assert declared[name] == f"{module}:main"
        assert callable(importlib.import_module(module).main)


@pytest.mark.parametrize("config", sorted(p.stem for p in config_dir().glob("*.yaml")))
def test_shipped_configs_describe_known_nodes(config):
    graph = bringup.describe(config, namespace="arm", use_sim_time=True)
    assert graph.nodes
    for node in graph.nodes:
        assert node.executable in bringup.EXECUTABLES
        args = node.ros_args()
        assert args[:3] == ["--ros-args", "-r", f"__node:={node.name}"]
        assert args[3:5] == ["-r", "__ns:=/arm"]
        assert "use_sim_time:=true" in args


def test_describe_custom_graph(tmp_path, monkeypatch):
    monkeypatch.setitem(bringup.EXECUTABLES, "talker", "some.module")
    path = tmp_path / "g.yaml"
    path.write_text("/**:\n  ros__parameters: {}\ntalker:\n  ros__parameters:\n    rate: 2.0\n")
    graph = bringup.describe(path, overrides={"talker": {"rate": 5.0, "names": ["a", "b"]}})
    (node,) = graph.nodes
    assert node.module == "some.module"
    args = node.ros_args()
    assert args[args.index("--params-file") + 1] == str(path)
    assert "rate:=5.0" in args and "names:=[a,b]" in args
    kwargs = launch_support.node_kwargs(graph)[0]
    assert kwargs["executable"] == "talker" and kwargs["parameters"][0] == str(path)


def test_scoped_params_files_reach_namespaced_nodes(tmp_path):
    import yaml

    plain = bringup.describe("sim_arm")
    assert bringup.scoped(plain, tmp_path) is plain
    graph = bringup.scoped(bringup.describe("sim_arm", namespace="arm"), tmp_path)
    (path,) = {node.params_file for node in graph.nodes}
    document = yaml.safe_load(path.read_text())
    original = yaml.safe_load((config_dir() / "sim_arm.yaml").read_text())
    assert document == {f"/**/{key}": value for key, value in original.items()}


def test_dds_profile_only_for_fast_dds():
    assert bringup.dds_environment({})["FASTDDS_DEFAULT_PROFILES_FILE"].endswith(bringup.FASTDDS_PROFILE)
    assert (config_dir() / bringup.FASTDDS_PROFILE).is_file()
    assert bringup.dds_environment({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {}
    assert bringup.dds_environment({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}


@pytest.mark.parametrize("launch_file", sorted((ROOT / "launch").glob("*.launch.py")), ids=lambda p: p.name)
def test_launch_files_are_thin_wrappers_over_existing_configs(launch_file: Path):
    """What can be checked without launch_ros: syntax, the generator used, and that the config exists."""
    tree = ast.parse(launch_file.read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "generate"]
    assert len(calls) == 1
    config = calls[0].args[0].value
    assert (config_dir() / f"{config}.yaml").is_file()
    assert launch_file.name == f"{config}.launch.py"
    bringup.describe(config)
