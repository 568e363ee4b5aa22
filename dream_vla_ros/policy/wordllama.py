"""WordLlama's pretrained token embeddings and tokenizer, read offline from the installed wheel (numpy only).

WordLlama (github.com/dleemiller/WordLlama, MIT licence; weights distilled from the token embeddings of large
language models) ships inside its wheel a 32,000 x 256 fp16 embedding table
(``wordllama/weights/l2_supercat_256.safetensors``) and its Llama-2 tokenizer
(``wordllama/tokenizers/l2_supercat_tokenizer_config.json``, for the ``tokenizers`` library). Its own
``load()`` fetches the tokenizer from a model hub, which a robot cannot do, so this module reads the two files
directly, without importing the package (it declares ``numpy>=2``; install it with ``pip install --no-deps
wordllama==0.4.0.post1`` next to ``tokenizers`` and ``safetensors`` so that a Humble robot keeps numpy 1.x).

Where no wheel exists (WordLlama publishes x86-64 wheels only; a Jetson is aarch64), the two files can come
from any of its wheels, which are zip files: ``unzip -j <wheel> 'wordllama/weights/l2_supercat_256.safetensors'
'wordllama/tokenizers/l2_supercat_tokenizer_config.json' -d DIR`` and ``export DREAM_VLA_WORDLLAMA_DIR=DIR``
(a folder holding both files, looked in first). The SHA-256 check makes either source safe.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dream_vla_ros.errors import CheckpointError
from dream_vla_ros.files import sha256_file

PACKAGE = "wordllama"
VERSION = "0.4.0.post1"
WEIGHTS = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
WEIGHTS_SHA256 = "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5"  # 0.4.0.post1
BOS_ID = 1  # "<s>": added by the tokenizer, dropped here
ENV_DIR = "DREAM_VLA_WORDLLAMA_DIR"
INSTALL_HINT = (f"pip install --no-deps {PACKAGE}=={VERSION} tokenizers safetensors, or the two files in "
                f"${ENV_DIR}: see dream_vla_ros/policy/wordllama.py")


@dataclass(frozen=True)
class WordLlamaFiles:
    """The two files this package uses, in an installed ``wordllama`` wheel."""

    weights: Path
    tokenizer: Path

    @classmethod
    def locate(cls) -> WordLlamaFiles:
        """The files in ``$DREAM_VLA_WORDLLAMA_DIR`` or else in the installed package (found, not imported);
        missing ones raise CheckpointError."""
        folder = os.environ.get(ENV_DIR, "")
        if folder:
            files = cls(Path(folder) / Path(WEIGHTS).name, Path(folder) / Path(TOKENIZER).name)
            for path in (files.weights, files.tokenizer):
                if not path.is_file():
                    raise CheckpointError(f"instruction encoder: {path} is missing (${ENV_DIR}={folder})")
            return files
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(f"instruction encoder: the {PACKAGE} package is not installed ({INSTALL_HINT})")
        root = Path(next(iter(spec.submodule_search_locations)))
        files = cls(root / WEIGHTS, root / TOKENIZER)
        for path in (files.weights, files.tokenizer):
            if not path.is_file():
                raise CheckpointError(f"instruction encoder: {path} is missing ({PACKAGE} {VERSION} has it)")
        return files


@functools.lru_cache(maxsize=2)
def embedding_table(expected_sha256: str = WEIGHTS_SHA256) -> np.ndarray:
    """The fp16 table [32000, 256] of the installed wheel, after checking its SHA-256 against the one a
    checkpoint was trained with (a mismatch raises CheckpointError naming both)."""
    from safetensors.numpy import load_file

    path = WordLlamaFiles.locate().weights
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256:
        raise CheckpointError(
            f"instruction encoder mismatch: the model was trained with WordLlama weights of SHA-256 "
            f"{expected_sha256[:12]}..., the installed {path} has {digest[:12]}... (install {PACKAGE}=={VERSION})"
        )
    tensors = load_file(str(path))
    table = tensors.get("embedding.weight")
    if table is None or table.ndim != 2:
        raise CheckpointError(f"instruction encoder: {path} has no 2-D 'embedding.weight' tensor")
    return table


@functools.lru_cache(maxsize=1)
def text_tokenizer():
    """WordLlama's ``tokenizers.Tokenizer`` (no special-token padding or truncation)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise CheckpointError(f"instruction encoder: tokenizers is not installed ({INSTALL_HINT})") from None
    tokenizer = Tokenizer.from_file(str(WordLlamaFiles.locate().tokenizer))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def token_ids(text: str) -> list[int]:
    """WordLlama token ids of ``text`` without the sentence-start token."""
    ids = text_tokenizer().encode(text, add_special_tokens=False).ids
    return [i for i in ids if i != BOS_ID]
