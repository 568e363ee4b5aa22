"""Memory of the policy process per backend: each backend loads the model in a fresh Python process.

Per backend, the resident set size (``VmRSS`` in ``/proc/self/status``) after the interpreter started with
numpy, after the backend's libraries were imported, after the engine was loaded, and after warm-up plus
``--chunks`` inferences, and the peak (``VmHWM``). On a CUDA device also torch's allocator peak and the device
memory the engine added once torch's CUDA context existed (``cudaMemGetInfo`` before loading and after the
inferences: weights, libraries' workspaces, TensorRT engines and contexts; on a Jetson that memory is the same
LPDDR the CPU uses). Backends that
cannot run here are listed with the reason. The model is exported once (fp32 graphs, the int8 encoder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# name -> (backend, settings, source: "model" or "onnx")
CANDIDATES: dict[str, tuple[str, dict[str, Any], str]] = {
    "torch_cpu_fp32": ("torch", {"device": "cpu"}, "model"),
    "onnxruntime_cpu_fp32": ("onnxruntime", {"device": "cpu"}, "onnx"),
    "onnxruntime_cpu_int8": ("onnxruntime", {"device": "cpu", "precision": "int8"}, "onnx"),
    "torch_cuda_fp32_graphs": ("torch", {"device": "cuda"}, "model"),
    "torch_cuda_fp16_graphs": ("torch", {"device": "cuda", "precision": "fp16"}, "model"),
    "onnxruntime_cuda_fp32": ("onnxruntime", {"device": "cuda", "fallback": False}, "onnx"),
    "tensorrt_fp16": ("tensorrt", {"device": "cuda", "precision": "fp16"}, "onnx"),
}
IMPORTS = {"torch": "torch", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="metaworld_mt10", help="checkpoint directory or shipped model name")
    parser.add_argument("--chunks", type=int, default=20, help="inferences after warm-up")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and ONNX Runtime")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def child(backend: str, source: str, settings: dict[str, Any], chunks: int, threads: int) -> dict[str, Any]:
    """Runs in the fresh process: load, infer, measure (see the module doc)."""
    import importlib

    import numpy as np  # noqa: F401 - part of the baseline every backend pays

    out: dict[str, Any] = {"rss_mib_start": _status_mib("VmRSS")}
    importlib.import_module(IMPORTS[backend])
    out["rss_mib_imported"] = _status_mib("VmRSS")
    cuda = settings.get("device", "cpu").startswith("cuda")
    torch = sys.modules.get("torch")
    if cuda:
        import torch

        torch.cuda.init()
        free_before, total = torch.cuda.mem_get_info()
    from dream_vla_ros.engines.base import dummy_observation, warm_up
    from dream_vla_ros.engines.loader import load_engine

    if torch is not None:
        torch.set_num_threads(threads)
    if backend != "tensorrt":
        settings = {**settings, "threads": threads}
    engine = load_engine(source, backend, **settings)
    out["engine"] = engine.name
    out["rss_mib_loaded"] = _status_mib("VmRSS")
    warm_up(engine, 2)
    observation = dummy_observation(engine.metadata)
    for _ in range(chunks):
        engine.infer(observation)
    out["rss_mib_after_inference"] = _status_mib("VmRSS")
    out["rss_mib_peak"] = _status_mib("VmHWM")
    if cuda:
        free_after, _ = torch.cuda.mem_get_info()
        out["cuda_torch_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["cuda_added_by_engine_mib"] = round((free_before - free_after) / 2**20, 1)
        out["cuda_total_mib"] = round(total / 2**20, 1)
    return out


_CHILD = ("import json, sys\nfrom dream_vla_ros.benchmarks.memory import child\n"
          "print('RESULT ' + json.dumps(child(**json.loads(sys.argv[1]))))\n")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dream_vla_ros.engines.export import export_model
    from dream_vla_ros.errors import ConfigError
    from dream_vla_ros.paths import resolve_model

    if args.chunks < 1 or args.threads < 1:
        raise ConfigError("--chunks and --threads must be >= 1")
    model = resolve_model(args.model)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        onnx = Path(tmp) / "onnx"
        export_model(model, onnx, int8_encoder=True)
        for name, (backend, settings, source) in CANDIDATES.items():
            if backend == "tensorrt":
                settings = {**settings, "cache_dir": str(Path(tmp) / "trt_cache")}
            payload = {"backend": backend, "source": str(model if source == "model" else onnx),
                       "settings": settings, "chunks": args.chunks, "threads": args.threads}
            proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(payload)], capture_output=True,
                                  text=True, timeout=1800)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode == 0 and lines:
                results[name] = {"available": True, **json.loads(lines[-1][len("RESULT "):])}
            else:
                error = [line for line in proc.stderr.strip().splitlines() if line.strip()] or ["no output"]
                results[name] = {"available": False, "reason": error[-1][:300]}
    return {"model": str(args.model), "chunks": args.chunks, "threads": args.threads, "backends": results}


def summary(result: dict[str, Any]) -> str:
    lines = [f"memory: {result['model']}, {result['chunks']} chunks after warm-up, {result['threads']} thread(s)"]
    for name, r in result["backends"].items():
        if not r["available"]:
            lines.append(f"  {name:<24} unavailable: {r['reason']}")
            continue
        line = (f"  {name:<24} RSS MiB: start {r['rss_mib_start']}, imported {r['rss_mib_imported']}, loaded "
                f"{r['rss_mib_loaded']}, after inference {r['rss_mib_after_inference']}, peak {r['rss_mib_peak']}")
        if "cuda_added_by_engine_mib" in r:
            line += (f"; CUDA: torch peak {r['cuda_torch_peak_allocated_mib']} MiB, added by the engine "
                     f"{r['cuda_added_by_engine_mib']} MiB")
        lines.append(line)
    return "\n".join(lines)
