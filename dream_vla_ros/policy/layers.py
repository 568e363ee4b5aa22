"""Transformer building blocks shared by the trunk and both decoders (torch).

Export-friendly on purpose: pre-norm LayerNorm, GELU, ``F.scaled_dot_product_attention`` without masks, no
Python control flow that depends on values. The decoder block's context keys/values are projected once
(:meth:`DecoderBlock.project_context`) and reused by every decoder iteration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, T, D] -> [B, T, heads * D]."""
    return x.transpose(1, 2).flatten(-2)


class Mlp(nn.Module):
    def __init__(self, width: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, round(width * ratio))
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = _split_qkv(self.qkv(x), self.heads)
        return self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


def _split_qkv(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T, 3W] -> q, k, v [B, heads, T, W / heads] (one reshape + one permute)."""
    q, k, v = qkv.unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


class EncoderBlock(nn.Module):
    """Bidirectional self-attention block (no mask: the dLLM-style trunk)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Decoder tokens attend jointly over [themselves; a fixed context], then an MLP.

    One softmax covers self-attention over the decoder tokens and cross-attention to the context, whose
    keys/values come from :meth:`project_context` once per chunk (``context_width`` = trunk width). This is
    half the attention kernels of separate self- and cross-attention sub-layers, which matters for a block
    that runs k times per chunk.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, context_width: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.context_kv = nn.Linear(context_width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, mlp_ratio)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context [B, S, context_width] -> keys, values [B, heads, S, W / heads]."""
        k, v = self.context_kv(context).unflatten(-1, (2, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k_self, v_self = _split_qkv(self.qkv(self.norm1(x)), self.heads)
        attended = F.scaled_dot_product_attention(q, torch.cat([k_self, k], dim=2), torch.cat([v_self, v], dim=2))
        x = x + self.out(_merge_heads(attended))
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear/embedding weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
