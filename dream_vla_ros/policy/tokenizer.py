"""Instruction tokenizers (numpy only): instruction string -> int64 ids [max_tokens], id 0 = padding.

- :class:`ByteTokenizer` (``kind: bytes``): token id = UTF-8 byte + 1, nothing to download; instructions
  longer than ``max_tokens`` bytes are cut (the behaviour old checkpoints were trained with). Padding tokens
  are ordinary tokens for the trunk (no attention mask).
- :class:`WordTokenizer` (``kind: wordllama``): WordLlama's Llama-2 sub-word ids (see
  :mod:`dream_vla_ros.policy.wordllama`); padding is masked out of the trunk's attention pooling. Nothing is
  ever cut: a goal of more than :data:`MAX_GOAL_BYTES` bytes or ``max_tokens`` tokens is refused.

Both collapse whitespace and, by default, fold case, so "Open  the Drawer" and "open the drawer" give the same
tokens. :func:`make_tokenizer` picks the one a checkpoint's ``TokenizerConfig`` names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import TokenizerConfig

PAD_ID = 0
MAX_GOAL_BYTES = 512  # the longest goal any tokenizer accepts whole


def normalize_instruction(text: object, lowercase: bool = True) -> str:
    """The canonical form of an instruction (collapsed whitespace, optionally lower case); a non-string or an
    empty instruction raises InputError."""
    if not isinstance(text, str):
        raise InputError(f"instruction: expected a string, got {type(text).__name__}")
    canonical = " ".join(text.split())
    if not canonical:
        raise InputError("instruction: empty (a goal is needed to act)")
    return canonical.lower() if lowercase else canonical


class ByteTokenizer:
    """Instruction string -> int64 ids [max_tokens]."""

    def __init__(self, config: TokenizerConfig) -> None:
        self.config = config

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def encode(self, text: str) -> np.ndarray:
        """Ids [max_tokens] (int64); an empty instruction raises InputError."""
        canonical = normalize_instruction(text, self.config.lowercase)
        data = np.frombuffer(canonical.encode("utf-8"), dtype=np.uint8)[: self.config.max_tokens]
        ids = np.full(self.config.max_tokens, PAD_ID, dtype=np.int64)
        ids[: data.size] = data.astype(np.int64) + 1
        return ids

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Ids [B, max_tokens] (int64)."""
        return _stack(self, texts)

    def decode(self, ids: np.ndarray) -> str:
        """Inverse of :meth:`encode` up to truncation (padding dropped; a cut multi-byte character is replaced)."""
        values = np.asarray(ids, dtype=np.int64)
        values = values[values != PAD_ID] - 1
        return bytes(values.astype(np.uint8).tolist()).decode("utf-8", errors="replace")


class WordTokenizer:
    """Instruction string -> WordLlama ids [max_tokens] (int64, 0 = padding); see the module docstring."""

    def __init__(self, config: TokenizerConfig) -> None:
        from dream_vla_ros.policy import wordllama

        self.config = config
        self._ids = wordllama.token_ids
        self._ids("")  # the tokenizer file is read (or its absence reported) now, not at the first goal

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def encode(self, text: str) -> np.ndarray:
        """Ids [max_tokens]; an empty goal, one over :data:`MAX_GOAL_BYTES` bytes or over ``max_tokens``
        tokens raises InputError (nothing is cut)."""
        canonical = normalize_instruction(text, self.config.lowercase)
        size = len(canonical.encode("utf-8"))
        if size > MAX_GOAL_BYTES:
            raise InputError(f"instruction: {size} bytes, at most {MAX_GOAL_BYTES} are understood (nothing is cut)")
        ids = [i for i in self._ids(canonical) if i != PAD_ID]
        if len(ids) > self.config.max_tokens:
            raise InputError(f"instruction: {len(ids)} tokens, this model reads at most {self.config.max_tokens}")
        out = np.full(self.config.max_tokens, PAD_ID, dtype=np.int64)
        out[: len(ids)] = ids
        return out

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Ids [B, max_tokens] (int64)."""
        return _stack(self, texts)


Tokenizer = ByteTokenizer | WordTokenizer


def make_tokenizer(config: TokenizerConfig) -> Tokenizer:
    """The tokenizer a checkpoint's ``TokenizerConfig`` names."""
    return WordTokenizer(config) if config.kind == "wordllama" else ByteTokenizer(config)


def _stack(tokenizer: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, tokenizer.config.max_tokens), np.int64)
    return np.stack([tokenizer.encode(t) for t in texts])
