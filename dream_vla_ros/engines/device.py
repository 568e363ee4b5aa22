"""What identifies the GPU a TensorRT plan was built for (standard library only; torch is passed in).

``torch.cuda.get_device_name`` says "Orin" on every Jetson Orin module (AGX, NX, Nano: all sm 8.7), so a plan
built on an AGX would look valid on an NX. :class:`DeviceIdentity` adds what does tell them apart: the SM count
and memory size of the CUDA device, the board model in ``/proc/device-tree/model`` and the L4T release in
``/etc/nv_tegra_release`` (both absent on desktop GPUs: empty strings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dream_vla_ros.errors import EngineError

_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


@dataclass(frozen=True)
class DeviceIdentity:
    """gpu: CUDA device name; compute_capability: "major.minor"; sm_count: streaming multiprocessors;
    memory_mib: device memory (on a Jetson the unified memory: 64 GB and 32 GB AGX modules differ here);
    module: the board model ("" off Jetson); l4t: the L4T release such as "R36.4.3" ("" off Jetson)."""

    gpu: str
    compute_capability: str
    sm_count: int
    memory_mib: int
    module: str = ""
    l4t: str = ""

    def describe(self) -> str:
        """One line for logs and /diagnostics."""
        board = f", {self.module}" if self.module else ""
        release = f", L4T {self.l4t}" if self.l4t else ""
        return (f"{self.gpu} (sm {self.compute_capability}, {self.sm_count} SMs, {self.memory_mib} MiB{board}"
                f"{release})")


def board_model(root: Path = Path("/")) -> str:
    """``/proc/device-tree/model`` without its trailing NUL, or "" where there is none (not a Jetson)."""
    try:
        return (root / "proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return ""


def l4t_release(root: Path = Path("/")) -> str:
    """The L4T release of ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.3, ...`` -> ``R36.4.3``),
    or "" where the file is absent or unreadable."""
    try:
        text = (root / "etc/nv_tegra_release").read_text(errors="replace")
    except OSError:
        return ""
    match = _L4T.search(text)
    return f"R{match.group(1)}.{match.group(2)}" if match else ""


def cuda_identity(torch: Any, index: int, root: Path = Path("/")) -> DeviceIdentity:
    """The identity of CUDA device ``index`` (``torch`` with CUDA) on the machine whose root is ``root``."""
    if not torch.cuda.is_available():
        raise EngineError("no CUDA device is available (torch.cuda.is_available() is False)")
    if index >= torch.cuda.device_count():
        raise EngineError(f"cuda:{index} requested, {torch.cuda.device_count()} CUDA device(s) present")
    props = torch.cuda.get_device_properties(index)
    return DeviceIdentity(
        gpu=str(props.name),
        compute_capability=f"{props.major}.{props.minor}",
        sm_count=int(props.multi_processor_count),
        memory_mib=int(props.total_memory) >> 20,
        module=board_model(root),
        l4t=l4t_release(root),
    )
