"""A torch engine whose loading reports progress like a TensorRT build on a cache miss (a custom backend for
test_engine_build_progress). It takes the policy node's engine parameters and shows what it received in
``status`` (which the node puts on /diagnostics); ``on_miss: error`` refuses like a cache miss would.
Loaded as ``backend: slow_build_engine:SlowBuildEngine`` (this directory on PYTHONPATH)."""

from __future__ import annotations

import time

from dream_vla_ros.engines.torch_engine import TorchEngine
from dream_vla_ros.errors import EngineError

STEPS = 4
PERIOD_S = 0.5


class SlowBuildEngine(TorchEngine):
    def __init__(self, model_dir, *, progress=None, on_miss: str = "build", cache_dir: str = "",
                 check_every: int = 1, **settings) -> None:
        if on_miss == "error":
            raise EngineError(f"no usable TensorRT engine for encode: no cached encode engine in {cache_dir}")
        for i in range(STEPS):
            if progress is not None:
                progress(f"building the TensorRT fp16 engine for encode (1 of 1) ({i * PERIOD_S:.0f} s elapsed)")
            time.sleep(PERIOD_S)
        super().__init__(model_dir, **settings)
        self.status = {"engine cache": f"1 of 1 engines built now ({cache_dir})", "check_every": check_every}
