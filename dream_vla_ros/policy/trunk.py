"""Trunk: bidirectional transformer over [image tokens, instruction tokens, proprio token] (torch).

No attention mask anywhere (dLLM-style, and export-friendly): instruction padding is a learned token like any
other. With ``tokenizer.pool`` > 1, each run of ``pool`` byte embeddings is merged into one instruction token.
Returns the output of layer ``mid_layer`` (feeds the recurrent prelude) and the final normalised features (feed
the core / the discrete decoder).
"""

from __future__ import annotations

import torch
from torch import nn

from dream_vla_ros.policy.config import ModelConfig
from dream_vla_ros.policy.layers import EncoderBlock


class Trunk(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        t = config.trunk
        self.mid_layer = t.mid_layer
        self.text_pool = config.tokenizer.pool
        self.text_embed = nn.Embedding(config.tokenizer.vocab_size, t.width)
        self.text_merge = nn.Linear(self.text_pool * t.width, t.width) if self.text_pool > 1 else None
        self.text_position = nn.Parameter(torch.zeros(config.tokenizer.trunk_tokens, t.width))
        self.proprio_embed = nn.Linear(config.num_joints, t.width)
        self.type_embed = nn.Parameter(torch.zeros(3, t.width))  # image, text, proprio
        self.blocks = nn.ModuleList(EncoderBlock(t.width, t.heads, t.mlp_ratio) for _ in range(t.layers))
        self.norm = nn.LayerNorm(t.width)
        nn.init.trunc_normal_(self.text_position, std=0.02)
        nn.init.trunc_normal_(self.type_embed, std=0.02)

    def forward(
        self, image_tokens: torch.Tensor, tokens: torch.Tensor, proprio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_tokens [B, P, W], tokens [B, L] int64, proprio [B, J] normalised -> (mid, final) [B, T, W]."""
        text = self.text_embed(tokens)
        if self.text_merge is not None:  # [B, L, W] -> [B, L / pool, pool * W] -> [B, L / pool, W]
            text = self.text_merge(text.unflatten(1, (-1, self.text_pool)).flatten(2))
        text = text + self.text_position + self.type_embed[1]
        prop = self.proprio_embed(proprio)[:, None, :] + self.type_embed[2]
        x = torch.cat([image_tokens + self.type_embed[0], text, prop], dim=1)
        mid = x
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i == self.mid_layer:
                mid = x
        return mid, self.norm(x)
