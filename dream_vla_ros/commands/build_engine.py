"""Build (or verify) the TensorRT engines of an ONNX export, in the engine cache.

Each graph the runtime needs (encode, step) gets a plan keyed by the graph's bytes, the TensorRT version, the
GPU name and compute capability, the precision, the optimisation profile and the builder settings. A cached
plan with the same key is verified (SHA-256) and reused; otherwise it is built, and the reason (which part of
the key changed) is printed. The policy node's tensorrt backend then loads the cached plans without building.
Needs TensorRT 8.5/8.6 or 10.x with its Python bindings and a CUDA GPU; without them it stops with one line
saying what is missing.

examples:
  dream-vla-ros build-engine --onnx models/metaworld_mt10/onnx --precision fp16
  dream-vla-ros build-engine --onnx /data/engines/my_arm --cache /data/trt_cache --force
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, help="export directory (or a checkpoint with an onnx/ export)")
    parser.add_argument("--precision", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--cache", default="", help="engine cache directory (default ~/.cache/dream_vla_ros/tensorrt)")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N")
    parser.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace limit")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimisation level 0..5")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache has the engine")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dream_vla_ros.engines.engine_cache import EngineCache
    from dream_vla_ros.engines.manifest import load_export
    from dream_vla_ros.engines.tensorrt_engine import (
        BuildSettings,
        build_engines,
        default_engine_cache,
        import_tensorrt,
    )

    import_tensorrt()  # fail first, in one line, when TensorRT is missing
    settings = BuildSettings(args.precision, args.workspace_mib, args.opt_level)
    export = load_export(args.onnx)
    cache = EngineCache(Path(args.cache) if args.cache else default_engine_cache())
    entries = build_engines(export, cache, settings, device=args.device, force=args.force, log=print)
    for role, entry in entries.items():
        print(f"{role}: {entry.plan} ({entry.info.get('plan_bytes', 0) / 1e6:.1f} MB)")
    return 0
