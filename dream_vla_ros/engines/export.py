"""Checkpoint -> split ONNX graphs + ``manifest.json`` (torch, onnx, onnxruntime; used by ``dream-vla-ros export``).

Graphs (batch dimension dynamic everywhere; traced at batch 1, verified at batch 2):

- recurrent decoder: ``encode.onnx`` = ``EncodeGraph`` (vision + trunk + prelude + the core's context keys/values,
  once per chunk), ``step.onnx`` = ``CoreStepGraph`` for the checkpoint's halting metric (one core iteration, its
  decode and the change scalar per sample: the only value the host loop reads back), ``coda.onnx`` =
  ``CodaGraph`` (a standalone decode; the host loops take the step graph's decode and do not load it);
- discrete decoder: ``encode.onnx`` (``DiscreteEncodeGraph``) and ``step.onnx`` (``DiscreteStepGraph``);
- optional ``encode_int8.onnx``: ONNX Runtime dynamic int8 quantisation of the encode graph's MatMul/Gemm weights
  (the core stays fp32: quantising it made the change jitter above delta, so halting never fired; see
  ``shared/research/toolchain.md`` section 4). Its accuracy against fp32 is measured and stored in the manifest.

Opset: 17 (default) to 20. TensorRT 10.3 (JetPack 6.1/6.2) accepts up to 20; 17 is the first opset with
``LayerNormalization`` as one op, which an FP16 TensorRT build can keep in FP32 (lower opsets decompose it and
are refused). The legacy TorchScript exporter is used because it writes opsets <= 17 directly (the dynamo
exporter builds 18 and down-converts) and exports faster (docs/performance.md). Each graph is simplified with
onnxscript's optimizer (constant folding, dead-node and identity removal); the simplified graph is kept only if it
passes ``onnx.checker`` (full check) and strict shape inference and matches torch as closely as the raw export,
otherwise the raw graph is kept and the manifest says why.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros import __version__
from dream_vla_ros.engines import parity, trt_ops
from dream_vla_ros.engines.manifest import (
    BATCH,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    Export,
    TensorSpec,
    expected_specs,
    file_entries,
    graph_digest,
    load_export,
    write_atomic,
)
from dream_vla_ros.errors import EngineError

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = trt_ops.OPSETS
PARITY_TOLERANCE = 1e-4
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with margin
_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool"}


def planned_graphs(decoder_kind: str, int8_encoder: bool) -> list[str]:
    """The graph roles an export writes, in order (for progress bars)."""
    roles = ["encode", "step", "coda"] if decoder_kind == "recurrent" else ["encode", "step"]
    return roles + (["encode_int8"] if int8_encoder else [])


def export_model(
    model_dir: str | Path | None,
    out_dir: str | Path,
    *,
    model: Any = None,
    opset: int = DEFAULT_OPSET,
    int8_encoder: bool = False,
    max_batch: int = 8,
    simplify: bool = True,
    accuracy_samples: int = 16,
    parity_samples: int = parity.SAMPLES,
    progress: Any = None,
) -> Export:
    """Export the checkpoint in ``model_dir`` (or an in-memory ``model``, a ``VlaModel``) to ``out_dir``.

    ``progress``: an object with ``set_description(str)`` and ``update(n)`` (a tqdm bar), advanced per graph.
    ``parity_samples``: observations stored with their ONNX Runtime FP32 decode for the parity check of
    reduced-precision engines (:mod:`.parity`).
    Returns the validated :class:`Export` (the manifest is written last, atomically).
    """
    import torch

    from dream_vla_ros.policy.checkpoint import load_checkpoint

    if opset not in SUPPORTED_OPSETS:
        raise EngineError(f"opset {opset} is not supported (use {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1})")
    if max_batch < 1:
        raise EngineError(f"max_batch must be >= 1, got {max_batch}")
    source = None
    if model is None:
        if model_dir is None:
            raise EngineError("export_model: give a model directory or a model")
        model = load_checkpoint(model_dir)
        source = json.loads((Path(model_dir) / "config.json").read_text())["weights"]["sha256"]
    model = model.eval()
    config = model.config
    halting = config.halting
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int8_encoder and config.decoder.kind != "recurrent":
        raise EngineError("--int8-encoder: only the recurrent decoder's encode graph is quantised")

    # A half-written export must never look valid: the old manifest goes first, the new one is written last.
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    for role in {"encode", "step", "coda", "encode_int8"} - set(planned_graphs(config.decoder.kind, int8_encoder)):
        for stale in (out / f"{role}.onnx", out / f"{role}.onnx.data"):
            stale.unlink(missing_ok=True)
    specs = expected_specs(config, halting.metric)
    graphs: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        traced, checked = _example_inputs(model, 1), _example_inputs(model, 2)
    for role, module in _modules(model):
        if progress is not None:
            progress.set_description(f"export {role}")
        entry = _export_graph(module, role, traced[role], checked[role], specs[role], out, opset, simplify)
        graphs[role] = entry
        if progress is not None:
            progress.update(1)
    if int8_encoder:
        if progress is not None:
            progress.set_description("quantise encode (int8)")
        graphs["encode_int8"] = _quantize_encode(out, graphs["encode"])
        if progress is not None:
            progress.update(1)

    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "tools": _tool_versions(),
        "opset": opset,
        "decoder": config.decoder.kind,
        "halting": {"metric": halting.metric, "relative": halting.relative},
        "batch": {"min": 1, "opt": 1, "max": max_batch},
        "source": {"weights_sha256": source},
        "model": _config_mapping(config),
        "graphs": graphs,
        "tensorrt_op_coverage": trt_ops.coverage_report({r: g["ops"] for r, g in graphs.items()
                                                         if not r.endswith("_int8")}, opset),
        "files": {},
    }
    _write_manifest(out, document)
    export = load_export(out)
    if progress is not None:
        progress.set_description("parity samples (fp32 reference)")
    document["parity"] = write_parity_samples(export, parity_samples)
    if int8_encoder:
        graphs["encode_int8"]["notes"]["accuracy"] = int8_accuracy(export, accuracy_samples)
    _write_manifest(out, document)
    return load_export(out)


def _write_manifest(out: Path, document: dict[str, Any]) -> None:
    names = [n for g in document["graphs"].values() for n in (g["file"], *g["external_data"])]
    if "parity" in document:
        names.append(document["parity"]["file"])
    document["files"] = file_entries(out, names)
    write_atomic(out / MANIFEST_FILE, (json.dumps(document, indent=2) + "\n").encode())


def _config_mapping(config) -> dict[str, Any]:
    from dream_vla_ros.configuration import to_mapping

    return to_mapping(config)


def _tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _modules(model) -> list[tuple[str, Any]]:
    from dream_vla_ros.policy.model import (
        CodaGraph,
        CoreStepGraph,
        DiscreteEncodeGraph,
        DiscreteStepGraph,
        EncodeGraph,
    )

    if model.kind == "recurrent":
        h = model.config.halting
        return [
            ("encode", EncodeGraph(model)),
            ("step", CoreStepGraph(model, h.metric, h.relative)),
            ("coda", CodaGraph(model)),
        ]
    return [("encode", DiscreteEncodeGraph(model)), ("step", DiscreteStepGraph(model))]


def _example_inputs(model, batch: int) -> dict[str, dict[str, Any]]:
    """Role -> ordered name -> tensor inputs at ``batch`` (synthetic observations, real preprocessing)."""
    import torch

    from dream_vla_ros.engines.common import HostPipeline
    from dream_vla_ros.policy.synthetic import synthetic_samples

    config = model.config
    host = HostPipeline(config)
    samples = synthetic_samples(config, batch, np.random.default_rng(100 + batch))
    inputs = host.prepare([s.observation() for s in samples])
    base = {
        "images": torch.from_numpy(inputs.images),
        "tokens": torch.from_numpy(inputs.tokens),
        "proprio": torch.from_numpy(inputs.proprio),
    }
    if model.kind == "recurrent":
        from dream_vla_ros.policy.model import EncodeGraph

        noise = torch.from_numpy(host.noise(list(range(batch))))
        encoded = EncodeGraph(model)(*base.values(), noise)
        kv_names = [f"{x}{i}" for i in range(config.decoder.core_layers) for x in "kv"]
        kv = dict(zip(kv_names, encoded[2:], strict=True))
        actions = torch.randn(batch, config.chunk_length, config.num_joints, generator=torch.Generator().manual_seed(1))
        step = {"scratchpad": encoded[1], "actions": actions, "prelude_state": encoded[0], **kv}
        return {"encode": {**base, "noise": noise}, "step": step, "coda": {"scratchpad": encoded[1]}}
    from dream_vla_ros.policy.model import DiscreteEncodeGraph

    encoded = DiscreteEncodeGraph(model)(*base.values())
    kv_names = [f"{x}{i}" for i in range(config.decoder.discrete_layers) for x in "kv"]
    mask = model.discrete().mask_id
    values = torch.randint(0, mask + 1, (batch, config.chunk_length, config.num_joints),
                           generator=torch.Generator().manual_seed(2))
    return {"encode": base, "step": {"values": values, "rows": encoded[0], **dict(zip(kv_names, encoded[1:],
                                                                                        strict=True))}}


def _export_graph(module, role: str, traced: dict, checked: dict, spec: tuple[dict, dict], out: Path, opset: int,
                  simplify: bool) -> dict[str, Any]:
    import onnx
    import torch

    in_specs, out_specs = spec
    input_names, output_names = list(traced), list(out_specs)
    tmp = out / f".{role}.raw.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(traced.values()),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes={n: {0: BATCH} for n in input_names + output_names},
                do_constant_folding=True,
            )
        raw = onnx.load(str(tmp))
    finally:
        if tmp.exists():
            tmp.unlink()
    with torch.no_grad():
        want = module(*checked.values())
    want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    raw_error = _validate(raw, checked, want, role)
    notes: dict[str, Any] = {"nodes_exported": len(raw.graph.node)}
    final, error = raw, raw_error
    if simplify:
        try:
            import onnxscript.optimizer

            simplified = onnxscript.optimizer.optimize(raw)
            simplified_error = _validate(simplified, checked, want, role)
            if simplified_error <= max(raw_error * 10, 1e-6):
                final, error = simplified, simplified_error
                notes["simplified"] = True
            else:
                notes["simplified"] = False
                notes["simplify_rejected"] = f"parity {simplified_error:.2e} vs raw {raw_error:.2e}"
        except Exception as exc:  # noqa: BLE001 - simplification is optional; the raw graph is valid
            notes["simplified"] = False
            notes["simplify_rejected"] = f"{type(exc).__name__}: {exc}"[:200]
    notes["nodes"] = len(final.graph.node)
    notes["parity_max_abs_vs_torch_batch2"] = float(error)
    notes["tensorrt_constant_inputs"] = trt_ops.constant_input_problems(final) or "ok"
    _check_io(final, in_specs, out_specs, role)
    file = f"{role}.onnx"
    external: list[str] = []
    if final.ByteSize() > EXTERNAL_DATA_BYTES:
        external = [f"{file}.data"]
    _save(final, out / file, external)
    ops = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in final.graph.node})
    return {
        "file": file,
        "inputs": [TensorSpec(n, *in_specs[n]).to_json() for n in _names(final.graph.input)],
        "outputs": [TensorSpec(n, *out_specs[n]).to_json() for n in output_names],
        "ops": ops,
        "external_data": external,
        "digest": graph_digest(out, file, external),
        "notes": notes,
    }


def _names(values) -> list[str]:
    return [v.name for v in values]


def _save(model, path: Path, external: Sequence[str]) -> None:
    """Save through a temporary name so a reader never sees half a file (external data written first)."""
    import os

    import onnx

    tmp = path.with_name(f".{path.name}.tmp")
    if external:
        onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external[0], size_threshold=1024)
    else:
        onnx.save_model(model, str(tmp))
    os.replace(tmp, path)


def _validate(model, inputs: dict, want: list[np.ndarray], role: str) -> float:
    """onnx.checker (full) + strict shape inference + ONNX Runtime vs torch; returns the max abs difference."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise EngineError(f"export {role}: the ONNX graph is invalid: {exc}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    got = session.run(None, feeds)
    error = max(float(np.max(np.abs(g - w))) if g.size else 0.0 for g, w in zip(got, want, strict=True))
    if not error <= PARITY_TOLERANCE:
        raise EngineError(f"export {role}: ONNX Runtime differs from torch by {error:.3e} (> {PARITY_TOLERANCE})")
    return error


