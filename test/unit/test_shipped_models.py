"""Every model shipped under models/ loads through the validating loader and is listed by `info`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dream_vla_ros.paths import find_models

SHIPPED = find_models()


def test_the_default_model_is_shipped():
    assert "metaworld_mt10" in [p.name for p in SHIPPED]


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda p: p.name)
def test_shipped_model_loads_infers_and_is_documented(model_dir):
    from dream_vla_ros.policy.inference import TorchPolicy
    from dream_vla_ros.policy.observation import Observation

    size = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())
    assert size < 50 * 2**20
    card = (model_dir / "MODEL_CARD.md").read_text()
    for section in ("Data", "Results", "Limits"):
        assert f"## {section}" in card, f"MODEL_CARD.md lacks a '## {section}' section"
    policy = TorchPolicy.from_checkpoint(model_dir)
    config = policy.config
    cameras = {name: np.zeros((config.vision.image_size, config.vision.image_size, 3), np.uint8)
               for name in config.vision.cameras}
    chunk = policy.infer(Observation(cameras, np.zeros(config.num_joints), "open the drawer"))
    assert chunk.positions.shape == (config.chunk_length, config.num_joints)
    assert np.all(np.isfinite(chunk.positions))
    assert 1 <= chunk.iterations <= config.halting.k_max
    envelope = config.envelope  # the policy node confines the model's targets to it
    assert len(envelope.position_min) == config.num_joints
    assert all(lo < hi for lo, hi in zip(envelope.position_min[:-1], envelope.position_max[:-1], strict=True))


def test_info_lists_the_shipped_models():
    out = subprocess.run([sys.executable, "-m", "dream_vla_ros.cli", "info", "--json"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    listed = json.loads(out)["models"]
    assert sorted(listed) == sorted(str(p) for p in SHIPPED)
