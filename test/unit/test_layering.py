"""The layer table of CONTRIBUTING.md, enforced: importing every module of a layer (in a fresh interpreter)
loads none of the modules that layer may not depend on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PACKAGE = "dream_vla_ros"
ROS = ("rclpy",)
RUNTIMES = ("onnxruntime", "tensorrt")
SIMULATOR = ("mujoco", "metaworld")
UPPER = tuple(f"{PACKAGE}.{layer}" for layer in ("nodes", "record", "train", "evaluation", "benchmarks", "commands"))

# layer -> modules (top-level names or package modules) that importing the whole layer must not load
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "chunking": ("torch", "cv2", "matplotlib", *ROS, *RUNTIMES, *SIMULATOR, f"{PACKAGE}.policy",
                 f"{PACKAGE}.engines", f"{PACKAGE}.sim", *UPPER),
    "policy": ("matplotlib", *ROS, *RUNTIMES, *SIMULATOR, f"{PACKAGE}.engines", f"{PACKAGE}.chunking",
               f"{PACKAGE}.sim", *UPPER),
    "engines": ("matplotlib", *ROS, *SIMULATOR, f"{PACKAGE}.chunking", f"{PACKAGE}.sim", *UPPER),
    "sim": ("torch", "matplotlib", *ROS, *RUNTIMES, f"{PACKAGE}.engines", f"{PACKAGE}.chunking", *UPPER),
    "record": ("torch", "matplotlib", *RUNTIMES, *SIMULATOR, f"{PACKAGE}.train", f"{PACKAGE}.evaluation",
               f"{PACKAGE}.benchmarks", f"{PACKAGE}.commands"),
    "train": ("matplotlib", *ROS, *RUNTIMES, f"{PACKAGE}.nodes", f"{PACKAGE}.evaluation", f"{PACKAGE}.benchmarks",
              f"{PACKAGE}.commands", f"{PACKAGE}.bringup", f"{PACKAGE}.process_group"),
    "nodes": ("matplotlib", f"{PACKAGE}.train", f"{PACKAGE}.evaluation", f"{PACKAGE}.benchmarks",
              f"{PACKAGE}.commands"),
    "evaluation": (f"{PACKAGE}.benchmarks", f"{PACKAGE}.commands"),
}
# Modules documented as numpy-only inside a layer that may use torch.
NUMPY_ONLY = {f"{PACKAGE}.policy.observation": ("torch", "cv2"), f"{PACKAGE}.policy.preprocess": ("torch", "cv2")}

_PROBE = """
import importlib, json, pkgutil, sys
target = sys.argv[1]
module = importlib.import_module(target)
if hasattr(module, "__path__"):
    for info in pkgutil.walk_packages(module.__path__, target + "."):
        importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(module: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"importing {module} failed:\n{out.stderr[-3000:]}"
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _violations(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f for f in forbidden if any(m == f or m.startswith(f + ".") for m in loaded))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_loads_nothing_its_row_forbids(layer):
    assert _violations(_loaded(f"{PACKAGE}.{layer}"), FORBIDDEN[layer]) == []


@pytest.mark.parametrize("module", sorted(NUMPY_ONLY))
def test_numpy_only_modules_load_neither_torch_nor_opencv(module):
    assert _violations(_loaded(module), NUMPY_ONLY[module]) == []


def test_the_check_sees_a_forbidden_import():
    assert _violations({"numpy", "rclpy.node", f"{PACKAGE}.nodes.qos"}, ("torch", *ROS, f"{PACKAGE}.nodes")) == [
        f"{PACKAGE}.nodes", "rclpy"]
