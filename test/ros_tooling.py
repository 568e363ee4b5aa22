"""The ROS 2 command-line tooling for the tests: ``ros2 launch``, ``ros2 topic``, ``ros2 lifecycle``, ``ros2 param``.

PyPI has the ROS 2 runtime wheels (rclpy, messages) but not ``launch``, ``launch_ros`` or the ``ros2`` command.
Where ``../shared/ros2_python`` exists (development machines and CI), :func:`install` puts its upstream
Jazzy sources into this venv, the way a ROS install would have them:

- the pure-Python packages with ``pip install --no-deps`` (their setup files name ROS packages by their ROS
  names), from a temporary copy (the folder is read-only and pip builds in the source tree), plus the PyPI
  modules they import that are missing here;
- the interface package ``composition_interfaces`` (``launch_ros.actions`` imports it), built with cmake
  into the venv prefix by :func:`control_msgs_build.build_package`;
- this package's share directory as ``colcon build --symlink-install`` would lay it out:
  ``share/dream_vla_ros/{package.xml,launch,config,models}``, the ament index marker and one executable per
  node in ``lib/dream_vla_ros/``, all links into the checkout (edits take effect without reinstalling).

A stamp in the venv records what was installed; a second call with the same sources is a no-op (~10 ms).
Without the folder, :func:`find` falls back to a ``ros2`` on ``PATH`` (a machine with ROS installed and this
package built with colcon), and otherwise says why the tests cannot run. Nothing of the folder is copied into
the project. By hand (``make venv-test`` runs it)::

    .venv/bin/python test/ros_tooling.py          # install (or find) it; prints what `ros2` is used
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "ros2_python"
PACKAGE = "dream_vla_ros"
# The folders of SOURCE installed with pip, in dependency order.
PYTHON_PACKAGES = ("rosidl_runtime_py", "launch", "launch_xml", "launch_yaml", "launch_ros", "ros2cli",
                   "ros2launch", "ros2topic", "ros2node", "ros2lifecycle", "ros2param", "ros2service",
                   "ros2pkg", "ros2run", "ros2action", "ros2interface")
INTERFACE_PACKAGES = ("composition_interfaces",)
# Modules the tooling imports -> the PyPI requirement that provides them (installed only when missing:
# `lark` is already provided by the `lark-parser` wheel that rosidl_parser requires).
PYPI_MODULES = {"osrf_pycommon": "osrf-pycommon", "lark": "lark", "psutil": "psutil",
                "argcomplete": "argcomplete", "packaging": "packaging", "yaml": "PyYAML",
                "catkin_pkg": "catkin-pkg"}


class ToolingUnavailableError(RuntimeError):
    """No usable ``ros2`` here; the message says why (the tests skip with it)."""


@dataclass(frozen=True)
class Tooling:
    """How to run the ``ros2`` command: its argv prefix and the environment variables it needs."""

    ros2: tuple[str, ...]
    env: dict[str, str]
    origin: str  # "shared" (installed from SOURCE into this venv) or "system" (a ros2 on PATH)

    def argv(self, *args: str) -> list[str]:
        return [*self.ros2, *args]


def _stamp_value() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file() and "build" not in p.parts):
        digest.update(f"{path.relative_to(SOURCE).as_posix()}:{path.stat().st_size}\n".encode())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor} {REPO}".encode())
    return digest.hexdigest()[:16]


def _stamp_file(prefix: Path) -> Path:
    return prefix / ".installed-ros2-tooling"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                   check=True)


def _missing_modules() -> list[str]:
    return [req for module, req in PYPI_MODULES.items() if importlib.util.find_spec(module) is None]


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def data_files() -> list[tuple[str, list[str]]]:
    """setup.py's ``data_files`` (what ``colcon build`` installs besides the Python package)."""
    import runpy
    from unittest import mock

    import setuptools

    captured: dict = {}
    cwd = os.getcwd()
    os.chdir(REPO)  # setup.py globs relative to its directory
    try:
        with mock.patch.object(setuptools, "setup", lambda **kwargs: captured.update(kwargs)):
            runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        os.chdir(cwd)
    return captured["data_files"]