def _check_io(model, in_specs: dict, out_specs: dict, role: str) -> None:
    def described(values) -> dict[str, tuple[str, int]]:
        out = {}
        for v in values:
            t = v.type.tensor_type
            out[v.name] = (_ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), len(t.shape.dim))
        return out

    inputs, outputs = described(model.graph.input), described(model.graph.output)
    want_in = {n: (d, len(s)) for n, (d, s) in in_specs.items()}
    want_out = {n: (d, len(s)) for n, (d, s) in out_specs.items()}
    if inputs != want_in or outputs != want_out:
        raise EngineError(f"export {role}: graph I/O {inputs} -> {outputs} differs from the expected "
                          f"{want_in} -> {want_out}")


def _quantize_encode(out: Path, encode: dict[str, Any]) -> dict[str, Any]:
    """Dynamic int8 (weights int8 per tensor, activations quantised per call) of MatMul/Gemm with constant
    weights only (attention's activation x activation products stay fp32); Conv stays fp32 (ConvInteger is
    slower on ONNX Runtime CPU)."""
    import logging
    import os

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    file = "encode_int8.onnx"
    tmp, source = out / f".{file}.tmp", out / f".{file}.source.tmp"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's advice to pre-process is logged on the root logger
    try:
        try:
            # The quantiser re-runs strict shape inference over the exporter's intermediate shape annotations;
            # torch 2.11's annotations failed it under onnxruntime 1.30 ("Inferred shape and existing shape
            # differ"). They are optional, so the quantiser gets the graph without them and infers its own.
            graph = onnx.load(str(out / encode["file"]))
            del graph.graph.value_info[:]
            onnx.save(graph, str(source))
            quantize_dynamic(
                source,
                tmp,
                op_types_to_quantize=["MatMul", "Gemm"],
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
            onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
        except Exception as exc:  # noqa: BLE001 - the quantiser and checker raise their own types
            raise EngineError(f"export encode_int8: int8 quantisation failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0]}); export without --int8-encoder") from None
        os.replace(tmp, out / file)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
        source.unlink(missing_ok=True)
    model = onnx.load(str(out / file))
    ops = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node})
    return {
        "file": file,
        "inputs": encode["inputs"],
        "outputs": encode["outputs"],
        "ops": ops,
        "external_data": [],
        "digest": graph_digest(out, file, []),
        "notes": {"quantization": "dynamic int8, MatMul/Gemm with constant weights, QInt8 weights per tensor",
                  "onnxruntime_only": "TensorRT does not import MatMulInteger/DynamicQuantizeLinear"},
    }


