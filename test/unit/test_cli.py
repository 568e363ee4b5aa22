"""The command line: every listed subcommand has --help; info reports the environment; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dream_vla_ros.cli import COMMANDS, build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dream_vla_ros.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_every_subcommand_has_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: dream-vla-ros " + name in capsys.readouterr().out


def test_info_json_schema():
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert {"version", "ros_distro", "backends", "models"} <= set(info)
    assert info["backends"]["torch"]["available"] is True
    for backend in info["backends"].values():
        assert isinstance(backend["available"], bool) and backend["reason"]
    assert isinstance(info["models"], list)


def test_info_detects_ros_distro_from_rclpy(monkeypatch):
    pytest.importorskip("rclpy")
    from dream_vla_ros.environment_report import ros_distro

    monkeypatch.delenv("ROS_DISTRO", raising=False)
    assert ros_distro() in {"humble", "iron", "jazzy", "kilted", "rolling"}
    monkeypatch.setenv("ROS_DISTRO", "humble")
    assert ros_distro() == "humble"


def test_up_with_bad_config_prints_one_line_and_starts_nothing(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert main(["up", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dream-vla-ros up: error: config file not found: {missing}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("ghost_node:\n  ros__parameters: {}\n")
    assert main(["up", str(bad)]) == 2
    assert "unknown node 'ghost_node'" in capsys.readouterr().err


def test_up_rejects_malformed_override(capsys):
    assert main(["up", "whatever", "--set", "no_equals_sign"]) == 2
    assert "expected NODE.PARAM:=VALUE" in capsys.readouterr().err


def test_dataset_merge_refusal_is_one_line(tmp_path, capsys):
    assert main(["dataset", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dream-vla-ros dataset: error: {tmp_path / 'a'}: no meta.json (not a dataset directory)"
