"""Byte-level instruction tokenizer (numpy only, nothing to download).

Token id = UTF-8 byte + 1; id 0 is padding. Whitespace is collapsed and, by default, case folded, so
"Open  the Drawer" and "open the drawer" give the same tokens. The settings live in the checkpoint's
``TokenizerConfig``; the vocabulary is fixed (257 ids), so nothing else needs to be stored.
Padding tokens are ordinary tokens for the trunk (no attention mask), which keeps the graph export-friendly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import TokenizerConfig

PAD_ID = 0


class ByteTokenizer:
    """Instruction string -> int64 ids [max_tokens]."""

    def __init__(self, config: TokenizerConfig) -> None:
        self.config = config

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def normalize(self, text: str) -> str:
        """The canonical form of an instruction (collapsed whitespace, optionally lower case)."""
        text = " ".join(text.split())
        return text.lower() if self.config.lowercase else text

    def encode(self, text: str) -> np.ndarray:
        """Ids [max_tokens] (int64); an empty instruction raises InputError."""
        if not isinstance(text, str):
            raise InputError(f"instruction: expected a string, got {type(text).__name__}")
        canonical = self.normalize(text)
        if not canonical:
            raise InputError("instruction: empty (a goal is needed to act)")
        data = np.frombuffer(canonical.encode("utf-8"), dtype=np.uint8)[: self.config.max_tokens]
        ids = np.full(self.config.max_tokens, PAD_ID, dtype=np.int64)
        ids[: data.size] = data.astype(np.int64) + 1
        return ids

    def encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Ids [B, max_tokens] (int64)."""
        return np.stack([self.encode(t) for t in texts]) if texts else np.zeros((0, self.config.max_tokens), np.int64)

    def decode(self, ids: np.ndarray) -> str:
        """Inverse of :meth:`encode` up to truncation (padding dropped; a cut multi-byte character is replaced)."""
        values = np.asarray(ids, dtype=np.int64)
        values = values[values != PAD_ID] - 1
        return bytes(values.astype(np.uint8).tolist()).decode("utf-8", errors="replace")
