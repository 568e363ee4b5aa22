"""The TensorRT backend: the cached engines of an export (:mod:`.tensorrt_build`), checked, and a host halting loop.

Launch (:class:`TensorRtEngine`): a hit is loaded after its SHA-256 is verified (a corrupt plan is refused,
never rebuilt silently); a miss is rebuilt with a warning that names what changed (``on_miss="build"``) or
refused (``on_miss="error"``). FP16 engines are then checked against the export's ONNX Runtime FP32 samples
(:mod:`.parity`); the result is stored next to the plans, shown in :attr:`TensorRtEngine.status`, and a
failing set is refused unless accepted explicitly.

Loop (the flow of :class:`~.host_loop.HostLoopEngine`): per batch size, device buffers and the tensor shapes
and addresses of three execution contexts (encode; step "ping" S0 -> S1 and step "pong" S1 -> S0, so no copy
and no re-binding between iterations) are set once. At batch 1 each step context is captured as a CUDA graph
(after one launch, as TensorRT requires; a failed capture falls back to launches, with the reason in
``status``). Per chunk: asynchronous uploads from pinned memory, one encode launch, then per iteration one
step launch or replay; the host waits only when it reads the change scalars back (every ``check_every``
iterations, with that iteration's chunk in the same copy).

Importing this module needs neither TensorRT nor torch; :class:`TensorRtEngine` needs both (torch with CUDA
for device buffers and streams, in :class:`CudaRuntime` only).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.engines import common, parity, tensorrt_build
from dream_vla_ros.engines.engine_cache import CacheEntry, EngineCache, set_digest
from dream_vla_ros.engines.host_loop import ChangeAndActions, HostLoopEngine
from dream_vla_ros.engines.manifest import GraphSpec, write_atomic
from dream_vla_ros.errors import EngineError

LOG = logging.getLogger("dream_vla_ros.engines.tensorrt")

GRAPH_BATCH = 1
"""The batch size whose step launches are captured as CUDA graphs (the policy node's)."""


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


class TensorRtEngine(HostLoopEngine):
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

    backend = "tensorrt"

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
        build = tensorrt_build
        if on_miss not in build.ON_MISS:
            raise EngineError(f"tensorrt backend: on_miss must be one of {', '.join(build.ON_MISS)}, got {on_miss!r}")
        settings = build.BuildSettings(precision, workspace_mib, optimization_level)
        super().__init__(model_dir, seed=seed, halting_k_max=halting_k_max, halting_delta=halting_delta,
                         check_every=check_every, threads=threads)
        trt = build.import_tensorrt()
        torch, index, identity = build.cuda_device(device)
        cache = EngineCache(Path(cache_dir) if cache_dir else default_engine_cache())
        messages: list[str] = []
        entries = build.build_engines(self.export, cache, settings, device=device, force=force_build,
                                      on_miss=on_miss, log=lambda m: (messages.append(m), LOG.warning(m)),
                                      progress=progress)
        built = [m for m in messages if m.startswith("built")]
        self._cuda = CudaRuntime(torch, index)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        count = 2 if self.config.decoder.kind == "recurrent" else 1
        with self._cuda.active():
            self._graphs = {r: _Graph(trt, runtime, entries[r], self.export.graph(r)) for r in build.ROLES}
            self._contexts = {"encode": (self._graphs["encode"].engine.create_execution_context(),),
                              "step": tuple(self._graphs["step"].engine.create_execution_context()
                                            for _ in range(count))}
        self.cuda_graphs = cuda_graphs
        self._slots: dict[int, _Slot] = {}
        self._bound: tuple[int, _Slot, _Bound, tuple[Callable[[], None], ...]] | None = None
        self._name = f"tensorrt {trt.__version__} {precision} {identity.gpu} (sm {identity.compute_capability})"
        self.status: dict[str, object] = {
            "engine device": identity.describe(),
            "engine cache": (f"{len(built)} of {len(build.ROLES)} engines built now" if built else "cached")
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

    def _device(self) -> Any:
        return self._cuda.active()  # the calling thread (the node's inference worker) may have another device

    def _encode(self, inputs, noise: np.ndarray | None) -> tuple[_Slot, tuple[Callable[[], None], ...]]:
        """Uploads and the encode launch (between the slot's start and encoded events); returns the slot and the
        step launches."""
        slot, encode, launches = self._bind(inputs.images.shape[0])
        cuda = self._cuda
        start, encoded, _ = slot.events
        cuda.record(start)
        for name, array in (("images", inputs.images), ("tokens", inputs.tokens), ("proprio", inputs.proprio)):
            self._upload(slot, name, array)
        if noise is not None:
            self._upload(slot, "noise", noise)
        encode.launch()
        cuda.record(encoded)
        if noise is not None and "actions" in self._graphs["step"].dtypes:
            cuda.zero(slot.acts[0])  # the "action" metric compares with the previous decode
        return slot, launches

    def _timings(self, run: tuple[_Slot, Any], start: float, encoded: float, end: float) -> dict[str, float]:
        """``trunk`` from the slot's CUDA events, ``core`` the rest of the host time."""
        events = run[0].events
        trunk = self._cuda.elapsed_ms(events[0], events[1])
        return {"trunk": trunk, "core": max(0.0, (end - start) * 1e3 - trunk)}

    def _read(self, slot: _Slot, pairs: Sequence[tuple[Any, Any]]) -> None:
        """Copy device -> pinned host buffers and wait for exactly that (the loop's only waits)."""
        cuda = self._cuda
        for dst, src in pairs:
            cuda.copy(dst, src)
        cuda.record(slot.events[2])
        cuda.wait(slot.events[2])

    def _core_step(self, run: tuple[_Slot, Sequence[Callable[[], None]]], k: int, read_change: bool
                   ) -> ChangeAndActions:
        slot, launches = run
        a = (k - 1) % 2
        launches[a]()
        change = None
        if read_change:  # the change and this iteration's chunk in one read-back
            self._read(slot, [(slot.host_change, slot.buffers["change"]), (slot.host_actions, slot.acts[1 - a])])
            change = self._cuda.host(slot.host_change).astype(np.float32)

        def actions() -> np.ndarray:
            if not read_change:
                self._read(slot, [(slot.host_actions, slot.acts[1 - a])])
            return self._cuda.host(slot.host_actions).astype(np.float32)

        return change, actions

    def _logits(self, run: tuple[_Slot, Sequence[Callable[[], None]]], values: np.ndarray) -> np.ndarray:
        slot, launches = run
        self._upload(slot, "values", values)
        launches[0]()
        self._read(slot, [(slot.host_logits, slot.buffers["logits"])])
        return self._cuda.host(slot.host_logits).astype(np.float32)


def default_engine_cache() -> Path:
    from dream_vla_ros.engines.onnxruntime_engine import default_cache_dir

    return default_cache_dir() / "tensorrt"
