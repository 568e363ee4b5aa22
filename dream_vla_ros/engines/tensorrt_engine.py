"""The TensorRT backend: engines built from the exported ONNX graphs, cached, checked, and a host halting loop.

Supported: **TensorRT 10.x** Python bindings (JetPack 6.1 and 6.2 ship 10.3; the package itself needs Python
3.10+ and ROS 2 Humble on Ubuntu 22.04 or Jazzy on 24.04, i.e. JetPack 6). Name-based I/O
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``), explicit batch, profiles shared by
execution contexts. Refused: older TensorRT (JetPack 5 cannot run the package: Python 3.8, Ubuntu 20.04 has
no Humble; JetPack 6.0's TensorRT 8.6 has the other binding API) and 11+ (strongly typed only, no FP16
builder flag). None of it can run where this package is developed (no GPU, no TensorRT builder); the tests
there drive this module through stand-ins for the TensorRT and CUDA objects, and ``test/gpu`` runs it for real.

Build (:func:`build_engines`, ``dream-vla-ros build-engine``): op coverage against :mod:`.trt_ops`;
``OnnxParser.parse_from_file`` with every parser error reported; one optimisation profile with min/opt/max
shapes for every dynamic input (the manifest's batch range, opt = 1); FP16 with LayerNorm, softmax and the
halting change's layers *obeying* FP32 constraints (a graph with LayerNormalization but no normalisation
layer to mark is refused); workspace limit and builder optimisation level; a persistent timing cache; the plan
stored in :class:`~.engine_cache.EngineCache` under a key of graph digest, TensorRT version, device identity
(:mod:`.device`), precision, profile, builder settings and recipe version. A build reports which graph and
the elapsed time to ``progress`` every few seconds.

Launch (:class:`TensorRtEngine`): a hit is loaded after its SHA-256 is verified (a corrupt plan is refused,
never rebuilt silently); a miss is rebuilt with a warning that names what changed (``on_miss="build"``) or
refused (``on_miss="error"``). FP16 engines are then checked against the export's ONNX Runtime FP32 samples
(:mod:`.parity`); the result is stored next to the plans, shown in :attr:`TensorRtEngine.status`, and a
failing set is refused unless accepted explicitly.

Loop: per batch size, device buffers and the tensor shapes and addresses of three execution contexts (encode;
step "ping" S0 -> S1 and step "pong" S1 -> S0, so no copy and no re-binding between iterations) are set once.
At batch 1 each step context is captured as a CUDA graph (after one launch, as TensorRT requires; a failed
capture falls back to launches, with the reason in ``status``). Per chunk: asynchronous uploads from pinned
memory, one encode launch, then per iteration one step launch or replay; the host waits only when it reads
the change scalars back (every ``check_every`` iterations, with that iteration's chunk in the same copy).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.engines import common, parity, trt_ops
from dream_vla_ros.engines.common import Decoded, HaltingTracker, HostEngine, dequantize, unmask_numpy
from dream_vla_ros.engines.device import DeviceIdentity, cuda_identity
from dream_vla_ros.engines.engine_cache import CacheEntry, CacheKey, EngineCache, make_key, set_digest
from dream_vla_ros.engines.manifest import Export, GraphSpec, load_export, write_atomic
from dream_vla_ros.errors import EngineError
from dream_vla_ros.policy.config import HaltingConfig

LOG = logging.getLogger("dream_vla_ros.engines.tensorrt")

SUPPORTED = "TensorRT 10.x (JetPack 6.1 / 6.2: 10.3)"
PRECISIONS = ("fp32", "fp16")
ROLES = ("encode", "step")
ON_MISS = ("build", "error")
GRAPH_BATCH = 1
"""The batch size whose step launches are captured as CUDA graphs (the policy node's)."""


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


class CudaRuntime:
    """The CUDA side of the loop over torch: one stream, device and pinned buffers, async copies, events,
    graph capture. The only place this backend touches torch (unit tests put a stand-in here)."""

    def __init__(self, torch: Any, index: int) -> None:
        self.torch = torch
        self.device = torch.device("cuda", index)
        with torch.cuda.device(self.device):
            self.stream = torch.cuda.Stream(self.device)
        self.handle = self.stream.cuda_stream
        self._dtypes = {n: getattr(torch, n) for n in ("float32", "float16", "int64", "int32", "int8", "bool")}

    def active(self) -> Any:
        """Context making this device current (TensorRT deserialises and runs on the current device)."""
        return self.torch.cuda.device(self.device)

    def empty(self, shape: Sequence[int], dtype: str) -> Any:
        return self.torch.empty(tuple(shape), dtype=self._dtypes[dtype], device=self.device)

    def pinned(self, shape: Sequence[int], dtype: str) -> Any:
        return self.torch.empty(tuple(shape), dtype=self._dtypes[dtype], pin_memory=True)

    @staticmethod
    def ptr(tensor: Any) -> int:
        return int(tensor.data_ptr())

    @staticmethod
    def host(pinned: Any) -> np.ndarray:
        """The numpy view of a pinned buffer (valid after a wait on the copy that filled it)."""
        return pinned.numpy()

    def copy(self, dst: Any, src: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            dst.copy_(src, non_blocking=True)

    def zero(self, tensor: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            tensor.zero_()

    def event(self) -> Any:
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, event: Any) -> None:
        event.record(self.stream)

    @staticmethod
    def wait(event: Any) -> None:
        event.synchronize()

    @staticmethod
    def elapsed_ms(start: Any, end: Any) -> float:
        return float(start.elapsed_time(end))

    def synchronize(self) -> None:
        self.stream.synchronize()

    def capture(self, launch: Callable[[], None]) -> Callable[[], None]:
        """A CUDA graph of ``launch`` on this stream; returns its replay. Raises whatever capture raises."""
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            launch()
        return graph.replay


class _Graph:
    """One deserialised engine and its tensor dtypes, checked against the manifest's graph spec."""

    def __init__(self, trt, runtime, entry: CacheEntry, spec: GraphSpec) -> None:
        self.spec = spec
        engine = runtime.deserialize_cuda_engine(entry.plan.read_bytes())
        if engine is None:
            raise EngineError(f"{entry.plan}: TensorRT cannot deserialise it (corrupt, or built by another TensorRT "
                              "version or GPU); rebuild with 'dream-vla-ros build-engine --force'")
        self.engine = engine
        dtypes = {trt.float32: "float32", trt.float16: "float16", trt.int32: "int32", trt.int64: "int64",
                  trt.int8: "int8", trt.bool: "bool"}
        self.dtypes: dict[str, str | None] = {}
        names_in, names_out = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            self.dtypes[name] = dtypes.get(engine.get_tensor_dtype(name))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (names_in if is_input else names_out).append((name, len(engine.get_tensor_shape(name))))
        for kind, got, want in (("inputs", names_in, spec.inputs), ("outputs", names_out, spec.outputs)):
            if sorted(got) != sorted((t.name, len(t.shape)) for t in want):
                raise EngineError(f"{entry.plan}: engine {kind} {sorted(got)} do not match the manifest's graph "
                                  f"{spec.role}: mismatched engine; rebuild with --force")
        missing = [n for n, t in self.dtypes.items() if t is None]
        if missing:
            raise EngineError(f"{entry.plan}: unsupported tensor dtype for {missing}")


class _Bound:
    """An execution context whose input shapes and tensor addresses are set once (for one batch size)."""

    def __init__(self, graph: _Graph, context: Any, cuda: Any, tensors: Mapping[str, Any], batch: int) -> None:
        self.role, self.context, self.cuda = graph.spec.role, context, cuda
        for t in graph.spec.inputs:
            if not context.set_input_shape(t.name, t.concrete(batch)):
                raise EngineError(f"TensorRT refused shape {t.concrete(batch)} for {self.role} input {t.name}")
        for name in graph.dtypes:
            if not context.set_tensor_address(name, cuda.ptr(tensors[name])):
                raise EngineError(f"TensorRT refused the address of {self.role} tensor {name}")

    def launch(self) -> None:
        if not self.context.execute_async_v3(self.cuda.handle):
            raise EngineError(f"TensorRT execution of {self.role} failed")


class _Slot:
    """Everything of one batch size: device buffers (the step's scratchpad and actions twice: ping-pong),
    pinned host buffers for uploads and read-backs, events."""

    def __init__(self, graphs: Mapping[str, _Graph], cuda: Any, batch: int, recurrent: bool) -> None:
        self.batch = batch
        self.buffers: dict[str, Any] = {}
        self.staging: dict[str, Any] = {}
        for graph in graphs.values():
            for t in (*graph.spec.inputs, *graph.spec.outputs):
                if t.name not in self.buffers:
                    self.buffers[t.name] = cuda.empty(t.concrete(batch), graph.dtypes[t.name])
        for t in graphs["encode"].spec.inputs:
            self.staging[t.name] = cuda.pinned(t.concrete(batch), graphs["encode"].dtypes[t.name])
        step = graphs["step"]
        if recurrent:
            shape = step.spec.output("next_actions").concrete(batch)
            first = self.buffers["actions"] if "actions" in self.buffers else cuda.empty(shape, "float32")
            self.scratch = (self.buffers["scratchpad0"], self.buffers["next_scratchpad"])
            self.acts = (first, self.buffers["next_actions"])
            self.host_change = cuda.pinned((batch,), step.dtypes["change"])
            self.host_actions = cuda.pinned(shape, step.dtypes["next_actions"])
        else:
            self.staging["values"] = cuda.pinned(step.spec.input("values").concrete(batch), step.dtypes["values"])
            self.host_logits = cuda.pinned(step.spec.output("logits").concrete(batch), step.dtypes["logits"])
        self.events = (cuda.event(), cuda.event(), cuda.event())

    def step_tensors(self, direction: int) -> dict[str, Any]:
        """The step's tensors for iteration parity ``direction`` (0: S0 -> S1, 1: S1 -> S0)."""
        a = direction
        return {**self.buffers, "scratchpad": self.scratch[a], "actions": self.acts[a],
                "next_scratchpad": self.scratch[1 - a], "next_actions": self.acts[1 - a]}


class TensorRtEngine(HostEngine):
    """Runs an export directory's graphs as TensorRT engines (see the module doc).

    device: ``cuda`` or ``cuda:N``. precision: ``fp16`` (default) or ``fp32``.
    threads: accepted for the node's common settings; TensorRT runs on the GPU (preprocessing is one thread).
    seed, halting_k_max, halting_delta: as for the other backends. check_every: read the change scalar every
    n-th iteration (1 = the torch rule exactly; n > 1 saves waits and may stop up to n - 1 iterations later).
    cache_dir: engine cache (default ``~/.cache/dream_vla_ros/tensorrt``). on_miss: ``build`` (rebuild, with a
    warning naming what changed) or ``error``. force_build: rebuild even on a hit (``build-engine --force``).
    workspace_mib, optimization_level: builder settings (part of the cache key). cuda_graphs: capture the step
    at batch 1. accept_parity_failure: accept (and record as accepted) FP16 engines failing the parity check.
    progress: hears engine builds and the parity check (which graph, elapsed time).
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
        force_build: bool = False,
        workspace_mib: int = 1024,
        optimization_level: int = 3,
        cuda_graphs: bool = True,
        accept_parity_failure: bool = False,
        progress: common.Progress | None = None,
    ) -> None:
        if on_miss not in ON_MISS:
            raise EngineError(f"tensorrt backend: on_miss must be one of {', '.join(ON_MISS)}, got {on_miss!r}")
        if check_every < 1 or threads < 0:
            raise EngineError("tensorrt backend: check_every must be >= 1 and threads >= 0")
        settings = BuildSettings(precision, workspace_mib, optimization_level)
        self.export = load_export(model_dir)
        trt = import_tensorrt()
        torch, index, identity = cuda_device(device)
        cache = EngineCache(Path(cache_dir) if cache_dir else default_engine_cache())
        messages: list[str] = []
        entries = build_engines(self.export, cache, settings, device=device, force=force_build, on_miss=on_miss,
                                log=lambda m: (messages.append(m), LOG.warning(m)), progress=progress)
        built = [m for m in messages if m.startswith("built")]
        self._cuda = CudaRuntime(torch, index)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        count = 2 if self.export.config.decoder.kind == "recurrent" else 1
        with self._cuda.active():
            self._graphs = {r: _Graph(trt, runtime, entries[r], self.export.graph(r)) for r in ROLES}
            self._contexts = {"encode": (self._graphs["encode"].engine.create_execution_context(),),
                              "step": tuple(self._graphs["step"].engine.create_execution_context()
                                            for _ in range(count))}
        self._init_host(self.export.config, seed, halting_k_max, halting_delta)
        self.check_every, self.cuda_graphs = check_every, cuda_graphs
        self._slots: dict[int, _Slot] = {}
        self._bound: tuple[int, _Slot, _Bound, tuple[Callable[[], None], ...]] | None = None
        self._name = f"tensorrt {trt.__version__} {precision} {identity.gpu} (sm {identity.compute_capability})"
        self.status: dict[str, object] = {
            "engine device": identity.describe(),
            "engine cache": (f"{len(built)} of {len(ROLES)} engines built now" if built else "cached")
                            + f" ({cache.directory})",
        }
        self.parity: parity.ParityRecord | None = None
        with self._cuda.active():
            if precision == "fp16":
                self.parity = self._check_parity(cache, entries, accept_parity_failure, progress)
            self._bind(GRAPH_BATCH)
        LOG.info("%s: engines %s", self._name, ", ".join(str(e.plan) for e in entries.values()))

    # -- parity ----------------------------------------------------------------------------------------------
    def _check_parity(self, cache: EngineCache, entries: Mapping[str, CacheEntry], accept: bool,
                      progress: common.Progress | None) -> parity.ParityRecord:
        """The parity record of this engine set (checked now when none is stored); refuses a failing set that
        nobody accepted."""
        samples_path = self.export.parity_samples
        if samples_path is None:
            raise EngineError(f"{self.export.directory}: the export has no parity samples, so FP16 engines cannot be "
                              "checked against FP32; re-export the model with 'dream-vla-ros export'")
        samples_sha = str(self.export.document["files"][samples_path.name]["sha256"])
        keys = {role: entry.key for role, entry in entries.items()}
        path = cache.parity_path(set_digest(keys, samples_sha, f"rule {parity.RULE_VERSION}"))
        record = stored = parity.read_record(path)
        if record is None:
            samples = parity.load_samples(samples_path)
            halting = self.config.halting  # the reference ran with the export's own halting settings
            with common.heartbeat(progress, f"checking the FP16 engines against ONNX Runtime FP32 on "
                                     f"{len(samples.seeds)} stored observations"):
                self._bind(self.export.batch.max)
                got = parity.decode_samples(samples.observations, samples.seeds, self.pipeline.prepare,
                                            lambda inputs, seeds: self.decode(inputs, seeds, halting, 1),
                                            self.export.batch.max)
            result = parity.compare(samples.reference, got, halting.delta)
            record = parity.ParityRecord(result, {role: str(entry.plan) for role, entry in entries.items()},
                                         time.time())
            if progress is not None:
                progress(f"FP16 parity {result.summary()}")
        if accept and not record.usable:
            record = parity.accepted(record)
        if record != stored:
            write_atomic(path, (json.dumps(record.to_json(), indent=2) + "\n").encode())
        accepted_by = f" (failure accepted by {record.accepted_by})" if record.accepted_by else ""
        self.status["engine parity"] = record.result.summary() + accepted_by
        if not record.usable:
            raise EngineError(
                f"TensorRT fp16 engines of {self.export.directory} fail the parity check against ONNX Runtime "
                f"FP32 ({record.result.summary()}; record {path}): refused. Use precision fp32, or accept them "
                f"explicitly with 'dream-vla-ros build-engine --onnx {self.export.directory} "
                "--accept-parity-failure'")
        return record

    # -- bindings --------------------------------------------------------------------------------------------
    def _bind(self, batch: int) -> tuple[_Slot, _Bound, tuple[Callable[[], None], ...]]:
        """Bind the contexts to ``batch``'s buffers unless they are already (then nothing is set at all);
        returns the slot, the bound encode context and the step launches (graph replays at batch 1)."""
        if self._bound is not None and self._bound[0] == batch:
            return self._bound[1:]
        if batch > self.export.batch.max:
            raise EngineError(f"batch {batch} exceeds the engines' profile maximum {self.export.batch.max}")
        recurrent = self.config.decoder.kind == "recurrent"
        if batch not in self._slots:
            self._slots[batch] = _Slot(self._graphs, self._cuda, batch, recurrent)
        slot = self._slots[batch]
        cuda, step = self._cuda, self._graphs["step"]
        encode = _Bound(self._graphs["encode"], self._contexts["encode"][0], cuda, slot.buffers, batch)
        if recurrent:
            steps = tuple(_Bound(step, ctx, cuda, slot.step_tensors(d), batch)
                          for d, ctx in enumerate(self._contexts["step"]))
        else:
            steps = (_Bound(step, self._contexts["step"][0], cuda, slot.buffers, batch),)
        launches = tuple(s.launch for s in steps)
        self.status["cuda graphs"] = "off (cuda_graphs: false)" if not self.cuda_graphs else "off (batch != 1)"
        if recurrent and self.cuda_graphs and batch == GRAPH_BATCH:
            launches = self._capture(steps, launches)
        elif not recurrent:
            self.status["cuda graphs"] = "off (discrete decoder: inputs change every step)"
        self._bound = (batch, slot, encode, launches)
        return slot, encode, launches

    def _capture(self, steps: Sequence[_Bound], launches: tuple[Callable[[], None], ...]
                 ) -> tuple[Callable[[], None], ...]:
        """Graph replays of the step launches, or the launches with the reason in ``status`` when capture fails."""
        cuda = self._cuda
        try:
            for bound in steps:  # TensorRT: one launch after setting shapes before a capture
                bound.launch()
            cuda.synchronize()
            replays = tuple(cuda.capture(bound.launch) for bound in steps)
        except Exception as exc:  # noqa: BLE001 - capture fails in several ways; launches still work
            cuda.synchronize()
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.status["cuda graphs"] = f"off (capture failed: {reason})"
            LOG.warning("TensorRT step: CUDA graph capture failed, launching instead (%s)", reason)
            return launches
        self.status["cuda graphs"] = f"step captured at batch {GRAPH_BATCH}"
        return replays

    # -- decoding --------------------------------------------------------------------------------------------
    def _upload(self, slot: _Slot, name: str, array: np.ndarray) -> None:
        staging = slot.staging[name]
        self._cuda.host(staging)[...] = array
        self._cuda.copy(slot.buffers[name], staging)

    def decode(self, inputs, seeds: Sequence[int] | None = None, halting: HaltingConfig | None = None,
               check_every: int | None = None) -> Decoded:
        with self._cuda.active():  # the calling thread (the node's inference worker) may have another device
            return self._decode(inputs, seeds, halting or self.halting, check_every or self.check_every)

    def _decode(self, inputs, seeds: Sequence[int] | None, halting: HaltingConfig, check_every: int) -> Decoded:
        batch = inputs.images.shape[0]
        seeds = [self.seed] * batch if seeds is None else list(seeds)
        slot, encode, launches = self._bind(batch)
        cuda = self._cuda
        start, encoded, _ = slot.events
        t0 = time.perf_counter()
        cuda.record(start)
        for name, array in (("images", inputs.images), ("tokens", inputs.tokens), ("proprio", inputs.proprio)):
            self._upload(slot, name, array)
        recurrent = self.config.decoder.kind == "recurrent"
        if recurrent:
            self._upload(slot, "noise", self.pipeline.noise(seeds))
        encode.launch()
        cuda.record(encoded)
        if recurrent:
            result = self._recurrent_loop(slot, launches, batch, halting, check_every)
        else:
            result = self._discrete_loop(slot, launches[0], batch, halting)
        total = (time.perf_counter() - t0) * 1e3
        trunk = cuda.elapsed_ms(start, encoded)
        return Decoded(result.actions, result.iterations, result.reasons, result.changes,
                       {"trunk": trunk, "core": max(0.0, total - trunk)})

    def _read(self, slot: _Slot, pairs: Sequence[tuple[Any, Any]]) -> None:
        """Copy device -> pinned host buffers and wait for exactly that (the loop's only waits)."""
        cuda = self._cuda
        for dst, src in pairs:
            cuda.copy(dst, src)
        cuda.record(slot.events[2])
        cuda.wait(slot.events[2])

    def _recurrent_loop(self, slot: _Slot, launches: Sequence[Callable[[], None]], batch: int,
                        halting: HaltingConfig, check_every: int) -> Decoded:
        if "actions" in self._graphs["step"].dtypes:
            self._cuda.zero(slot.acts[0])  # the "action" metric compares with the previous decode
        tracker = HaltingTracker(batch, halting, check_every)
        for k in range(1, halting.k_max + 1):
            a = (k - 1) % 2
            launches[a]()
            change = None
            read = tracker.wants_change(k)
            if read:  # the change and this iteration's chunk in one read-back
                self._read(slot, [(slot.host_change, slot.buffers["change"]), (slot.host_actions, slot.acts[1 - a])])
                change = self._cuda.host(slot.host_change).astype(np.float32)

            def actions(read=read, source=slot.acts[1 - a]) -> np.ndarray:
                if not read:
                    self._read(slot, [(slot.host_actions, source)])
                return self._cuda.host(slot.host_actions).astype(np.float32)

            if tracker.update(k, change, actions):
                break
        return tracker.result({})

    def _discrete_loop(self, slot: _Slot, launch: Callable[[], None], batch: int, halting: HaltingConfig
                       ) -> Decoded:
        c = self.config

        def logits(values: np.ndarray) -> np.ndarray:
            self._upload(slot, "values", values)
            launch()
            self._read(slot, [(slot.host_logits, slot.buffers["logits"])])
            return self._cuda.host(slot.host_logits).astype(np.float32)

        ids, iterations, reasons = unmask_numpy(logits, (batch, c.chunk_length, c.num_joints), c.decoder.bins, halting)
        return Decoded(dequantize(ids, c), iterations, reasons, np.zeros((0, batch), np.float32))


def default_engine_cache() -> Path:
    from dream_vla_ros.engines.onnxruntime_engine import default_cache_dir

    return default_cache_dir() / "tensorrt"
