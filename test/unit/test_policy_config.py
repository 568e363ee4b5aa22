"""Model configuration: presets, validation and the mapping round trip a checkpoint relies on."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dream_vla_ros.configuration import from_mapping, to_mapping
from dream_vla_ros.errors import ConfigError
from dream_vla_ros.policy.config import (
    PRESET_NAMES,
    DecoderConfig,
    HaltingConfig,
    ModelConfig,
    NormalizationConfig,
    TokenizerConfig,
    TrainingConfig,
    VisionConfig,
    preset,
    with_decoder_kind,
)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_round_trip_through_json(name: str) -> None:
    config = preset(name)
    assert config.preset == name
    restored = from_mapping(ModelConfig, json.loads(json.dumps(to_mapping(config))))
    assert restored == config


def test_preset_sizes_fit_their_purpose() -> None:
    torch = pytest.importorskip("torch")
    from dream_vla_ros.policy.model import build_model, count_parameters

    torch.manual_seed(0)
    tiny = count_parameters(build_model(preset("tiny")))
    sim = count_parameters(build_model(preset("sim")))
    assert tiny < 1_000_000
    assert 500_000 < sim < 5_000_000
    sim_config = preset("sim")
    assert sim_config.num_joints == 8 and sim_config.joint_names[-1] == "gripper"
    assert sim_config.vision.image_size == 96 and len(sim_config.vision.cameras) == 1


def test_decoder_kind_switch_keeps_the_trunk() -> None:
    pytest.importorskip("torch")
    from dream_vla_ros.policy.model import build_model

    recurrent = build_model(preset("tiny")).state_dict()
    discrete = build_model(with_decoder_kind(preset("tiny"), "discrete")).state_dict()
    shared = {k for k in recurrent if not k.startswith("decoder.")}
    assert shared == {k for k in discrete if not k.startswith("decoder.")}
    assert all(recurrent[k].shape == discrete[k].shape for k in shared)


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="tiny, sim, orin"):
        preset("huge")


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: VisionConfig(image_size=100, stem_channels=(16, 32), patch_size=3), "image_size"),
        (lambda: VisionConfig(cameras=("a", "a")), "cameras"),
        (lambda: HaltingConfig(k_max=4, k_min=5), "k_min"),
        (lambda: HaltingConfig(delta=-1.0), "delta"),
        (lambda: DecoderConfig(width=30, heads=4), "heads"),
        (lambda: TrainingConfig(max_depth=4, backprop_depth=8), "backprop_depth"),
        (lambda: TokenizerConfig(max_tokens=48, pool=5), "max_tokens"),
        (lambda: TokenizerConfig(pool=0), "pool"),
        (lambda: NormalizationConfig(proprio_offset=(0.0,), proprio_scale=(0.0,)), "proprio_scale"),
        (lambda: ModelConfig(joint_names=("a", "b"), normalization=NormalizationConfig((0.0,), (1.0,))), "proprio"),
        (lambda: ModelConfig(joint_names=("a", "a")), "joint_names"),
        (lambda: ModelConfig(dt=0.0), "dt"),
    ],
)
def test_invalid_values_name_their_key(build, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build()


def test_from_mapping_rejects_unknown_and_mistyped_keys() -> None:
    mapping = to_mapping(preset("tiny"))
    with pytest.raises(ConfigError, match=r"trunk\.depth"):
        from_mapping(ModelConfig, {**mapping, "trunk": {**mapping["trunk"], "depth": 3}})
    with pytest.raises(ConfigError, match="chunk_length"):
        from_mapping(ModelConfig, {**mapping, "chunk_length": "16"})


def test_action_statistics_per_joint_or_per_step() -> None:
    base = preset("tiny")
    j, h = base.num_joints, base.chunk_length
    for n in (j, h * j):
        norm = NormalizationConfig(action_offset=(0.0,) * n, action_scale=(1.0,) * n)
        assert dataclasses.replace(base, normalization=norm).normalization == norm
    with pytest.raises(ConfigError, match="action_offset"):
        dataclasses.replace(base, normalization=NormalizationConfig(action_offset=(0.0,) * 5, action_scale=(1.0,) * 5))


def test_pooled_instruction_tokens_shrink_the_context_and_keep_every_byte() -> None:
    torch = pytest.importorskip("torch")
    from dream_vla_ros.policy.model import build_model

    base = preset("tiny")
    pooled = dataclasses.replace(base, tokenizer=TokenizerConfig(max_tokens=12, pool=4))
    unpooled = dataclasses.replace(base, tokenizer=TokenizerConfig(max_tokens=12, pool=1))
    assert unpooled.num_context_tokens - pooled.num_context_tokens == 12 - 3
    torch.manual_seed(0)
    model = build_model(pooled).eval()
    images = torch.rand(1, 1, 3, 32, 32)
    proprio = torch.zeros(1, pooled.num_joints)
    tokens = torch.randint(1, 257, (1, 12))
    _, final = model.features(images, tokens, proprio)
    assert final.shape == (1, pooled.num_context_tokens, pooled.trunk.width)
    for position in (0, 3, 11):  # first, last and any byte of a pooled group reaches the features
        changed = tokens.clone()
        changed[0, position] = changed[0, position] % 256 + 1
        _, other = model.features(images, changed, proprio)
        assert not torch.allclose(final, other)
