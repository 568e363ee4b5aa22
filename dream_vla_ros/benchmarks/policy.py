"""Parameters, FLOPs and CPU latency of a policy preset (or of a trained checkpoint with --model).

FLOPs per chunk at batch 1 (``torch.utils.flop_counter``: matmuls, convolutions and attention; a multiply-add
counts 2): ``trunk`` = vision + trunk, ``prelude`` = the prelude and the core's context keys/values (once per
chunk), ``core_iteration`` = one weight-tied core step, ``coda`` = one decode (run every iteration for the
action-change metric). Discrete decoder: ``core_iteration`` = one unmasking step, ``coda`` = 0.

Latency (median ms, batch 1, torch eager on CPU, ``--threads``): ``trunk`` = vision + trunk only;
``adaptive_chunk`` = the whole decode (trunk, prelude, context K/V, core iterations with their decode and
halting check) with the halting rule on; ``kmax_chunk`` = the same with halting off (k_max iterations).
Numpy/OpenCV preprocessing is reported apart. The three are measured interleaved on the same inputs.
With ``--model`` the mean k is measured on synthetic observations; a random-init model has no meaningful
halting, so the adaptive chunk then runs a fixed nominal k (``--k-mean``, default 8 = RD-VLA's mean k at its
best adaptive setting).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Any

DEFAULT_NOMINAL_K = 8.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="sim", help="model preset: tiny, sim or orin")
    parser.add_argument("--model", default=None, help="checkpoint directory (overrides --preset)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=30, help="timed repetitions per measurement")
    parser.add_argument("--k-mean", type=float, default=None, help="run the adaptive chunk at this fixed k")
    parser.add_argument("--samples", type=int, default=4, help="synthetic observations to cycle through")


def _flops(fn: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops(model: Any, images: Any, tokens: Any, proprio: Any) -> dict[str, int]:
    """FLOPs of trunk, prelude, one core iteration and one coda decode at batch 1 (autograd on: the
    counter's module hooks reject no-grad views of parameters)."""
    import torch

    from dream_vla_ros.policy.preprocess import scratchpad_noise

    config = model.config
    flops = {"trunk": _flops(lambda: model.features(images, tokens, proprio))}
    mid, final = model.features(images, tokens, proprio)
    if model.kind == "recurrent":
        decoder = model.recurrent()
        noise = torch.from_numpy(scratchpad_noise([0], config.chunk_length, config.decoder.width))
        flops["prelude"] = _flops(lambda: decoder.prepare(mid, final, proprio, noise))
        state, scratch, kv = decoder.prepare(mid, final, proprio, noise)
        flops["core_iteration"] = _flops(lambda: decoder.step(scratch, state, kv))
        flops["coda"] = _flops(lambda: decoder.decode(scratch))
    else:
        discrete = model.discrete()
        flops["prelude"] = _flops(lambda: discrete.prepare(final, proprio))
        rows, kv = discrete.prepare(final, proprio)
        values = torch.full((1, config.chunk_length, config.num_joints), discrete.mask_id)
        flops["core_iteration"] = _flops(lambda: discrete.logits(values, rows, kv))
        flops["coda"] = 0
    return flops


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from dream_vla_ros.errors import ConfigError
    from dream_vla_ros.policy.checkpoint import load_checkpoint
    from dream_vla_ros.policy.config import preset
    from dream_vla_ros.policy.inference import TorchPolicy
    from dream_vla_ros.policy.model import build_model, count_parameters
    from dream_vla_ros.policy.synthetic import synthetic_samples

    if args.threads < 1 or args.repeats < 1 or args.samples < 1:
        raise ConfigError("--threads, --repeats and --samples must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_checkpoint(args.model) if args.model else build_model(preset(args.preset), load_pretrained=False)
    config = model.config
    policy = TorchPolicy(model)
    halting = policy.halting
    samples = synthetic_samples(config, args.samples, np.random.default_rng(0))
    observations = [s.observation() for s in samples]

    t0 = time.perf_counter()
    inputs = [policy.prepare([o]) for o in observations]
    preprocess_s = (time.perf_counter() - t0) / len(observations)
    tensors = [tuple(torch.from_numpy(a) for a in (i.images, i.tokens, i.proprio)) for i in inputs]

    flops = count_flops(model, *tensors[0])

    # k: measured with trained weights, nominal otherwise (or as given).
    if args.k_mean is not None:
        k_mean, k_source = float(args.k_mean), "given"
    elif args.model:
        ks = [int(policy.decode(i).iterations[0]) for i in inputs]
        k_mean, k_source = float(np.mean(ks)), "measured"
    else:
        k_mean, k_source = DEFAULT_NOMINAL_K, "nominal (random-init weights)"
    if k_source == "measured":
        adaptive = halting
    else:
        k = max(1, min(halting.k_max, round(k_mean)))
        adaptive = dataclasses.replace(halting, delta=0.0, k_max=k, k_min=1)
    kmax = dataclasses.replace(halting, delta=0.0)

    times: dict[str, list[float]] = {"trunk": [], "adaptive_chunk": [], "kmax_chunk": []}
    with torch.inference_mode():
        for repeat in range(args.repeats + 2):
            for prepared, (im, tok, prop) in zip(inputs, tensors, strict=True):
                t0 = time.perf_counter()
                model.features(im, tok, prop)
                t1 = time.perf_counter()
                policy.decode(prepared, halting=adaptive)
                t2 = time.perf_counter()
                policy.decode(prepared, halting=kmax)
                t3 = time.perf_counter()
                if repeat >= 2:  # warm-up
                    times["trunk"].append(t1 - t0)
                    times["adaptive_chunk"].append(t2 - t1)
                    times["kmax_chunk"].append(t3 - t2)
    latency = {name: _median_ms(values) for name, values in times.items()}
    latency["preprocess"] = round(preprocess_s * 1e3, 3)
    iterations_flops = flops["core_iteration"] + flops["coda"]
    params = count_parameters(model)
    return {
        "preset": config.preset,
        "decoder": config.decoder.kind,
        "weights": args.model or "random-init",
        "params": params,
        "params_by_part": {
            "vision": count_parameters(model.vision),
            "trunk": count_parameters(model.trunk),
            "decoder": count_parameters(model.decoder),
        },
        "flops": flops,
        "flops_chunk_at_k_mean": int(flops["trunk"] + flops["prelude"] + k_mean * iterations_flops),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "weight_bytes_fp16": 2 * params,
        "context_tokens": config.num_context_tokens,
        "latency_ms": latency,
        "k_mean": round(k_mean, 3),
        "k_source": k_source,
        "k_max": halting.k_max,
        "halting": {"delta": halting.delta, "metric": halting.metric, "relative": halting.relative},
        "adaptive_over_trunk": round(latency["adaptive_chunk"] / latency["trunk"], 3),
        "kmax_over_trunk": round(latency["kmax_chunk"] / latency["trunk"], 3),
        "threads": args.threads,
    }


def summary(result: dict[str, Any]) -> str:
    f, lat = result["flops"], result["latency_ms"]
    return "\n".join(
        [
            f"policy {result['preset']} ({result['decoder']} decoder, {result['weights']})",
            f"  parameters       {result['params']:,}  ({result['weight_bytes'] / 1e6:.1f} MB fp32)",
            f"  FLOPs            trunk {f['trunk'] / 1e6:.1f} M, prelude {f['prelude'] / 1e6:.2f} M, "
            f"core iteration {f['core_iteration'] / 1e6:.2f} M, coda {f['coda'] / 1e6:.3f} M",
            f"  latency (median) trunk {lat['trunk']:.2f} ms, adaptive chunk {lat['adaptive_chunk']:.2f} ms "
            f"(k = {result['k_mean']}, {result['k_source']}), k_max chunk {lat['kmax_chunk']:.2f} ms "
            f"(k_max = {result['k_max']}), preprocess {lat['preprocess']:.2f} ms, {result['threads']} thread(s)",
            f"  adaptive / trunk {result['adaptive_over_trunk']:.3f}   k_max / trunk {result['kmax_over_trunk']:.3f}",
        ]
    )
