"""colcon builds the package into a workspace the way a robot does: executables, share files, ament index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dream_vla_ros.bringup import EXECUTABLES
from dream_vla_ros.paths import share_dir

ROOT = share_dir()


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if (ROOT / line).is_file()]


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists() or shutil.which("git") is None:
        pytest.skip("colcon (dev extra) or git not installed")
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "dream_vla_ros"
    for rel in tracked_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    env = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
    result = subprocess.run([str(colcon), "build", "--base-paths", "src"], cwd=ws, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ws / "install" / "dream_vla_ros"


def test_executables_land_in_lib(colcon_install):
    lib = colcon_install / "lib" / "dream_vla_ros"
    for name in [*EXECUTABLES, "dream-vla-ros"]:
        assert (lib / name).is_file(), f"{name} missing from {lib}"
        assert os.access(lib / name, os.X_OK)


def test_launch_config_and_models_land_in_share(colcon_install):
    share = colcon_install / "share" / "dream_vla_ros"
    for sub in ("launch", "config"):
        shipped = sorted(p.name for p in (ROOT / sub).iterdir() if p.is_file())
        assert shipped and sorted(p.name for p in (share / sub).iterdir()) == shipped
    for model_file in (ROOT / "models").glob("*/*"):
        assert (share / model_file.relative_to(ROOT)).is_file()
    assert (share / "package.xml").is_file()


def test_ament_index_finds_the_package(colcon_install):
    code = ("from ament_index_python.packages import get_package_share_directory as g; "
            "print(g('dream_vla_ros'))")
    env = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
    env["AMENT_PREFIX_PATH"] = str(colcon_install)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == colcon_install / "share" / "dream_vla_ros"
