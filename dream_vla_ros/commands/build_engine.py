"""Build (or verify) the TensorRT engines of an ONNX export in the engine cache, ahead of a launch.

Each graph the runtime needs (encode, step) gets a plan keyed by the graph's bytes, the TensorRT version, the
device (GPU name, compute capability, SM count, memory, Jetson board model and L4T release), the precision,
the optimisation profile, the builder settings and the build recipe's version. A cached plan with the same
key is verified (SHA-256) and reused; otherwise it is built, and the reason (which part of the key changed)
is printed. FP16 engines are then checked against the export's ONNX Runtime FP32 samples (same k, change
error below delta/10, chunk error within a stated bound); the result is stored next to the plans. A failing
set is refused, by this command and by every launch, unless --accept-parity-failure records that you accept
it. The policy node's tensorrt backend then loads the cached plans without building (engine_on_miss: error
makes it refuse a miss instead of building for minutes). Needs TensorRT 10.x with its Python bindings and a
CUDA GPU (JetPack 6.1/6.2); without them it stops with one line saying what is missing.

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
    parser.add_argument("--accept-parity-failure", action="store_true",
                        help="accept FP16 engines that fail the parity check (recorded with your user name)")


def main(args: argparse.Namespace) -> int:
    from dream_vla_ros.engines.tensorrt_build import import_tensorrt
    from dream_vla_ros.engines.tensorrt_engine import TensorRtEngine

    import_tensorrt()  # fail first, in one line, when TensorRT is missing
    engine = TensorRtEngine(args.onnx, device=args.device, precision=args.precision, cache_dir=args.cache,
                            force_build=args.force, workspace_mib=args.workspace_mib,
                            optimization_level=args.opt_level, accept_parity_failure=args.accept_parity_failure,
                            progress=print)
    print(engine.name)
    for key, value in engine.status.items():
        print(f"  {key}: {value}")
    return 0
