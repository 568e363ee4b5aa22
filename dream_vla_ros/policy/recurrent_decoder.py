"""Recurrent-depth action decoder (after RD-VLA), split into export-friendly pure tensor functions (torch).

- :meth:`RecurrentDecoder.prepare` (once per chunk): the Prelude (H learned chunk queries, plus an embedding of
  the proprio so every row sees the current joints directly, attending over themselves and the trunk's mid-layer
  features) gives ``P``; the constant half of the input injection,
  ``W_p P + b``, is computed here once (``prelude_state``); the noisy scratchpad ``S0 = gain * sigma * noise``
  (noise is an input, so the graph is deterministic); and the keys/values of the core's fixed context
  ([final features; proprio token]) for every core layer, projected once.
- :meth:`RecurrentDecoder.step` (k times, weight-tied): input injection ``x = LN(W_s S_{k-1} + prelude_state)``
  (= ``LN(W [S_{k-1}; P] + b)``), the core blocks (attention over the H scratchpad tokens and the cached context,
  MLP) and a LayerNorm -> ``S_k``.
- :meth:`RecurrentDecoder.decode` (Coda): ``S_k`` -> normalised actions [B, H, J].
"""

from __future__ import annotations

import torch
from torch import nn

from dream_vla_ros.policy.config import ModelConfig
from dream_vla_ros.policy.layers import DecoderBlock

KeyValues = tuple[torch.Tensor, ...]
"""Flat (k_0, v_0, k_1, v_1, ...) for the core layers: the form engines pass between graphs."""


class RecurrentDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, trunk_width = config.decoder, config.trunk.width
        w, h, j = d.width, config.chunk_length, config.num_joints
        self.init_sigma = d.init_sigma
        self.mid_norm = nn.LayerNorm(trunk_width)
        self.proprio_proj = nn.Linear(j, trunk_width)
        self.proprio_query = nn.Linear(j, w)
        self.queries = nn.Parameter(torch.zeros(h, w))
        self.prelude = nn.ModuleList(
            DecoderBlock(w, d.heads, d.mlp_ratio, trunk_width) for _ in range(d.prelude_layers)
        )
        self.prelude_norm = nn.LayerNorm(w)
        self.inject_prelude = nn.Linear(w, w)
        self.inject_scratchpad = nn.Linear(w, w, bias=False)
        self.inject_norm = nn.LayerNorm(w)
        self.core = nn.ModuleList(DecoderBlock(w, d.heads, d.mlp_ratio, trunk_width) for _ in range(d.core_layers))
        self.core_norm = nn.LayerNorm(w)
        self.coda = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, j))
        self.init_gain = nn.Parameter(torch.ones(()))
        nn.init.trunc_normal_(self.queries, std=0.02)

    def prepare(
        self, mid: torch.Tensor, final: torch.Tensor, proprio: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, KeyValues]:
        """(mid, final [B, T, W], proprio [B, J], noise [B, H, w]) -> (prelude_state, scratchpad0, kv)."""
        mid_context = self.mid_norm(mid)
        x = self.queries + self.proprio_query(proprio)[:, None, :]
        for block in self.prelude:
            x = block(x, *block.project_context(mid_context))
        prelude_state = self.inject_prelude(self.prelude_norm(x))
        context = torch.cat([final, self.proprio_proj(proprio)[:, None, :]], dim=1)
        kv: list[torch.Tensor] = []
        for block in self.core:
            kv.extend(block.project_context(context))
        scratchpad = noise * (self.init_gain * self.init_sigma)
        return prelude_state, scratchpad, tuple(kv)

    def step(self, scratchpad: torch.Tensor, prelude_state: torch.Tensor, kv: KeyValues) -> torch.Tensor:
        """One weight-tied core iteration: S_{k-1} -> S_k (all [B, H, w])."""
        x = self.inject_norm(self.inject_scratchpad(scratchpad) + prelude_state)
        for i, block in enumerate(self.core):
            x = block(x, kv[2 * i], kv[2 * i + 1])
        return self.core_norm(x)

    def decode(self, scratchpad: torch.Tensor) -> torch.Tensor:
        """Coda: [B, H, w] -> normalised actions [B, H, J]."""
        return self.coda(scratchpad)
