"""Typed configuration: YAML and ROS-parameter views of the same dataclasses, with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dream_vla_ros.configuration import (
    field_types,
    flatten,
    from_mapping,
    load_node_config,
    read_yaml,
    require,
    to_mapping,
    unflatten,
    write_params_file,
)
from dream_vla_ros.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    max_velocity: float = 1.0
    joints: tuple[str, ...] = ("a", "b")

    def __post_init__(self) -> None:
        require(self.max_velocity > 0, "max_velocity", f"must be > 0 rad/s, got {self.max_velocity}")


@dataclass(frozen=True)
class Example:
    rate_hz: float = 30.0
    depth: int = 1
    enabled: bool = True
    mode: Literal["replace", "crossfade"] = "replace"
    model: str | None = None
    limits: Limits = field(default_factory=Limits)


def test_defaults_and_round_trip():
    cfg = from_mapping(Example, {"rate_hz": 10, "limits": {"max_velocity": 2.5}})
    assert cfg.rate_hz == 10.0 and isinstance(cfg.rate_hz, float)
    assert cfg.limits == Limits(max_velocity=2.5)
    assert from_mapping(Example, to_mapping(cfg)) == cfg


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"rate": 1.0}, "unknown key rate in Example; valid keys: depth, enabled, limits, mode, model, rate_hz"),
        ({"depth": 1.5}, "depth: expected an integer, got 1.5"),
        ({"depth": True}, "depth: expected an integer, got True"),
        ({"enabled": "yes"}, "enabled: expected true or false, got 'yes'"),
        ({"rate_hz": "fast"}, "rate_hz: expected a number, got 'fast'"),
        ({"rate_hz": float("nan")}, "rate_hz: NaN is not a valid value"),
        ({"mode": "blend"}, "mode: must be one of 'replace', 'crossfade', got 'blend'"),
        ({"limits": {"max_velocity": -1.0}}, "limits.max_velocity: must be > 0 rad/s, got -1.0"),
        ({"limits": {"joints": "a"}}, "limits.joints: expected a list, got 'a'"),
        ({"limits": {"speed": 1}}, "unknown key limits.speed in Limits"),
        ({"limits": 3}, "limits: expected a mapping of Limits fields, got 3"),
    ],
)
def test_bad_values_name_the_key(mapping, message):
    with pytest.raises(ConfigError) as info:
        from_mapping(Example, mapping)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_params_file_sections(tmp_path):
    path = tmp_path / "graph.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    depth: 3\n"
        "my_node:\n  ros__parameters:\n    rate_hz: 5.0\n    limits:\n      max_velocity: 0.5\n"
    )
    cfg = load_node_config(Example, path, "my_node", overrides={"limits.max_velocity": 0.25})
    assert (cfg.depth, cfg.rate_hz, cfg.limits.max_velocity) == (3, 5.0, 0.25)


def test_params_file_writer_repeats_shared_values_for_rcl(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    topics = ["/camera/corner/image_raw", "/camera/topview/image_raw"]
    document = {"arm": {"ros__parameters": {"camera_topics": topics}},
                "recorder": {"ros__parameters": {"camera_topics": topics, "out_dir": "bags"}}}
    path = write_params_file(tmp_path / "graph.yaml", document)
    assert "&" not in path.read_text() and "*" not in path.read_text()
    assert read_yaml(path) == document
    # rcl parses it (it refuses anchors and aliases: "Will not support aliasing").
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context)
    rclpy.shutdown(context=context)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_node_config(Example, tmp_path / "nope.yaml", "my_node")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_node_config(Example, bad, "my_node")
    flat = tmp_path / "flat.yaml"
    flat.write_text("my_node:\n  rate_hz: 1.0\n")
    with pytest.raises(ConfigError, match="must hold a 'ros__parameters' mapping"):
        load_node_config(Example, flat, "my_node")


def test_ros_parameter_schema_is_flat_and_dotted():
    assert field_types(Example)["limits.max_velocity"] is float
    assert set(field_types(Example)) == {"rate_hz", "depth", "enabled", "mode", "model", "limits.max_velocity",
                                         "limits.joints"}


keys = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
leaves = st.one_of(st.integers(), st.booleans(), st.text(max_size=5))
nested = st.recursive(
    st.dictionaries(keys, leaves, min_size=1, max_size=3),
    lambda children: st.dictionaries(keys, st.one_of(leaves, children), min_size=1, max_size=3),
    max_leaves=8,
)


@given(nested)
def test_flatten_unflatten_round_trip(mapping):
    flat = flatten(mapping)
    assert all(not isinstance(v, dict) for v in flat.values())
    assert unflatten(flat) == mapping
