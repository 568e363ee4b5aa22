"""``load_engine(model_dir, backend, **settings) -> Engine``: one entry point for every backend.

``backend`` is a registered name (:data:`BACKENDS`) or, for a custom engine, ``package.module:factory``;
the factory is called as ``factory(model_dir, **settings)`` and must return an object satisfying
:class:`~dream_vla_ros.engines.base.Engine`. Failures raise :class:`EngineError` (unknown backend, missing
dependency, unknown setting, broken engine) or :class:`CheckpointError` (missing or corrupt model directory),
each with a message that names what is wrong. ``progress`` (one-line messages while an engine is prepared:
TensorRT builds take minutes) reaches only factories that name a ``progress`` keyword.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from dream_vla_ros.engines.base import Engine
from dream_vla_ros.engines.common import Progress
from dream_vla_ros.errors import CheckpointError, EngineError

# name -> "module:factory". Other backends register here as they land.
BACKENDS: dict[str, str] = {
    "torch": "dream_vla_ros.engines.torch_engine:TorchEngine",
    "onnxruntime": "dream_vla_ros.engines.onnxruntime_engine:OnnxRuntimeEngine",
    "tensorrt": "dream_vla_ros.engines.tensorrt_engine:TensorRtEngine",
}


def _factory(backend: str):
    target = BACKENDS.get(backend, backend if ":" in backend else "")
    if not target:
        raise EngineError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))} "
                          "(or a custom engine as 'package.module:factory')")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineError(f"backend {backend!r} is unavailable: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise EngineError(f"backend {backend!r}: {module_name} has no callable {attribute!r}")
    return factory


def _parameters(factory: Any) -> dict[str, inspect.Parameter]:
    """The factory's parameters (empty when they cannot be known)."""
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return {}


def _check_settings(factory: Any, backend: str, settings: dict[str, Any]) -> None:
    parameters = _parameters(factory)
    if not parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(settings) - set(parameters))
    if unknown:
        raise EngineError(f"backend {backend!r}: unknown setting {unknown[0]!r}; accepted: {', '.join(accepted)}")


def load_engine(model_dir: str | Path, backend: str = "torch", progress: Progress | None = None,
                **settings: Any) -> Engine:
    """Load the model in ``model_dir`` (a path or a shipped model name) with ``backend``."""
    from dream_vla_ros.paths import resolve_model

    if not str(model_dir):
        raise CheckpointError("no model given (set the 'model' parameter to a model directory)")
    path = resolve_model(model_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path}: model directory not found")
    factory = _factory(backend)
    _check_settings(factory, backend, settings)
    if progress is not None and "progress" in _parameters(factory):
        settings = {**settings, "progress": progress}
    try:
        engine = factory(path, **settings)
    except (EngineError, CheckpointError):
        raise
    except Exception as exc:
        raise EngineError(f"backend {backend!r} failed to load {path}: {type(exc).__name__}: {exc}") from exc
    for attribute in ("infer", "metadata", "name"):
        if not hasattr(engine, attribute):
            raise EngineError(f"backend {backend!r} returned an object without {attribute!r}: not an Engine")
    return engine