def write_parity_samples(export: Export, count: int) -> dict[str, Any]:
    """Synthetic observations and their ONNX Runtime CPU FP32 decode (change read at every iteration) into
    ``parity.SAMPLES_FILE``; returns the manifest's ``parity`` entry."""
    from dream_vla_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
    from dream_vla_ros.policy.synthetic import synthetic_samples

    if count < 1:
        raise EngineError(f"parity_samples must be >= 1, got {count}")
    engine = OnnxRuntimeEngine(export.directory, threads=1)
    observations = tuple(s.observation() for s in synthetic_samples(export.config, count, np.random.default_rng(17)))
    seeds = tuple(range(count))
    reference = parity.decode_samples(observations, seeds, engine.pipeline.prepare, engine.decode, export.batch.max)
    write_atomic(export.directory / parity.SAMPLES_FILE, parity.encode_samples(observations, seeds, reference))
    return {"file": parity.SAMPLES_FILE, "samples": count, "reference": engine.name, "seeds": [0, count - 1],
            "rule": parity.RULE_VERSION}


def int8_accuracy(export: Export, samples: int) -> dict[str, Any]:
    """Full-pipeline accuracy of the int8 encoder vs fp32 (ONNX Runtime CPU, synthetic observations).

    max_abs / mean_abs: normalised action units over all samples; relative: ||a_int8 - a_fp32|| / ||a_fp32||;
    same_k_fraction: samples with the same number of core iterations.
    """
    from dream_vla_ros.engines.onnxruntime_engine import OnnxRuntimeEngine
    from dream_vla_ros.policy.synthetic import synthetic_samples

    fp32 = OnnxRuntimeEngine(export.directory, threads=1)
    int8 = OnnxRuntimeEngine(export.directory, threads=1, precision="int8")
    observations = [s.observation() for s in synthetic_samples(export.config, samples, np.random.default_rng(7))]
    runs: dict[str, list] = {"fp32": [], "int8": []}
    step = export.batch.max
    for start in range(0, samples, step):
        inputs = fp32.pipeline.prepare(observations[start : start + step])
        seeds = list(range(start, start + len(inputs.stamps)))
        runs["fp32"].append(fp32.decode(inputs, seeds))
        runs["int8"].append(int8.decode(inputs, seeds))
    a_actions, b_actions = (np.concatenate([d.actions for d in runs[p]]) for p in ("fp32", "int8"))
    a_k, b_k = (np.concatenate([d.iterations for d in runs[p]]) for p in ("fp32", "int8"))
    diff = b_actions - a_actions
    return {
        "samples": samples,
        "max_abs": round(float(np.abs(diff).max()), 6),
        "mean_abs": round(float(np.abs(diff).mean()), 6),
        "relative": round(float(np.linalg.norm(diff) / max(np.linalg.norm(a_actions), 1e-12)), 6),
        "same_k_fraction": float(np.mean(a_k == b_k)),
        "k_mean_fp32": float(a_k.mean()),
        "k_mean_int8": float(b_k.mean()),
    }
