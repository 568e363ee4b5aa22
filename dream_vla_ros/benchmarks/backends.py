"""Every inference backend available here, side by side in one run: latency, stages, k and parity to torch.

The model (``--model``, or a random-init ``--preset``) is exported to a temporary directory (fp32 graphs and
the int8 encoder), then each backend runs the same observations, interleaved round by round so machine load
hits all alike. Backends: torch eager CPU fp32 (the reference), ONNX Runtime CPU fp32 and int8-encoder; with a
CUDA GPU also torch CUDA fp32 eager, torch CUDA fp32 and fp16 with CUDA graphs, ONNX Runtime's CUDA/TensorRT providers
(when this onnxruntime build has them) and the TensorRT backend fp16 (when TensorRT is installed). Backends that
cannot run here are listed with the reason.

Per backend: ``latency_ms_median`` / ``latency_ms_p90`` of a whole chunk (``infer``: preprocessing, encode,
all core iterations with their halting checks, post-processing) at batch 1, the median per stage, ``k_mean``,
and parity to torch on ``--parity-samples`` observations: ``max_abs_diff_vs_torch`` (joint targets, physical
units), ``max_rel_diff_vs_torch`` (per observation max |diff| / max |torch target|) and ``same_k_fraction``.
``ort_over_torch_cpu`` = torch eager median / ONNX Runtime median (CPU, fp32, ``--threads`` threads, 1 by
default; goal >= 1.5 with actions within 1 % and the same k); ``gpu_fastest_over_torch_eager`` = torch CUDA
eager median / the fastest GPU backend's median (goal >= 3; null without a GPU). A random-init model halts
wherever its untrained decode happens to settle, so its k says nothing about a trained model's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

REFERENCE = "torch_cpu_fp32"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint directory (default: random-init --preset)")
    parser.add_argument("--preset", default="sim", help="model preset when no --model: tiny, sim or orin")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and ONNX Runtime")
    parser.add_argument("--repeats", type=int, default=30, help="timed chunks per backend")
    parser.add_argument("--samples", type=int, default=4, help="observations the timed chunks cycle through")
    parser.add_argument("--parity-samples", type=int, default=32, help="observations for parity and k")


def _candidates(work: Path, threads: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, backend, settings) of every backend worth trying here."""
    return [
        (REFERENCE, "torch", {"device": "cpu", "threads": threads}),
        ("onnxruntime_cpu_fp32", "onnxruntime", {"device": "cpu", "threads": threads}),
        ("onnxruntime_cpu_int8", "onnxruntime", {"device": "cpu", "threads": threads, "precision": "int8"}),
        ("torch_cuda_fp32", "torch", {"device": "cuda", "cuda_graphs": False}),
        ("torch_cuda_fp32_graphs", "torch", {"device": "cuda"}),
        ("torch_cuda_fp16_graphs", "torch", {"device": "cuda", "precision": "fp16"}),
        ("onnxruntime_cuda_fp32", "onnxruntime", {"device": "cuda", "fallback": False}),
        ("onnxruntime_tensorrt_fp16", "onnxruntime", {"device": "cuda", "precision": "fp16", "fallback": False}),
        ("tensorrt_fp16", "tensorrt", {"device": "cuda", "precision": "fp16",
                                       "cache_dir": str(work / "trt_cache")}),
    ]


