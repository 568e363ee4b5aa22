"""Trunk: bidirectional transformer over [image tokens, instruction tokens, proprio token] (torch).

No attention mask in the transformer (dLLM-style, and export-friendly). Instruction tokens come from one of:

- byte tokens (``tokenizer.kind: bytes``): learned embeddings; padding is a learned token like any other; with
  ``tokenizer.pool`` > 1, each run of ``pool`` byte embeddings is merged into one instruction token;
- WordLlama tokens (``kind: wordllama``): the frozen pretrained table (a non-persistent buffer: never in the
  checkpoint, read from the installed wheel and checked against ``tokenizer.weights_sha256``), a learned
  projection to the trunk width, ``tokenizer.queries`` learned queries that attend over the goal's tokens
  with padding masked out (any goal length gives the same number of trunk tokens), and a small MLP per
  pooled token (residual), so each query can produce whatever token the trunk reads.
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
        words = config.tokenizer.kind == "wordllama"
        self.text_words = WordPooling(config) if words else None
        self.text_pool = config.tokenizer.pool  # byte tokens: the parameter names of the first checkpoints
        self.text_embed = None if words else nn.Embedding(config.tokenizer.vocab_size, t.width)
        self.text_merge = nn.Linear(self.text_pool * t.width, t.width) if self.text_pool > 1 and not words else None
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
        text = self.instruction_tokens(tokens) + self.text_position + self.type_embed[1]
        prop = self.proprio_embed(proprio)[:, None, :] + self.type_embed[2]
        x = torch.cat([image_tokens + self.type_embed[0], text, prop], dim=1)
        mid = x
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i == self.mid_layer:
                mid = x
        return mid, self.norm(x)

    def instruction_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Instruction ids [B, L] -> the trunk's instruction tokens [B, trunk_tokens, W] (before positions)."""
        if self.text_words is not None:
            return self.text_words(tokens)
        text = self.text_embed(tokens)
        if self.text_merge is not None:  # [B, L, W] -> [B, L / pool, pool * W] -> [B, L / pool, W]
            text = self.text_merge(text.unflatten(1, (-1, self.text_pool)).flatten(2))
        return text


class WordPooling(nn.Module):
    """WordLlama ids [B, L] (0 = padding) -> [B, Q, W]: frozen table, projection, masked attention pooling."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from dream_vla_ros.policy.wordllama import WEIGHTS_SHA256, embedding_table

        table = torch.from_numpy(embedding_table(config.tokenizer.weights_sha256 or WEIGHTS_SHA256).copy())
        width = config.trunk.width
        self.register_buffer("table", table, persistent=False)  # fp16 [V, D], frozen
        self.project = nn.Linear(table.shape[1], width)
        self.norm = nn.LayerNorm(width)
        self.queries = nn.Parameter(torch.zeros(config.tokenizer.queries, width))
        self.mix = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width))
        self.scale = width**-0.5
        nn.init.trunc_normal_(self.queries, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        words = self.project(self.table[tokens].float())  # [B, L, W]
        keys = self.norm(words)
        scores = torch.matmul(self.queries, keys.transpose(1, 2)) * self.scale  # [B, Q, L]
        padding = (tokens == 0).unsqueeze(1).to(scores.dtype)  # [B, 1, L]
        weights = torch.softmax(scores - 1e4 * padding, dim=-1)
        pooled = torch.matmul(weights, words)  # [B, Q, W]
        return pooled + self.mix(pooled + self.queries)  # per query: any token the trunk may need
