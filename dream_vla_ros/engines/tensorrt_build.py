"""Building the TensorRT engines of an export: version and device checks, builder settings, cached plans.

Supported: **TensorRT 10.x** Python bindings (JetPack 6.1 and 6.2 ship 10.3; the package itself needs Python
3.10+ and ROS 2 Humble on Ubuntu 22.04 or Jazzy on 24.04, i.e. JetPack 6). Name-based I/O
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), explicit batch, profiles shared by
execution contexts. Refused: older TensorRT (JetPack 5 cannot run the package: Python 3.8, Ubuntu 20.04 has
no Humble; JetPack 6.0's TensorRT 8.6 has the other binding API) and 11+ (strongly typed only, no FP16
builder flag). None of it can run where this package is developed (no GPU, no TensorRT builder); the tests
there drive this module and :mod:`.tensorrt_engine` through stand-ins for the TensorRT and CUDA objects, and
``test/gpu`` runs them for real. Importing this module needs neither TensorRT nor torch.

Build (:func:`build_engines`, ``dream-vla-ros build-engine``): op coverage against :mod:`.trt_ops`;
``OnnxParser.parse_from_file`` with every parser error reported; one optimisation profile with min/opt/max
shapes for every dynamic input (the manifest's batch range, opt = 1); FP16 with LayerNorm, softmax and the
halting change's layers *obeying* FP32 constraints (a graph with LayerNormalization but no normalisation
layer to mark is refused); workspace limit and builder optimisation level; a persistent timing cache; the plan
stored in :class:`~.engine_cache.EngineCache` under a key of graph digest, TensorRT version, device identity
(:mod:`.device`), precision, profile, builder settings and recipe version. A build reports which graph and
the elapsed time to ``progress`` every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dream_vla_ros.engines import common, trt_ops
from dream_vla_ros.engines.device import DeviceIdentity, cuda_identity
from dream_vla_ros.engines.engine_cache import CacheEntry, CacheKey, EngineCache, make_key
from dream_vla_ros.engines.manifest import Export, GraphSpec, write_atomic
from dream_vla_ros.errors import EngineError

LOG = logging.getLogger("dream_vla_ros.engines.tensorrt")

SUPPORTED = "TensorRT 10.x (JetPack 6.1 / 6.2: 10.3)"
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
            "(JetPack 6: python3-libnvinfer) on a machine with an NVIDIA GPU"
        ) from None
    check_version(tensorrt.__version__)
    return tensorrt


def check_version(version: str) -> trt_ops.Version:
    parsed = trt_ops.parse_version(version)
    if not (10, 0) <= parsed < (11, 0):
        raise EngineError(f"TensorRT {version} is not supported (supported: {SUPPORTED})")
    return parsed


def cuda_device(device: str) -> tuple[Any, int, DeviceIdentity]:
    """(torch, index, device identity) for ``cuda`` / ``cuda:N``."""
    if not device.startswith("cuda"):
        raise EngineError(f"tensorrt backend: device must be cuda or cuda:N, got {device!r}")
    try:
        import torch
    except ImportError as exc:
        raise EngineError(f"tensorrt backend needs torch with CUDA for device buffers and streams ({exc})") from None
    index = int(device.partition(":")[2] or 0)
    try:
        return torch, index, cuda_identity(torch, index)
    except EngineError as exc:
        raise EngineError(f"tensorrt backend: {exc}") from None


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

    def builder(self) -> dict[str, int | str]:
        """The builder settings :func:`_build_plan` applies (part of the cache key)."""
        constraints = "obey fp32: normalization, softmax, halting change" if self.precision == "fp16" else "none"
        return {"workspace_mib": self.workspace_mib, "optimization_level": self.optimization_level,
                "precision_constraints": constraints}


def check_coverage(export: Export) -> None:
    """Refuse graphs the ONNX parser of TensorRT 10 cannot import, before any build starts."""
    problems = trt_ops.coverage({r: export.graph(r).ops for r in ROLES}, export.opset)
    if problems:
        raise EngineError(f"TensorRT cannot import {export.directory}: {'; '.join(problems)}")


def cache_keys(export: Export, settings: BuildSettings, tensorrt: str, device: DeviceIdentity
               ) -> dict[str, CacheKey]:
    """The cache key of every graph the runtime needs."""
    return {
        role: make_key(export.graph(role).digest, tensorrt, device, settings.precision,
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
    progress: common.Progress | None = None,
) -> dict[str, CacheEntry]:
    """Ensure a cached plan for every graph: reuse hits (verified), build misses (saying why) or refuse them.

    ``progress`` hears which graph is being built, then the elapsed time every few seconds, then the result.
    """
    trt = import_tensorrt()
    _, _, identity = cuda_device(device)
    check_coverage(export)
    keys = cache_keys(export, settings, trt.__version__, identity)
    entries: dict[str, CacheEntry] = {}
    for number, (role, key) in enumerate(keys.items(), 1):
        entry, why = (None, "--force") if force else cache.lookup(role, key)
        if entry is not None:
            entries[role] = entry
            continue
        if on_miss == "error":
            raise EngineError(f"no usable TensorRT engine for {role}: {why}; build it with 'dream-vla-ros "
                              f"build-engine --onnx {export.directory} --precision {settings.precision}' "
                              "(or set engine_on_miss: build)")
        with cache.lock():
            entry, _ = (None, "") if force else cache.lookup(role, key)  # another builder may have finished it
            if entry is None:
                what = f"building the TensorRT {settings.precision} engine for {role} ({number} of {len(keys)})"
                log(f"{what}: {why}; this takes minutes")
                t0 = time.monotonic()
                with common.heartbeat(progress, what):
                    plan, notes = _build_plan(trt, export, export.graph(role), settings, cache, identity)
                entry = cache.store(role, key, plan, {"build_seconds": round(time.monotonic() - t0, 1),
                                                      "onnx": str(export.path(export.graph(role))), **notes})
                done = f"built the {role} engine in {entry.info['build_seconds']} s -> {entry.plan}"
                log(done)
                if progress is not None:
                    progress(done)
        entries[role] = entry
    return entries


def _build_plan(trt, export: Export, spec: GraphSpec, settings: BuildSettings, cache: EngineCache,
                device: DeviceIdentity) -> tuple[bytes, dict[str, Any]]:
    """Parse, configure and build one graph; returns the plan and notes for its cache entry."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, logger)
    path = export.path(spec)
    if not parser.parse_from_file(str(path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"{path}: the TensorRT ONNX parser failed: {' | '.join(errors) or 'no details'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.optimization_level
    notes: dict[str, Any] = {}
    if settings.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        marked = fp32_layers(trt, network, spec)
        for layer in marked:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
        notes["fp32_layers"] = len(marked)
    profile = builder.create_optimization_profile()
    for name, lo, opt, hi in spec.profile(export.batch):
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    timing_path = cache.timing_cache_path(trt.__version__, device)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{path}: TensorRT failed to build an engine (see the TensorRT log above)")
    cache.directory.mkdir(parents=True, exist_ok=True)
    write_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(plan), notes


def fp32_layers(trt, network, spec: GraphSpec) -> list[Any]:
    """The layers an FP16 build keeps in FP32: every normalisation and softmax layer, and the halting metric
    (every layer between the step's inputs / other outputs and ``change``), floating-point ones only.

    A graph with ``LayerNormalization`` ops whose network shows no normalisation layer (a decomposed LayerNorm,
    as older opsets export it) cannot be kept in FP32 that way: refused."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producers = {layer.get_output(j).name: layer for layer in layers for j in range(layer.num_outputs)}
    boundary = {network.get_input(i).name for i in range(network.num_inputs)}
    boundary |= {network.get_output(i).name for i in range(network.num_outputs)} - {"change"}
    marked: dict[int, Any] = {}
    if spec.output("change") is not None:
        pending, seen = ["change"], set()
        while pending:
            name = pending.pop()
            layer = producers.get(name)
            if layer is None or name in seen:
                continue
            seen.add(name)
            marked[id(layer)] = layer
            for j in range(layer.num_inputs):
                tensor = layer.get_input(j)
                if tensor is not None and tensor.name not in boundary:
                    pending.append(tensor.name)
    normalization = [layer for layer in layers if layer.type == trt.LayerType.NORMALIZATION]
    if "LayerNormalization" in spec.ops and not normalization:
        raise EngineError(f"{spec.file}: LayerNormalization in the ONNX graph but no normalisation layer in the "
                          "TensorRT network: it cannot be kept in FP32; re-export the model (opset >= 17)")
    for layer in [*normalization, *(x for x in layers if x.type == trt.LayerType.SOFTMAX)]:
        marked[id(layer)] = layer
    floating = (trt.float32, trt.float16)
    return [layer for layer in marked.values()
            if layer.type not in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE)
            and all(layer.get_output(j).dtype in floating for j in range(layer.num_outputs))]
