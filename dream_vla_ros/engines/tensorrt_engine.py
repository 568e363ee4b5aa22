"""The TensorRT backend: engines built from the exported ONNX graphs, cached, and a host halting loop.

Supported TensorRT Python APIs (both written to NVIDIA's documented API; neither can run on the development
machines, which have no GPU and no TensorRT builder, so only the TensorRT-free parts are tested there):

- **TensorRT 10.x** (JetPack 6.1/6.2 ship 10.3): name-based I/O, ``set_input_shape`` / ``set_tensor_address`` /
  ``execute_async_v3``; networks are explicit-batch by default.
- **TensorRT 8.5 and 8.6** (JetPack 5.1 ships 8.5.2, JetPack 6.0 ships 8.6.2): explicit-batch networks,
  binding indices, ``set_binding_shape`` and ``execute_async_v2``. TensorRT 8.5's ONNX parser has no
  ``LayerNormalization``: export with ``--opset 16`` for it (the op-coverage check says so before building).
- Refused: TensorRT < 8.5 (no ``builder_optimization_level``, older parser) and >= 11 (strongly typed only,
  no FP16 builder flag: precision would have to come from an fp16 ONNX export, which this package does not
  write yet).

Build (:func:`build_engines`, ``dream-vla-ros build-engine``): op coverage of the graphs against
:mod:`.trt_ops`; ``OnnxParser.parse_from_file`` (keeps external data resolvable) with every parser error
reported; one optimisation profile with min/opt/max shapes for every dynamic input (the manifest's batch
range, opt = 1); FP16 with LayerNorm and the halting metric's layers kept in FP32; workspace limit and builder
optimisation level; a persistent timing cache; the plan stored in :class:`~.engine_cache.EngineCache` under a
key of graph digest + TensorRT version + GPU name + compute capability + precision + profile + builder settings.

Launch (:class:`TensorRtEngine`): looks the key up; a hit is loaded after its SHA-256 is verified (a corrupt
plan is refused, never rebuilt silently); a miss is rebuilt with a warning that names what changed
(``on_miss="build"``, default) or refused (``on_miss="error"``). Device buffers are allocated once per batch
size (torch CUDA tensors; ping-pong scratchpad/actions buffers), one CUDA stream; the encode engine runs once,
the step engine k times with the latent kept on the device, and the host reads back one change scalar per
sample every ``check_every`` iterations (pinned memory, one stream sync) plus the actions when a sample stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.engines import trt_ops
from dream_vla_ros.engines.common import Decoded, HaltingTracker, HostEngine, dequantize, unmask_numpy
from dream_vla_ros.engines.engine_cache import CacheEntry, CacheKey, EngineCache, make_key
from dream_vla_ros.engines.manifest import Export, GraphSpec, load_export
from dream_vla_ros.errors import EngineError
from dream_vla_ros.policy.config import HaltingConfig

LOG = logging.getLogger("dream_vla_ros.engines.tensorrt")

SUPPORTED = "TensorRT 8.5, 8.6 (JetPack 5.1 / 6.0) and 10.x (JetPack 6.1/6.2: 10.3)"
PRECISIONS = ("fp32", "fp16")
ROLES = ("encode", "step")
ON_MISS = ("build", "error")


def import_tensorrt():
    """The ``tensorrt`` module, or EngineError (one line) naming what is missing."""
    try:
        import tensorrt
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways (missing libnvinfer, ...)
        raise EngineError(
            f"TensorRT is not available: python module 'tensorrt' cannot be imported ({type(exc).__name__}: "
            f"{(str(exc) or repr(exc)).splitlines()[0]}); install {SUPPORTED} with its Python bindings "
            "(JetPack: python3-libnvinfer) on a machine with an NVIDIA GPU"
        ) from None
    check_version(tensorrt.__version__)
    return tensorrt


def check_version(version: str) -> trt_ops.Version:
    parsed = trt_ops.parse_version(version)
    if not ((8, 5) <= parsed < (9, 0) or (10, 0) <= parsed < (11, 0)):
        raise EngineError(f"TensorRT {version} is not supported (supported: {SUPPORTED})")
    return parsed


def cuda_device(device: str) -> tuple[Any, int, str, str]:
    """(torch, index, GPU name, compute capability "major.minor") for ``cuda`` / ``cuda:N``."""
    if not device.startswith("cuda"):
        raise EngineError(f"tensorrt backend: device must be cuda or cuda:N, got {device!r}")
    try:
        import torch
    except ImportError as exc:
        raise EngineError(f"tensorrt backend needs torch with CUDA for device buffers and streams ({exc})") from None
    if not torch.cuda.is_available():
        raise EngineError("tensorrt backend: no CUDA device is available (torch.cuda.is_available() is False)")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise EngineError(f"tensorrt backend: {device} requested, {torch.cuda.device_count()} CUDA device(s) present")
    major, minor = torch.cuda.get_device_capability(index)
    return torch, index, torch.cuda.get_device_name(index), f"{major}.{minor}"


@dataclass(frozen=True)
class BuildSettings:
    """precision: fp32 or fp16; workspace_mib: builder workspace limit; optimization_level: 0..5 (3 default)."""

    precision: str = "fp16"
    workspace_mib: int = 1024
    optimization_level: int = 3

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision {self.precision!r} is not supported by TensorRT here "
                              f"(supported: {', '.join(PRECISIONS)}; int8 is ONNX Runtime only)")
        if self.workspace_mib < 16:
            raise EngineError(f"workspace_mib must be >= 16, got {self.workspace_mib}")
        if not 0 <= self.optimization_level <= 5:
            raise EngineError(f"optimization_level must be in [0, 5], got {self.optimization_level}")

    def builder(self) -> dict[str, int]:
        return {"workspace_mib": self.workspace_mib, "optimization_level": self.optimization_level}


def check_coverage(export: Export, version: trt_ops.Version) -> None:
    """Refuse graphs the ONNX parser of this TensorRT cannot import, before any build starts."""
    problems = trt_ops.coverage({r: export.graph(r).ops for r in ROLES}, export.opset, version)
    if problems:
        hint = " (TensorRT 8.5: re-export with --opset 16)" if version < (8, 6) else ""
        raise EngineError(f"TensorRT {version[0]}.{version[1]} cannot import {export.directory}: "
                          f"{'; '.join(problems)}{hint}")


def cache_keys(export: Export, settings: BuildSettings, tensorrt: str, gpu: str, capability: str
               ) -> dict[str, CacheKey]:
    """The cache key of every graph the runtime needs."""
    return {
        role: make_key(export.graph(role).digest, tensorrt, gpu, capability, settings.precision,
                       export.graph(role).profile(export.batch), settings.builder())
        for role in ROLES
    }


def build_engines(
    export: Export,
    cache: EngineCache,
    settings: BuildSettings,
    *,
    device: str = "cuda",
    force: bool = False,
    on_miss: str = "build",
    log: Callable[[str], None] = LOG.warning,
) -> dict[str, CacheEntry]:
    """Ensure a cached plan for every graph: reuse hits (verified), build misses (saying why) or refuse them."""
    trt = import_tensorrt()
    version = check_version(trt.__version__)
    _, _, gpu, capability = cuda_device(device)
    check_coverage(export, version)
    entries: dict[str, CacheEntry] = {}
    for role, key in cache_keys(export, settings, trt.__version__, gpu, capability).items():
        entry, why = (None, "--force") if force else cache.lookup(role, key)
        if entry is not None:
            entries[role] = entry
            continue
        if on_miss == "error":
            raise EngineError(f"no usable TensorRT engine for {role}: {why}; build it with 'dream-vla-ros "
                              f"build-engine --onnx {export.directory} --precision {settings.precision}'")
        with cache.lock():
            entry, _ = (None, "") if force else cache.lookup(role, key)  # another builder may have finished it
            if entry is None:
                log(f"building TensorRT {settings.precision} engine for {role} ({why}); this takes minutes")
                t0 = time.monotonic()
                plan = _build_plan(trt, export, export.graph(role), settings, cache, gpu, capability)
                entry = cache.store(role, key, plan, {"build_seconds": round(time.monotonic() - t0, 1),
                                                      "onnx": str(export.path(export.graph(role)))})
                log(f"built {role} engine in {entry.info['build_seconds']} s -> {entry.plan}")
        entries[role] = entry
    return entries


def _build_plan(trt, export: Export, spec: GraphSpec, settings: BuildSettings, cache: EngineCache, gpu: str,
                capability: str) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    path = export.path(spec)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"{path}: the TensorRT ONNX parser failed: {' | '.join(errors) or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = settings.optimization_level
    if settings.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        _keep_fp32(trt, network, config, spec)
    profile = builder.create_optimization_profile()
    for name, lo, opt, hi in spec.profile(export.batch):
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    timing_path = cache.timing_cache_path(trt.__version__, gpu, capability)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{path}: TensorRT failed to build an engine (see the TensorRT log above)")
    from dream_vla_ros.engines.manifest import write_atomic

    cache.directory.mkdir(parents=True, exist_ok=True)
    write_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _keep_fp32(trt, network, config, spec: GraphSpec) -> None:
    """FP16 build: normalisation layers and the halting metric (every layer between the step's decode
    outputs / inputs and ``change``) stay FP32, so the threshold compares FP32 values."""
    flag = getattr(trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS", None) or trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS
    config.set_flag(flag)
    producers: dict[str, Any] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producers[layer.get_output(j).name] = layer
    boundary = {network.get_input(i).name for i in range(network.num_inputs)}
    boundary |= {network.get_output(i).name for i in range(network.num_outputs)} - {"change"}
    marked: list[Any] = []
    if spec.output("change") is not None:
        pending, seen = ["change"], set()
        while pending:
            name = pending.pop()
            layer = producers.get(name)
            if layer is None or name in seen:
                continue
            seen.add(name)
            marked.append(layer)
            for j in range(layer.num_inputs):
                tensor = layer.get_input(j)
                if tensor is not None and tensor.name not in boundary:
                    pending.append(tensor.name)
    normalization = getattr(trt.LayerType, "NORMALIZATION", None)
    marked += [network.get_layer(i) for i in range(network.num_layers) if network.get_layer(i).type == normalization]
    floating = (trt.float32, trt.float16)
    for layer in marked:
        if layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
            continue
        if all(layer.get_output(j).dtype in floating for j in range(layer.num_outputs)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


class _TrtGraph:
    """One deserialised engine + execution context, over the v3 (TensorRT 10) or v2 (8.x) API."""

    def __init__(self, trt, torch, runtime, entry: CacheEntry, spec: GraphSpec) -> None:
        self.spec = spec
        self.torch = torch
        engine = runtime.deserialize_cuda_engine(entry.plan.read_bytes())
        if engine is None:
            raise EngineError(f"{entry.plan}: TensorRT cannot deserialise it (corrupt, or built by another TensorRT "
                              "version or GPU); rebuild with 'dream-vla-ros build-engine --force'")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.v3 = hasattr(engine, "num_io_tensors") and int(trt.__version__.split(".")[0]) >= 10
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                  trt.int8: torch.int8, trt.bool: torch.bool}
        if hasattr(trt, "int64"):
            dtypes[trt.int64] = torch.int64
        self.dtypes: dict[str, Any] = {}
        self.index: dict[str, int] = {}
        names_in, names_out = [], []
        if self.v3:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                self.dtypes[name] = dtypes.get(engine.get_tensor_dtype(name))
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (names_in if is_input else names_out).append((name, len(engine.get_tensor_shape(name))))
        else:
            for i in range(engine.num_bindings):
                name = engine.get_binding_name(i)
                self.index[name] = i
                self.dtypes[name] = dtypes.get(engine.get_binding_dtype(i))
                (names_in if engine.binding_is_input(i) else names_out).append((name, len(engine.get_binding_shape(i))))
        for kind, got, want in (("inputs", names_in, spec.inputs), ("outputs", names_out, spec.outputs)):
            if sorted(got) != sorted((t.name, len(t.shape)) for t in want):
                raise EngineError(f"{entry.plan}: engine {kind} {sorted(got)} do not match the manifest's graph "
                                  f"{spec.role}: mismatched engine; rebuild with --force")
        missing = [n for n, t in self.dtypes.items() if t is None]
        if missing:
            raise EngineError(f"{entry.plan}: unsupported tensor dtype for {missing}")

    def run(self, tensors: Mapping[str, Any], stream) -> None:
        """Run on ``stream`` with device tensors for every input and output (shapes set from the inputs)."""
        if self.v3:
            for t in self.spec.inputs:
                self.context.set_input_shape(t.name, tuple(tensors[t.name].shape))
            for name in self.dtypes:
                self.context.set_tensor_address(name, tensors[name].data_ptr())
            ok = self.context.execute_async_v3(stream.cuda_stream)
        else:
            bindings = [0] * len(self.index)
            for t in self.spec.inputs:
                self.context.set_binding_shape(self.index[t.name], tuple(tensors[t.name].shape))
            for name, i in self.index.items():
                bindings[i] = tensors[name].data_ptr()
            ok = self.context.execute_async_v2(bindings, stream.cuda_stream)
        if not ok:
            raise EngineError(f"TensorRT execution of {self.spec.role} failed")


class TensorRtEngine(HostEngine):
    """Runs an export directory's graphs as TensorRT engines (see the module doc).

    device: ``cuda`` or ``cuda:N``. precision: ``fp16`` (default) or ``fp32``.
    threads: accepted for the node's common settings; TensorRT runs on the GPU (preprocessing is one thread).
    seed, halting_k_max, halting_delta: as for the other backends. check_every: read the change scalar every
    n-th iteration (1 = the torch rule exactly; n > 1 saves syncs and may stop up to n - 1 iterations later).
    cache_dir: engine cache (default ``~/.cache/dream_vla_ros/tensorrt``). on_miss: ``build`` (rebuild, with a
    warning naming what changed) or ``error``. workspace_mib, optimization_level: builder settings (part of
    the cache key).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cuda",
        precision: str = "fp16",
        threads: int = 0,
        seed: int = 0,
        halting_k_max: int = 0,
        halting_delta: float = -1.0,
        check_every: int = 1,
        cache_dir: str = "",
        on_miss: str = "build",
        workspace_mib: int = 1024,
        optimization_level: int = 3,
    ) -> None:
        if on_miss not in ON_MISS:
            raise EngineError(f"tensorrt backend: on_miss must be one of {', '.join(ON_MISS)}, got {on_miss!r}")
        if check_every < 1 or threads < 0:
            raise EngineError("tensorrt backend: check_every must be >= 1 and threads >= 0")
        settings = BuildSettings(precision, workspace_mib, optimization_level)
        self.export = load_export(model_dir)
        trt = import_tensorrt()
        torch, index, gpu, capability = cuda_device(device)
        cache = EngineCache(Path(cache_dir) if cache_dir else default_engine_cache())
        entries = build_engines(self.export, cache, settings, device=device, on_miss=on_miss)
        self._torch, self._device = torch, torch.device("cuda", index)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        with torch.cuda.device(self._device):
            self._graphs = {r: _TrtGraph(trt, torch, self._runtime, entries[r], self.export.graph(r)) for r in entries}
            self._stream = torch.cuda.Stream(self._device)
        self._init_host(self.export.config, seed, halting_k_max, halting_delta)
        self.check_every = check_every
        self._buffers: dict[int, dict[str, Any]] = {}
        self._allocate(self.export.batch.opt)
        self._name = f"tensorrt {trt.__version__} {precision} {gpu} (sm {capability})"
        LOG.info("%s: engines %s", self._name, ", ".join(str(e.plan) for e in entries.values()))

    # -- buffers ---------------------------------------------------------------------------------------------
    def _allocate(self, batch: int) -> dict[str, Any]:
        """Device buffers for every tensor of both graphs at ``batch`` (scratchpad/actions twice: ping-pong),
        plus pinned host buffers for what is read back."""
        if batch in self._buffers:
            return self._buffers[batch]
        if batch > self.export.batch.max:
            raise EngineError(f"batch {batch} exceeds the engines' profile maximum {self.export.batch.max}")
        torch = self._torch
        bufs: dict[str, Any] = {}
        for graph in self._graphs.values():
            for t in (*graph.spec.inputs, *graph.spec.outputs):
                if t.name not in bufs:
                    bufs[t.name] = torch.empty(t.concrete(batch), dtype=graph.dtypes[t.name], device=self._device)
        if self.config.decoder.kind == "recurrent":
            step = self._graphs["step"]
            bufs["scratchpad"] = bufs["scratchpad0"]  # the encode graph writes buffer 0 of the ping-pong pair
            bufs["scratch"] = (bufs["scratchpad0"], bufs["next_scratchpad"])
            shape = step.spec.output("next_actions").concrete(batch)
            if "actions" in bufs:  # the "action" metric's step reads the previous decode
                first = bufs["actions"]
            else:
                first = torch.empty(shape, dtype=torch.float32, device=self._device)
            bufs["acts"] = (first, bufs["next_actions"])
            bufs["host_change"] = torch.empty(batch, dtype=torch.float32, pin_memory=True)
            bufs["host_actions"] = torch.empty(shape, dtype=torch.float32, pin_memory=True)
        else:
            spec = self._graphs["step"].spec.output("logits")
            bufs["host_logits"] = torch.empty(spec.concrete(batch), dtype=torch.float32, pin_memory=True)
        self._buffers[batch] = bufs
        return bufs

    def _upload(self, bufs: dict[str, Any], name: str, array: np.ndarray) -> None:
        target = bufs[name]
        host = self._torch.from_numpy(np.ascontiguousarray(array)).to(target.dtype)
        target.copy_(host, non_blocking=False)

    # -- decoding --------------------------------------------------------------------------------------------
    def decode(self, inputs, seeds: Sequence[int] | None = None, halting: HaltingConfig | None = None) -> Decoded:
        torch = self._torch
        halting = halting or self.halting
        batch = inputs.images.shape[0]
        seeds = [self.seed] * batch if seeds is None else list(seeds)
        bufs = self._allocate(batch)
        stream = self._stream
        t0 = time.perf_counter()
        with torch.cuda.device(self._device), torch.cuda.stream(stream):
            for name, array in (("images", inputs.images), ("tokens", inputs.tokens), ("proprio", inputs.proprio)):
                self._upload(bufs, name, array)
            if self.config.decoder.kind == "recurrent":
                self._upload(bufs, "noise", self.pipeline.noise(seeds))
                self._graphs["encode"].run(bufs, stream)
                stream.synchronize()
                t1 = time.perf_counter()
                result = self._recurrent_loop(bufs, batch, halting)
            else:
                self._graphs["encode"].run(bufs, stream)
                stream.synchronize()
                t1 = time.perf_counter()
                result = self._discrete_loop(bufs, batch, halting)
        t2 = time.perf_counter()
        return Decoded(result.actions, result.iterations, result.reasons, result.changes,
                       {"trunk": (t1 - t0) * 1e3, "core": (t2 - t1) * 1e3})

    def _recurrent_loop(self, bufs: dict[str, Any], batch: int, halting: HaltingConfig) -> Decoded:
        stream, step = self._stream, self._graphs["step"]
        scratch, acts = bufs["scratch"], bufs["acts"]
        acts[0].zero_()
        tracker = HaltingTracker(batch, halting, self.check_every)
        a = 0
        for k in range(1, halting.k_max + 1):
            tensors = dict(bufs)
            tensors.update(scratchpad=scratch[a], actions=acts[a], next_scratchpad=scratch[1 - a],
                           next_actions=acts[1 - a])
            step.run(tensors, stream)
            change = None
            if tracker.wants_change(k):
                bufs["host_change"].copy_(bufs["change"], non_blocking=True)
                stream.synchronize()
                change = bufs["host_change"].numpy().copy()

            def actions(source=acts[1 - a]) -> np.ndarray:
                bufs["host_actions"].copy_(source, non_blocking=True)
                stream.synchronize()
                return bufs["host_actions"].numpy().copy()

            if tracker.update(k, change, actions):
                break
            a = 1 - a
        return tracker.result({})

    def _discrete_loop(self, bufs: dict[str, Any], batch: int, halting: HaltingConfig) -> Decoded:
        c, stream, step = self.config, self._stream, self._graphs["step"]

        def logits(values: np.ndarray) -> np.ndarray:
            self._upload(bufs, "values", values)
            step.run(bufs, stream)
            bufs["host_logits"].copy_(bufs["logits"], non_blocking=True)
            stream.synchronize()
            return bufs["host_logits"].numpy().copy()

        ids, iterations, reasons = unmask_numpy(logits, (batch, c.chunk_length, c.num_joints), c.decoder.bins, halting)
        return Decoded(dequantize(ids, c), iterations, reasons, np.zeros((0, batch), np.float32))


def default_engine_cache() -> Path:
    from dream_vla_ros.engines.onnxruntime_engine import default_cache_dir

    return default_cache_dir() / "tensorrt"
