"""What this machine offers the package: ROS distribution, inference backends, shipped models."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
from typing import Any

from dream_vla_ros import __version__
from dream_vla_ros.paths import find_models

# rclpy major version -> ROS 2 distribution (for environments where ROS_DISTRO is not set, e.g. pip wheels).
_RCLPY_MAJOR_TO_DISTRO = {3: "humble", 4: "iron", 7: "jazzy", 9: "kilted", 10: "rolling"}


def ros_distro() -> str | None:
    """The ROS 2 distribution in use: ``$ROS_DISTRO``, else inferred from the rclpy version, else None."""
    if os.environ.get("ROS_DISTRO"):
        return os.environ["ROS_DISTRO"]
    for dist in ("ros-rclpy", "rclpy"):
        try:
            major = int(importlib.metadata.version(dist).split(".")[0])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
        return _RCLPY_MAJOR_TO_DISTRO.get(major, f"unknown (rclpy {major}.x)")
    return None


def _try_import(name: str) -> tuple[Any | None, str]:
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # noqa: BLE001 - any import failure means the backend is unavailable
        return None, f"{name} not importable: {type(exc).__name__}: {exc}".splitlines()[0]


def backend_availability() -> dict[str, dict[str, Any]]:
    """Backend name -> {"available": bool, "reason": str} for torch (CPU/CUDA), ONNX Runtime, TensorRT."""
    out: dict[str, dict[str, Any]] = {}
    torch, why = _try_import("torch")
    out["torch"] = {"available": torch is not None, "reason": f"torch {torch.__version__}" if torch else why}
    if torch is None:
        out["torch-cuda"] = {"available": False, "reason": why}
    elif torch.cuda.is_available():
        out["torch-cuda"] = {"available": True, "reason": f"CUDA device: {torch.cuda.get_device_name(0)}"}
    else:
        out["torch-cuda"] = {"available": False, "reason": "torch has no usable CUDA device here"}
    ort, why = _try_import("onnxruntime")
    if ort is None:
        out["onnxruntime"] = {"available": False, "reason": why}
    else:
        providers = ort.get_available_providers()
        out["onnxruntime"] = {"available": True, "reason": f"onnxruntime {ort.__version__}: {', '.join(providers)}"}
    trt, why = _try_import("tensorrt")
    if trt is None:
        out["tensorrt"] = {"available": False, "reason": why}
    elif torch is None or not torch.cuda.is_available():
        out["tensorrt"] = {"available": False, "reason": f"tensorrt {trt.__version__} found but no CUDA device"}
    else:
        out["tensorrt"] = {"available": True, "reason": f"tensorrt {trt.__version__}"}
    return out


def collect_info() -> dict[str, Any]:
    """Everything ``dream-vla-ros info`` reports, as one JSON-ready mapping."""
    return {
        "version": __version__,
        "python": platform.python_version(),
        "ros_distro": ros_distro(),
        "backends": backend_availability(),
        "models": [str(p) for p in find_models()],
    }
