"""The ONNX Runtime backend: the exported split graphs (see :mod:`.export`) with the halting loop on the host.

No torch: numpy/OpenCV preprocessing (``policy.preprocess``), ONNX Runtime sessions, numpy halting.

Providers: ``device="cpu"`` uses the CPU provider only. ``device="cuda[:N]"`` asks for TensorRT EP -> CUDA EP
-> CPU, in that order, among the providers this onnxruntime build has. The provider actually in use (the
first one the session registered) is part of :attr:`name`, which the policy node logs and reports on
``/diagnostics``; a fallback (e.g. ``onnxruntime-gpu`` without a usable CUDA runtime registers only the CPU
provider) is logged as a warning and named in :attr:`name`, or refused with ``fallback=False``.

Threads: ``threads`` intra-op threads per session (0 = ONNX Runtime's default, one per physical core), one
inter-op thread, sequential execution, and no spinning (``session.intra_op.allow_spinning = "0"``): the encode
and step sessions alternate, and spinning pools fight each other and the ROS nodes on a shared CPU.

Loop: the encode graph runs once per chunk; the step graph runs k times. Tensors go from one run to the next
as ``OrtValue`` objects, so with the CUDA/TensorRT providers they stay on the device; the host reads one change
scalar per sample per checked iteration (``check_every``) and the actions of a sample when it stops.

TensorRT EP caches: ONNX Runtime names its cached engines after the graph's structure, not its weights, so one
folder shared by every model would hand a retrained checkpoint of the same architecture the previous model's
engine. Each graph gets its own folder, named after its digest (bytes of the graph and its weights):
``<cache_dir>/ort_tensorrt/<role>-<digest 16>``. ``trt_timing_cache_path`` exists from ONNX Runtime 1.17 on
and is passed only there (older builds reject the option, and the session then falls back to another
provider). Building those engines on a miss takes minutes inside session creation: ``progress`` hears about it.

Precision: ``fp32``; ``fp16`` with the TensorRT EP only (``trt_fp16_enable``; fp16 on CPU is slower than fp32);
``int8``: the int8-quantised encode graph (``export --int8-encoder``) with the fp32 step graph.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from dream_vla_ros.engines.common import Progress, heartbeat
from dream_vla_ros.engines.host_loop import ChangeAndActions, HostLoopEngine
from dream_vla_ros.engines.manifest import Export, GraphSpec, check_session_io
from dream_vla_ros.engines.trt_ops import parse_version
from dream_vla_ros.errors import EngineError

LOG = logging.getLogger("dream_vla_ros.engines.onnxruntime")

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
SHORT = {TRT_EP: "tensorrt", CUDA_EP: "cuda", CPU_EP: "cpu"}
PRECISIONS = ("fp32", "fp16", "int8")
TIMING_CACHE_PATH_SINCE = (1, 17)
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool"}


def default_cache_dir() -> Path:
    """``$DREAM_VLA_CACHE`` or ``$XDG_CACHE_HOME/dream_vla_ros`` (``~/.cache/dream_vla_ros``)."""
    if os.environ.get("DREAM_VLA_CACHE"):
        return Path(os.environ["DREAM_VLA_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dream_vla_ros"


def trt_cache_folder(cache_dir: Path, spec: GraphSpec) -> Path:
    """The TensorRT EP engine/timing cache folder of one graph: one per graph digest."""
    return cache_dir / "ort_tensorrt" / f"{spec.role}-{spec.digest[:16]}"


def _shapes(spec: GraphSpec, export: Export, which: int) -> str:
    """``name:d0xd1x...`` list of the dynamic inputs at the profile's min (0), opt (1) or max (2) batch."""
    return ",".join(f"{name}:{'x'.join(map(str, shapes[which]))}" for name, *shapes in spec.profile(export.batch))


