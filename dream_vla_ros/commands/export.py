"""Export a checkpoint to split ONNX graphs with a manifest (for the onnxruntime and tensorrt backends).

Writes encode.onnx (vision + trunk + prelude + the core's context keys/values), step.onnx (one core iteration,
its decode and the halting change scalar), coda.onnx, and manifest.json (SHA-256 of every file, opset, input
and output specs, the model config, the package version, TensorRT op coverage), and parity_samples.npz
(observations with their ONNX Runtime FP32 decode: FP16 TensorRT engines are checked against it). Every graph
is checked with onnx.checker and shape inference and compared with torch in ONNX Runtime before it is kept.

Opset 17 (default) to 20 (TensorRT 10.x, JetPack 6.1/6.2).
--int8-encoder adds encode_int8.onnx (dynamic int8 MatMul/Gemm; ONNX Runtime CPU only) and its measured
accuracy against fp32.

examples:
  dream-vla-ros export --model models/metaworld_mt10                  # -> models/metaworld_mt10/onnx
  dream-vla-ros export --model runs/my_arm --out /data/engines/my_arm --int8-encoder
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (or shipped model name)")
    parser.add_argument("--out", default="", help="export directory (default: MODEL/onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..20")
    parser.add_argument("--int8-encoder", action="store_true", help="also write the int8 encode graph")
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch of the optimisation profiles")
    parser.add_argument("--no-simplify", action="store_true", help="keep the exporter's graphs as they are")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from dream_vla_ros.engines.export import export_model, planned_graphs
    from dream_vla_ros.paths import resolve_model
    from dream_vla_ros.policy.checkpoint import load_model_config

    model_dir = resolve_model(args.model)
    config = load_model_config(model_dir)
    out = Path(args.out) if args.out else model_dir / "onnx"
    roles = planned_graphs(config.decoder.kind, args.int8_encoder)
    with tqdm(total=len(roles), unit="graph", disable=args.no_progress, dynamic_ncols=True) as bar:
        export = export_model(model_dir, out, opset=args.opset, int8_encoder=args.int8_encoder,
                              max_batch=args.max_batch, simplify=not args.no_simplify, progress=bar)
    print(f"exported {model_dir} -> {export.directory} (opset {export.opset}, batch "
          f"{export.batch.min}..{export.batch.max})")
    for spec in export.graphs.values():
        notes = spec.notes
        line = f"  {spec.file:<18} {notes.get('nodes', '?'):>5} nodes"
        if "parity_max_abs_vs_torch_batch2" in notes:
            line += f", parity vs torch {notes['parity_max_abs_vs_torch_batch2']:.1e}"
        if "accuracy" in notes:
            acc = notes["accuracy"]
            line += (f", int8 vs fp32: max {acc['max_abs']:.2e}, relative {acc['relative']:.2%}, "
                     f"same k {acc['same_k_fraction']:.0%}")
        print(line)
    for target, problems in export.document["tensorrt_op_coverage"].items():
        print(f"  {target}: {'ok' if not problems else '; '.join(problems)}")
    return 0
