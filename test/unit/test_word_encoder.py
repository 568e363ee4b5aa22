"""The WordLlama instruction encoder: read offline from the wheel, never stored in a checkpoint, checked by
SHA-256 at load, padding masked, nothing cut."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dream_vla_ros.errors import CheckpointError, InputError
from dream_vla_ros.policy import wordllama
from dream_vla_ros.policy.checkpoint import load_checkpoint, save_checkpoint
from dream_vla_ros.policy.config import preset
from dream_vla_ros.policy.model import build_model
from dream_vla_ros.policy.tokenizer import PAD_ID, ByteTokenizer, WordTokenizer, make_tokenizer


def _config(**changes):
    tokenizer = dataclasses.replace(preset("tiny").tokenizer, kind="wordllama", max_tokens=24, queries=4,
                                    weights_sha256=wordllama.WEIGHTS_SHA256, **changes)
    return dataclasses.replace(preset("tiny"), tokenizer=tokenizer)


def test_files_are_read_from_the_wheel_without_importing_it():
    import sys

    files = wordllama.WordLlamaFiles.locate()
    assert files.weights.name == "l2_supercat_256.safetensors" and files.tokenizer.is_file()
    assert wordllama.embedding_table().shape == (32000, 256) and wordllama.embedding_table().dtype == np.float16
    assert "wordllama" not in sys.modules  # its own import (numpy>=2, hub download) is never run
    assert wordllama.token_ids("open the drawer")[0] != wordllama.BOS_ID


def test_tokenizer_pads_folds_case_and_refuses_instead_of_cutting():
    tokenizer = make_tokenizer(_config().tokenizer)
    assert isinstance(tokenizer, WordTokenizer) and isinstance(make_tokenizer(preset("tiny").tokenizer), ByteTokenizer)
    ids = tokenizer.encode("  Open   the DRAWER ")
    np.testing.assert_array_equal(ids, tokenizer.encode("open the drawer"))
    assert ids.shape == (24,) and ids.dtype == np.int64 and (ids[4:] == PAD_ID).all() and (ids[:4] != PAD_ID).all()
    with pytest.raises(InputError, match="tokens, this model reads at most 24"):
        tokenizer.encode("open the drawer " * 10)
    with pytest.raises(InputError, match="at most 512"):
        make_tokenizer(dataclasses.replace(_config().tokenizer, max_tokens=512)).encode("a" * 513)
    with pytest.raises(InputError, match="empty"):
        tokenizer.encode(" ")


def test_checkpoint_keeps_the_table_out_records_its_digest_and_reloads_identically(tmp_path):
    torch.manual_seed(0)
    model = build_model(_config(), load_pretrained=False).eval()
    assert not any("table" in name for name in model.state_dict())
    path = save_checkpoint(model, tmp_path / "m")
    assert (path / "model.safetensors").stat().st_size < 2_000_000  # the 16 MB table is not in it
    document = json.loads((path / "config.json").read_text())
    assert document["model"]["tokenizer"]["weights_sha256"] == wordllama.WEIGHTS_SHA256
    loaded = load_checkpoint(path)
    tokens = torch.from_numpy(make_tokenizer(model.config.tokenizer).encode_batch(["push the puck", "reach"]))
    torch.testing.assert_close(loaded.trunk.text_words(tokens), model.trunk.text_words(tokens))
    assert "WordLlama" in (path / "MODEL_CARD.md").read_text()


def test_a_checkpoint_trained_with_other_weights_is_refused_with_the_cause(tmp_path):
    path = save_checkpoint(build_model(_config(), load_pretrained=False), tmp_path / "m")
    document = json.loads((path / "config.json").read_text())
    document["model"]["tokenizer"]["weights_sha256"] = "0" * 64
    (path / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"instruction encoder mismatch: .*000000000000"):
        load_checkpoint(path)


def test_padding_is_masked_out_of_the_pooling():
    torch.manual_seed(0)
    pooling = build_model(_config(), load_pretrained=False).trunk.text_words
    ids = torch.from_numpy(make_tokenizer(_config().tokenizer).encode_batch(["slide the window open"]))
    wider = torch.cat([ids, torch.zeros(1, 40, dtype=torch.int64)], dim=1)
    torch.testing.assert_close(pooling(ids), pooling(wider))


def test_the_files_can_come_from_a_folder_instead_of_the_wheel(tmp_path, monkeypatch):
    import shutil

    files = wordllama.WordLlamaFiles.locate()
    shutil.copy(files.tokenizer, tmp_path)
    monkeypatch.setenv(wordllama.ENV_DIR, str(tmp_path))
    with pytest.raises(CheckpointError, match=r"l2_supercat_256\.safetensors is missing"):
        wordllama.WordLlamaFiles.locate()
    shutil.copy(files.weights, tmp_path)
    assert wordllama.WordLlamaFiles.locate().weights.parent == tmp_path
    wordllama.embedding_table.cache_clear()
    try:
        assert wordllama.embedding_table().shape == (32000, 256)  # read from the folder, digest checked
    finally:
        wordllama.embedding_table.cache_clear()