def install_share(prefix: Path) -> None:
    """setup.py's data files (``share/dream_vla_ros/...``, the ament index marker) and one executable per node
    in ``lib/dream_vla_ros/``, laid out in ``prefix`` as links into the checkout, file by file, as
    ``colcon build --symlink-install`` does (``ros2 launch`` walks the share directory without following
    directory links)."""
    from dream_vla_ros.bringup import EXECUTABLES

    for own in (prefix / "share" / PACKAGE, prefix / "lib" / PACKAGE):
        shutil.rmtree(own, ignore_errors=True)  # no stale links to files since removed
    for destination, files in data_files():
        for name in files:
            _link(REPO / name, prefix / destination / Path(name).name)
    scripts = Path(sys.executable).parent
    for executable in EXECUTABLES:
        if not (scripts / executable).is_file():
            raise RuntimeError(f"{scripts / executable} is missing: pip install -e . first")
        _link(scripts / executable, prefix / "lib" / PACKAGE / executable)


def install(prefix: Path | None = None) -> bool:
    """Install the tooling from SOURCE into ``prefix`` (default: this venv); False if it already was."""
    import control_msgs_build

    prefix = Path(sys.prefix) if prefix is None else prefix
    stamp = _stamp_value()
    stamp_file = _stamp_file(prefix)
    with control_msgs_build._locked(prefix / ".ros2-tooling.lock"):
        install_share(prefix)  # cheap, and follows added or removed launch/config files
        if stamp_file.is_file() and stamp_file.read_text().strip() == stamp:
            return False
        missing = control_msgs_build.missing_tools(prefix)
        if missing:
            raise ToolingUnavailableError("cannot build composition_interfaces: missing " + ", ".join(missing))
        print(f"[ros-tooling] installing the ROS 2 launch/CLI tooling from {SOURCE} into {prefix}", flush=True)
        needs = _missing_modules()
        if needs:
            _pip(*needs)
        with tempfile.TemporaryDirectory(prefix="ros2_tooling_") as work:
            copies = []
            for name in PYTHON_PACKAGES:
                copy = Path(work) / name
                shutil.copytree(SOURCE / name, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
                for path in copy.rglob("*"):  # the source is read-only; pip writes next to it
                    path.chmod(path.stat().st_mode | 0o200)
                copy.chmod(copy.stat().st_mode | 0o200)
                copies.append(str(copy))
            _pip("--no-deps", "--no-build-isolation", *copies)
            for name in INTERFACE_PACKAGES:
                control_msgs_build.build_package(SOURCE / name, Path(work) / f"{name}-build", prefix)
        stamp_file.write_text(stamp + "\n")
        return True


def _ament_prefix_path(prefix: Path) -> str:
    paths = [str(prefix), *filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(paths))


def find() -> Tooling:
    """The ``ros2`` to test with: installed from SOURCE when it exists, else the system's (ToolingUnavailableError
    with the reason when there is none, or when it cannot find this package)."""
    if SOURCE.is_dir():
        install()
        prefix = Path(sys.prefix)
        return Tooling((sys.executable, str(Path(sys.executable).parent / "ros2")),
                       {"AMENT_PREFIX_PATH": _ament_prefix_path(prefix)}, "shared")
    ros2 = shutil.which("ros2")
    if ros2 is None:
        raise ToolingUnavailableError(f"no {SOURCE} and no `ros2` on PATH (source a ROS 2 install)")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if subprocess.run([ros2, "pkg", "prefix", PACKAGE], capture_output=True, timeout=60).returncode == 0:
            return Tooling((ros2,), {}, "system")
    raise ToolingUnavailableError(f"`ros2` on PATH does not know {PACKAGE}: colcon build it and source "
                                  "install/setup.bash")


def main() -> int:
    try:
        tooling = find()
    except ToolingUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ros2 ({tooling.origin}): {' '.join(tooling.ros2)}")
    for key, value in tooling.env.items():
        print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