def _host(value: Any) -> np.ndarray:
    """A run output on the host: numpy arrays as they are, OrtValues copied (device -> host when on a GPU)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


class OnnxRuntimeEngine(HostLoopEngine):
    """Runs an export directory (or a checkpoint directory with an ``onnx/`` export) with ONNX Runtime.

    device: ``cpu``, ``cuda`` or ``cuda:N`` (TensorRT EP -> CUDA EP -> CPU).
    precision: ``fp32``, ``fp16`` (TensorRT EP) or ``int8`` (int8 encode graph, fp32 core).
    threads: intra-op threads per session (0 = ONNX Runtime's default).
    seed: scratchpad noise seed (same observation + seed = same chunk as the torch backend).
    halting_k_max / halting_delta: override the exported model's halting defaults (0 / negative = keep them).
    check_every: read the change scalar every n-th iteration only (1 = exactly the torch halting rule).
    fallback: allow running on another provider than asked (logged); False raises EngineError instead.
    cache_dir: root of the TensorRT EP caches (default: :func:`default_cache_dir`; one folder per graph under
        ``ort_tensorrt``).
    progress: receives progress messages while TensorRT EP sessions are created (engine builds on a miss).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int = 0,
        seed: int = 0,
        halting_k_max: int = 0,
        halting_delta: float = -1.0,
        check_every: int = 1,
        fallback: bool = True,
        cache_dir: str = "",
        progress: Progress | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError(f"onnxruntime backend: onnxruntime is not installed ({exc}); "
                              "pip install onnxruntime") from None
        if precision not in PRECISIONS:
            raise EngineError(f"onnxruntime backend: precision {precision!r} is not supported "
                              f"(supported: {', '.join(PRECISIONS)})")
        if device != "cpu" and not device.startswith("cuda"):
            raise EngineError(f"onnxruntime backend: unknown device {device!r} (use cpu, cuda or cuda:N)")
        super().__init__(model_dir, seed=seed, halting_k_max=halting_k_max, halting_delta=halting_delta,
                         check_every=check_every, threads=threads)
        self._ort = ort
        self.precision = precision
        encode_role = "encode_int8" if precision == "int8" else "encode"
        encode_spec = self.export.graph(encode_role, "export with --int8-encoder" if precision == "int8" else "")
        step_spec = self.export.graph("step")
        self._cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        requested, notes = self._provider_chain(device, precision)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._encode_session = self._session(encode_spec, options, requested, progress)
        self._step_session = self._session(step_spec, options, requested, progress)
        self.providers: tuple[str, ...] = tuple(self._encode_session.get_providers())
        self.provider = self.providers[0]
        wanted = CPU_EP if device == "cpu" else (TRT_EP if TRT_EP in self._ort.get_available_providers()
                                                  and precision != "int8" else CUDA_EP)
        step_provider = self._step_session.get_providers()[0]
        name = f"onnxruntime {SHORT.get(self.provider, self.provider)} {precision}"
        on_gpu = {TRT_EP, CUDA_EP} if device != "cpu" else {CPU_EP}
        if self.provider not in on_gpu or step_provider != self.provider:
            reason = "; ".join(notes) or f"{wanted} did not register (no usable CUDA runtime or device?)"
            message = f"onnxruntime backend: asked for {device} ({wanted}), running on {self.provider}: {reason}"
            if not fallback:
                raise EngineError(message + " (fallback=False)")
            LOG.warning(message)
            name += f" (fallback from {device}: {reason})"
        if precision == "fp16" and self.provider != TRT_EP:
            raise EngineError(f"onnxruntime backend: fp16 needs the TensorRT execution provider; "
                              f"in use: {self.provider}")
        LOG.info("%s: providers %s", name, ", ".join(self.providers))
        if precision == "int8":
            LOG.info("int8 encoder accuracy vs fp32 (measured at export): %s", encode_spec.notes.get("accuracy"))
        self._name = name
        self._io = {id(s): ([i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()])
                    for s in (self._encode_session, self._step_session)}
        self._step_inputs = self._io[id(self._step_session)][0]
        self.device_values = self.provider != CPU_EP
        """Pass OrtValues between runs (device-resident tensors); numpy arrays on the CPU provider."""

    # -- construction ----------------------------------------------------------------------------------------
    def _provider_chain(self, device: str, precision: str) -> tuple[list[Any], list[str]]:
        """The providers to ask for, in order, and notes on those this build lacks (the TensorRT EP's cache
        folders are set per graph by :meth:`_session`)."""
        available = set(self._ort.get_available_providers())
        if device == "cpu":
            return [CPU_EP], []
        device_id = int(device.partition(":")[2] or 0)
        chain: list[Any] = []
        notes: list[str] = []
        if TRT_EP in available and precision != "int8":
            chain.append((TRT_EP, {
                "device_id": device_id,
                "trt_fp16_enable": precision == "fp16",
                "trt_layer_norm_fp32_fallback": True,
                "trt_engine_cache_enable": True,
                "trt_timing_cache_enable": True,
                "trt_max_workspace_size": 1 << 30,
                "trt_builder_optimization_level": 3,
            }))
        elif TRT_EP not in available:
            notes.append(f"{TRT_EP} is not in this onnxruntime build")
        if CUDA_EP in available:
            chain.append((CUDA_EP, {"device_id": device_id}))
        else:
            notes.append(f"{CUDA_EP} is not in this onnxruntime build (install onnxruntime-gpu)")
        chain.append(CPU_EP)
        return chain, notes

    def _session(self, spec: GraphSpec, options, providers: list[Any], progress: Progress | None = None):
        path = self.export.path(spec)
        uses_trt = isinstance(providers[0], tuple) and providers[0][0] == TRT_EP
        if uses_trt:
            # This graph's own cache folder and the TensorRT EP's optimisation profile (min/opt/max of every
            # dynamic input of this graph).
            opts = dict(providers[0][1])
            folder = trt_cache_folder(self._cache_dir, spec)
            folder.mkdir(parents=True, exist_ok=True)
            opts["trt_engine_cache_path"] = str(folder)
            if parse_version(self._ort.__version__) >= TIMING_CACHE_PATH_SINCE:
                opts["trt_timing_cache_path"] = str(folder)
            for key, which in (("trt_profile_min_shapes", 0), ("trt_profile_opt_shapes", 1),
                               ("trt_profile_max_shapes", 2)):
                opts[key] = _shapes(spec, self.export, which)
            providers = [(TRT_EP, opts), *providers[1:]]
        what = f"TensorRT EP engine for {spec.role} (built on a cache miss: minutes)"
        try:
            with heartbeat(progress if uses_trt else None, f"preparing the {what}"):
                session = self._ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises several types for unreadable or invalid graphs
            message = f"{path}: onnxruntime cannot load it: {type(exc).__name__}: {exc}"
            raise EngineError(message.splitlines()[0]) from None

        def described(values) -> list[tuple[str, str, list]]:
            return [(v.name, _ORT_TYPES.get(v.type, v.type), list(v.shape)) for v in values]

        check_session_io(spec, described(session.get_inputs()), described(session.get_outputs()), str(path))
        return session

    # -- decoding --------------------------------------------------------------------------------------------
    def _value(self, array: np.ndarray):
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))

    def _run(self, session, feeds: dict[str, Any]) -> dict[str, Any]:
        """One session run -> output name -> array. On the CPU provider with numpy arrays (the cheapest call);
        with a GPU provider with ``OrtValue`` objects in and out, so tensors stay on the device between runs."""
        inputs, outputs = self._io[id(session)]
        try:
            if not self.device_values:
                return dict(zip(outputs, session.run(outputs, {n: feeds[n] for n in inputs}), strict=True))
            values = {n: v if isinstance(v, self._ort.OrtValue) else self._value(v)
                      for n, v in ((n, feeds[n]) for n in inputs)}
            return dict(zip(outputs, session.run_with_ort_values(outputs, values), strict=True))
        except Exception as exc:  # noqa: BLE001 - a failing run is an engine failure with its cause
            raise EngineError(f"onnxruntime run failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None

    def _encode(self, inputs, noise: np.ndarray | None) -> dict[str, Any]:
        """The encode run's outputs: the discrete decoder's context, or the step's first state (recurrent)."""
        feeds = {"images": inputs.images, "tokens": inputs.tokens, "proprio": inputs.proprio}
        if noise is None:
            return self._run(self._encode_session, feeds)
        encoded = self._run(self._encode_session, {**feeds, "noise": noise})
        state = {name: encoded[name] for name in self._step_inputs if name in encoded}
        state["scratchpad"] = encoded["scratchpad0"]
        if "actions" in self._step_inputs:
            c = self.config
            state["actions"] = np.zeros((len(inputs.images), c.chunk_length, c.num_joints), np.float32)
        return state

    def _core_step(self, run: dict[str, Any], k: int, read_change: bool) -> ChangeAndActions:
        out = self._run(self._step_session, run)
        run["scratchpad"] = out["next_scratchpad"]
        if "actions" in run:
            run["actions"] = out["next_actions"]
        return (_host(out["change"]) if read_change else None), lambda: _host(out["next_actions"])

    def _logits(self, run: dict[str, Any], values: np.ndarray) -> np.ndarray:
        return _host(self._run(self._step_session, {**run, "values": values})["logits"])