def _stats(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return round(statistics.median(ordered), 3), round(p90, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from dream_vla_ros.engines.export import export_model
    from dream_vla_ros.engines.loader import load_engine
    from dream_vla_ros.errors import ConfigError, DreamVlaError, EngineError
    from dream_vla_ros.paths import resolve_model
    from dream_vla_ros.policy.checkpoint import load_model_config, save_checkpoint
    from dream_vla_ros.policy.config import preset
    from dream_vla_ros.policy.model import build_model
    from dream_vla_ros.policy.synthetic import synthetic_samples

    if min(args.threads, args.repeats, args.samples, args.parity_samples) < 1:
        raise ConfigError("--threads, --repeats, --samples and --parity-samples must be >= 1")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        work = Path(tmp)
        if args.model:
            # A snapshot: a training run may rewrite the checkpoint while the benchmark reads it.
            model_dir = Path(shutil.copytree(resolve_model(args.model), work / "model",
                                             ignore=shutil.ignore_patterns("training_state", "*.jsonl", "*.png")))
            config = load_model_config(model_dir)
            weights = str(args.model)
        else:
            torch.manual_seed(0)
            model_dir = work / "model"
            save_checkpoint(build_model(preset(args.preset), load_pretrained=False), model_dir)
            config = load_model_config(model_dir)
            weights = "random-init"
        export_dir = work / "onnx"
        int8_failure = ""
        try:
            export = export_model(model_dir, export_dir, int8_encoder=config.decoder.kind == "recurrent")
        except EngineError as exc:  # the int8 graph is optional: the other backends still run
            if "encode_int8" not in str(exc):
                raise
            int8_failure = str(exc)
            export = export_model(model_dir, export_dir, int8_encoder=False)
        observations = [s.observation() for s in synthetic_samples(config, max(args.samples, args.parity_samples),
                                                                   np.random.default_rng(3))]
        backends: dict[str, dict[str, Any]] = {}
        engines: dict[str, Any] = {}
        for name, backend, settings in _candidates(work, args.threads):
            source = model_dir if backend == "torch" else export_dir
            if int8_failure and settings.get("precision") == "int8":
                backends[name] = {"available": False, "reason": int8_failure}
                continue
            try:
                engines[name] = load_engine(source, backend, **settings)
                backends[name] = {"available": True, "reason": "", "engine": engines[name].name}
            except DreamVlaError as exc:
                backends[name] = {"available": False, "reason": str(exc).splitlines()[0]}

        # Parity and k: every backend on the same observations, one at a time.
        reference: list[Any] = [engines[REFERENCE].infer(o) for o in observations[: args.parity_samples]]
        for name, engine in engines.items():
            preds = reference if name == REFERENCE else [engine.infer(o) for o in observations[: args.parity_samples]]
            diffs = [float(np.max(np.abs(p.positions - r.positions))) for p, r in zip(preds, reference, strict=True)]
            scale = [max(float(np.max(np.abs(r.positions))), 1e-9) for r in reference]
            backends[name].update(
                k_mean=round(float(np.mean([p.iterations for p in preds])), 3),
                max_abs_diff_vs_torch=float(f"{max(diffs):.3g}"),
                max_rel_diff_vs_torch=float(f"{max(d / s for d, s in zip(diffs, scale, strict=True)):.3g}"),
                same_k_fraction=round(float(np.mean([p.iterations == r.iterations
                                                     for p, r in zip(preds, reference, strict=True)])), 4),
            )

        # Latency: interleaved rounds after two warm-up rounds.
        timed = observations[: args.samples]
        stages: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
        for round_index in range(args.repeats + 2):
            observation = timed[round_index % len(timed)]
            for name, engine in engines.items():
                prediction = engine.infer(observation)
                if round_index >= 2:
                    stages[name].append(prediction.timings_ms)
        for name, records in stages.items():
            median, p90 = _stats([r["total"] for r in records])
            backends[name].update(
                latency_ms_median=median,
                latency_ms_p90=p90,
                stages_ms_median={s: round(statistics.median(r[s] for r in records), 3)
                                  for s in ("preprocess", "trunk", "core", "postprocess") if s in records[0]},
            )
        for entry in backends.values():
            if not entry["available"]:
                entry.update(latency_ms_median=None, latency_ms_p90=None, k_mean=None, max_abs_diff_vs_torch=None)

    def median(name: str) -> float | None:
        return backends[name].get("latency_ms_median") if backends[name]["available"] else None

    ort, ref = median("onnxruntime_cpu_fp32"), median(REFERENCE)
    gpu = [n for n in backends if ("cuda" in n or "tensorrt" in n) and median(n)]
    fastest_gpu = min(gpu, key=lambda n: median(n)) if gpu else None
    eager_gpu = median("torch_cuda_fp32")
    return {
        "model": {"preset": config.preset, "decoder": config.decoder.kind, "weights": weights,
                  "halting": {"delta": config.halting.delta, "k_max": config.halting.k_max,
                              "metric": config.halting.metric}},
        "threads": args.threads,
        "repeats": args.repeats,
        "parity_samples": args.parity_samples,
        "export": {"opset": export.opset,
                   "int8_accuracy": export.graphs["encode_int8"].notes.get("accuracy")
                   if "encode_int8" in export.graphs else None},
        "backends": backends,
        "ort_over_torch_cpu": round(ref / ort, 3) if ort and ref else None,
        "same_k_fraction": backends["onnxruntime_cpu_fp32"].get("same_k_fraction"),
        "gpu_fastest": fastest_gpu,
        "gpu_fastest_over_torch_eager": round(eager_gpu / median(fastest_gpu), 3)
        if fastest_gpu and eager_gpu else None,
    }


def summary(result: dict[str, Any]) -> str:
    model = result["model"]
    lines = [f"backends: {model['preset']} ({model['decoder']}, {model['weights']}), {result['threads']} CPU "
             f"thread(s), {result['repeats']} chunks each, parity on {result['parity_samples']} observations"]
    for name, b in result["backends"].items():
        if not b["available"]:
            lines.append(f"  {name:<26} unavailable: {b['reason']}")
            continue
        stages = ", ".join(f"{k} {v:.2f}" for k, v in b["stages_ms_median"].items())
        lines.append(
            f"  {name:<26} {b['latency_ms_median']:7.2f} ms median, {b['latency_ms_p90']:7.2f} p90 ({stages}); "
            f"k {b['k_mean']}, max diff {b['max_abs_diff_vs_torch']:.2e} ({b['max_rel_diff_vs_torch']:.2%}), "
            f"same k {b['same_k_fraction']:.0%}"
        )
    lines.append(f"  ONNX Runtime / torch eager (CPU fp32): {result['ort_over_torch_cpu']}x, "
                 f"same k {result['same_k_fraction']}")
    if result["gpu_fastest_over_torch_eager"]:
        lines.append(f"  fastest GPU backend {result['gpu_fastest']}: {result['gpu_fastest_over_torch_eager']}x "
                     "torch CUDA eager")
    return "\n".join(lines)
