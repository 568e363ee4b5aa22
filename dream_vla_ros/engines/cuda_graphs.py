"""The torch backend on a GPU: CUDA graphs for the fixed-shape parts, optional FP16/BF16 autocast (torch).

At batch 1 every kernel of the encode graph and of one core step has a fixed shape, so each is captured once
as a CUDA graph and replayed: per chunk one encode replay, then one step replay per iteration. The step is
captured twice (ping-pong: buffers 0 -> 1 and 1 -> 0), so no copy runs between iterations. After each checked
iteration the host reads the change scalar (one sync, as the eager loop's ``.tolist()`` does); the actions are
read when the sample stops. Autocast keeps LayerNorm, softmax and the change metric's reductions in FP32.
Only the recurrent decoder is captured (the discrete decoder's host-side unmasking changes its inputs every
step; it runs eagerly). Importing this module needs torch but no GPU; capturing needs CUDA.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from dream_vla_ros.engines.common import Decoded
from dream_vla_ros.engines.host_loop import HaltingTracker
from dream_vla_ros.policy.config import HaltingConfig

AUTOCAST = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` on ``device`` (a null context for fp32)."""
    dtype = AUTOCAST[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype, cache_enabled=False)


class CudaGraphDecoder:
    """Batch-1 recurrent decoding of a ``TorchPolicy`` on CUDA by graph replay (captured on first use)."""

    def __init__(self, policy: Any, precision: str = "fp32") -> None:
        if policy.device.type != "cuda":
            raise ValueError("CUDA graphs need a policy on a CUDA device")
        self.policy = policy
        self.precision = precision
        self.device = policy.device
        c = policy.config
        self._metric = (policy.halting.metric, policy.halting.relative)
        dev = self.device
        self.images = torch.zeros(1, len(c.vision.cameras), 3, c.vision.image_size, c.vision.image_size, device=dev)
        self.tokens = torch.zeros(1, c.tokenizer.max_tokens, dtype=torch.int64, device=dev)
        self.proprio = torch.zeros(1, c.num_joints, device=dev)
        self.noise = torch.zeros(1, c.chunk_length, c.decoder.width, device=dev)
        self.scratch = [torch.zeros(1, c.chunk_length, c.decoder.width, device=dev) for _ in range(2)]
        self.acts = [torch.zeros(1, c.chunk_length, c.num_joints, device=dev) for _ in range(2)]
        self.change = torch.zeros(1, device=dev)
        self.host_change = torch.zeros(1, pin_memory=True)
        self._graphs: tuple[torch.cuda.CUDAGraph, ...] | None = None

    def _capture(self, fn) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the graph (cuBLAS handles, autocast casts, allocator)
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph

    @torch.inference_mode()
    def _build(self) -> tuple[torch.cuda.CUDAGraph, ...]:
        from dream_vla_ros.policy.model import EncodeGraph

        encode, step = EncodeGraph(self.policy.model), self.policy.core_step(*self._metric)
        context: dict[str, Any] = {}

        def run_encode() -> None:
            with autocast(self.device, self.precision):
                prelude, scratch, *kv = encode(self.images, self.tokens, self.proprio, self.noise)
            context["prelude"], context["kv"] = prelude, tuple(kv)
            self.scratch[0].copy_(scratch)
            self.acts[0].zero_()

        def run_step(p: int) -> None:
            with autocast(self.device, self.precision):
                s, a, change = step(self.scratch[p], self.acts[p], context["prelude"], *context["kv"])
            self.scratch[1 - p].copy_(s)
            self.acts[1 - p].copy_(a)
            self.change.copy_(change)

        graphs = [self._capture(run_encode)]
        graphs += [self._capture(lambda p=p: run_step(p)) for p in (0, 1)]
        return tuple(graphs)

    @torch.inference_mode()
    def decode(self, inputs: Any, noise: np.ndarray, halting: HaltingConfig) -> Decoded:
        """``preprocess.ModelInputs`` of one observation and its noise [1, H, w] -> :class:`Decoded` (the eager
        loop's halting rule)."""
        if inputs.images.shape[0] != 1 or (halting.metric, halting.relative) != self._metric:
            raise ValueError("CUDA graphs are captured for batch 1 and the policy's halting metric")
        if self._graphs is None:
            self._graphs = self._build()
        encode, *steps = self._graphs
        t0 = time.perf_counter()
        self.images.copy_(torch.from_numpy(inputs.images))
        self.tokens.copy_(torch.from_numpy(inputs.tokens))
        self.proprio.copy_(torch.from_numpy(inputs.proprio))
        self.noise.copy_(torch.from_numpy(noise))
        encode.replay()
        torch.cuda.current_stream(self.device).synchronize()
        t1 = time.perf_counter()
        tracker = HaltingTracker(1, halting)
        for k in range(1, halting.k_max + 1):
            p = (k - 1) % 2
            steps[p].replay()
            change = None
            if tracker.wants_change(k):
                self.host_change.copy_(self.change)
                change = self.host_change.numpy()
            if tracker.update(k, change, lambda p=p: self.acts[1 - p].float().cpu().numpy()):
                break
        out = tracker.result()
        t2 = time.perf_counter()
        return Decoded(np.asarray(out.actions, np.float32), out.iterations, out.reasons, out.changes,
                       {"trunk": (t1 - t0) * 1e3, "core": (t2 - t1) * 1e3})
