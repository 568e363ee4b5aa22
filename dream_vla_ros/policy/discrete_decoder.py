"""Masked discrete-diffusion action decoder (after Dream-VLA's discrete path), the alternative decoder (torch).

Every normalised action value is clipped to [-bin_range, bin_range] and quantised into ``bins`` uniform bins;
id ``bins`` is the mask. The decoder has one token per chunk row: the sum of a per-joint embedding of each
joint's value (or mask), a row position and a proprio embedding. Its blocks attend over the H rows and the
trunk's final features plus a proprio token in one softmax (context keys/values projected once per chunk); a
head gives [H, J, bins] logits. Decoding (:func:`unmask`) starts fully masked and, at step s of k_max, decides
the most confident undecided values until ceil(N s / k_max) of the N = H J values are decided, plus every value
whose probability reaches ``HaltingConfig.confidence``; a sample halts when all its values are decided.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dream_vla_ros.policy.config import HaltingConfig, ModelConfig
from dream_vla_ros.policy.layers import DecoderBlock
from dream_vla_ros.policy.observation import CONVERGED, MAX_ITERATIONS


class DiscreteDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, trunk_width = config.decoder, config.trunk.width
        w, h, j = d.width, config.chunk_length, config.num_joints
        self.bins, self.bin_range, self.num_joints = d.bins, d.bin_range, j
        self.proprio_proj = nn.Linear(j, trunk_width)
        self.proprio_row = nn.Linear(j, w)
        self.value_embed = nn.Embedding(j * (d.bins + 1), w)
        self.position = nn.Parameter(torch.zeros(h, w))
        self.blocks = nn.ModuleList(
            DecoderBlock(w, d.heads, d.mlp_ratio, trunk_width) for _ in range(d.discrete_layers)
        )
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, j * d.bins)
        self.register_buffer("joint_offset", torch.arange(j) * (d.bins + 1), persistent=False)
        nn.init.trunc_normal_(self.position, std=0.02)

    @property
    def mask_id(self) -> int:
        return self.bins

    def prepare(self, final: torch.Tensor, proprio: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Final features [B, T, W], proprio [B, J] -> (rows [B, H, w], flat keys/values (k_0, v_0, ...)).

        ``rows`` = row position + an embedding of the proprio, so every row sees the current joints directly.
        """
        rows = self.position + self.proprio_row(proprio)[:, None, :]
        context = torch.cat([final, self.proprio_proj(proprio)[:, None, :]], dim=1)
        kv: list[torch.Tensor] = []
        for block in self.blocks:
            kv.extend(block.project_context(context))
        return rows, tuple(kv)

    def logits(self, values: torch.Tensor, rows: torch.Tensor, kv: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Bin ids [B, H, J] (``mask_id`` = masked), rows, kv -> logits [B, H, J, bins]."""
        x = self.value_embed(values + self.joint_offset).sum(dim=2) + rows
        for i, block in enumerate(self.blocks):
            x = block(x, kv[2 * i], kv[2 * i + 1])
        return self.head(self.norm(x)).unflatten(-1, (self.num_joints, self.bins))

    def quantize(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised actions -> bin ids (int64)."""
        unit = (actions.clamp(-self.bin_range, self.bin_range) + self.bin_range) / (2.0 * self.bin_range)
        return (unit * self.bins).floor().clamp(0, self.bins - 1).to(torch.int64)

    def dequantize(self, ids: torch.Tensor) -> torch.Tensor:
        """Bin ids -> bin centres in normalised units."""
        return (ids.to(torch.float32) + 0.5) * (2.0 * self.bin_range / self.bins) - self.bin_range


@dataclass(frozen=True)
class UnmaskResult:
    """values: decided bin ids [B, H, J]; iterations: steps run per sample [B]; reasons: B strings."""

    values: torch.Tensor
    iterations: torch.Tensor
    reasons: tuple[str, ...]


def unmask(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, int, int],
    mask_id: int,
    halting: HaltingConfig,
    device: torch.device | str = "cpu",
) -> UnmaskResult:
    """Parallel confidence-ordered unmasking of ``shape`` = (B, H, J) values, per sample (see module doc)."""
    batch, rows, joints = shape
    n = rows * joints
    values = torch.full((batch, n), mask_id, dtype=torch.int64, device=device)
    decided = torch.zeros(batch, n, dtype=torch.bool, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    iterations = torch.zeros(batch, dtype=torch.int64, device=device)
    converged = torch.zeros(batch, dtype=torch.bool, device=device)
    for s in range(1, halting.k_max + 1):
        probs = logits_fn(values.view(batch, rows, joints)).flatten(1, 2).softmax(dim=-1)  # [B, N, bins]
        confidence, prediction = probs.max(dim=-1)
        undecided = ~decided
        ranked = torch.where(undecided, confidence, torch.full_like(confidence, -1.0))
        rank = ranked.argsort(dim=1, descending=True, stable=True).argsort(dim=1, stable=True)
        need = (math.ceil(n * s / halting.k_max) - decided.sum(dim=1)).clamp(min=0)
        reveal = undecided & ((rank < need[:, None]) | (confidence >= halting.confidence)) & active[:, None]
        values = torch.where(reveal, prediction, values)
        decided |= reveal
        iterations += active.to(torch.int64)
        done = active & decided.all(dim=1)
        if s < halting.k_max:
            converged |= done
        active &= ~done
        if not bool(active.any()):
            break
    reasons = tuple(CONVERGED if c else MAX_ITERATIONS for c in converged.tolist())
    return UnmaskResult(values.view(batch, rows, joints), iterations, reasons)
