"""Numpy-side model inputs: image preparation, normalisation round trips, tokenizer, scratchpad noise."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import NormalizationConfig, TokenizerConfig, VisionConfig, preset
from dream_vla_ros.policy.normalization import Normalizer, fit_normalization
from dream_vla_ros.policy.observation import Observation
from dream_vla_ros.policy.preprocess import (
    NOISE_CLIP,
    images_to_float,
    prepare_image,
    prepare_images,
    prepare_inputs,
    random_exposure,
    random_shift,
    scratchpad_noise,
)
from dream_vla_ros.policy.tokenizer import ByteTokenizer

finite = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)
J, H = 3, 4


def _normalizer(mode: str, per_step: bool, seed: int) -> Normalizer:
    rng = np.random.default_rng(seed)
    n = H * J if per_step else J
    config = NormalizationConfig(
        proprio_offset=tuple(rng.normal(size=J)),
        proprio_scale=tuple(rng.uniform(0.1, 3.0, size=J)),
        action_offset=tuple(rng.normal(size=n)),
        action_scale=tuple(rng.uniform(0.1, 3.0, size=n)),
        action_mode=mode,
    )
    return Normalizer(config, J, H)


@settings(max_examples=40, deadline=None)
@given(
    proprio=hnp.arrays(np.float64, (J,), elements=finite),
    actions=hnp.arrays(np.float64, (H, J), elements=finite),
    mode=st.sampled_from(["absolute", "delta"]),
    per_step=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_normalisation_round_trips_in_physical_units(proprio, actions, mode, per_step, seed) -> None:
    normalizer = _normalizer(mode, per_step, seed)
    p_norm = normalizer.normalize_proprio(proprio)
    a_norm = normalizer.normalize_actions(actions, proprio)
    assert p_norm.shape == (J,) and a_norm.shape == (H, J) and a_norm.dtype == np.float32
    np.testing.assert_allclose(normalizer.denormalize_proprio(p_norm), proprio, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(normalizer.denormalize_actions(a_norm, proprio), actions, rtol=1e-5, atol=1e-4)


def test_batched_normalisation_matches_per_sample() -> None:
    normalizer = _normalizer("delta", True, 0)
    rng = np.random.default_rng(1)
    proprio, actions = rng.normal(size=(5, J)), rng.normal(size=(5, H, J))
    batched = normalizer.normalize_actions(actions, proprio)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], normalizer.normalize_actions(actions[i], proprio[i]))


def test_fit_bounds_maps_the_data_range_to_unit_interval() -> None:
    rng = np.random.default_rng(0)
    proprio = rng.uniform(-2.0, 3.0, size=(200, J))
    actions = proprio[:, None, :] + rng.uniform(-0.5, 0.5, size=(200, H, J)) * np.arange(1, H + 1)[None, :, None]
    stats = fit_normalization(proprio, actions, action_mode="delta", quantile=0.0)
    normalizer = Normalizer(stats, J, H)
    a = normalizer.normalize_actions(actions, proprio)
    p = normalizer.normalize_proprio(proprio)
    for x in (a, p):
        assert x.min() == pytest.approx(-1.0, abs=1e-5) and x.max() == pytest.approx(1.0, abs=1e-5)
    # per-step statistics: every chunk row spans [-1, 1] although later rows move further
    np.testing.assert_allclose(np.abs(a).max(axis=(0, 2)), 1.0, atol=1e-5)
    gaussian = fit_normalization(proprio, actions, kind="gaussian", per_step=False)
    assert len(gaussian.action_offset) == J


def test_constant_joint_gets_a_floor_scale() -> None:
    proprio = np.zeros((10, J))
    stats = fit_normalization(proprio, np.zeros((10, H, J)))
    assert min(stats.proprio_scale) > 0 and min(stats.action_scale) > 0


def test_normaliser_rejects_bad_arrays() -> None:
    normalizer = _normalizer("absolute", False, 0)
    with pytest.raises(InputError, match="proprio"):
        normalizer.normalize_proprio(np.array([0.0, np.nan, 0.0]))
    with pytest.raises(InputError, match="actions"):
        normalizer.normalize_actions(np.zeros((H + 1, J)), np.zeros(J))


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 160),
    width=st.integers(1, 160),
    size=st.sampled_from([8, 32, 96]),
    crop=st.floats(0.1, 1.0),
)
def test_prepare_image_gives_the_model_size(height, width, size, crop) -> None:
    image = np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = prepare_image(image, size, crop)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_prepare_image_keeps_a_model_sized_frame_and_crops_the_centre() -> None:
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, 10:50] = 255  # the centred 40x40 square
    np.testing.assert_array_equal(prepare_image(image, 40), image[:, 10:50])


def test_images_to_float_layout_and_range() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8, 3), dtype=np.uint8)
    out = images_to_float(images)
    assert out.shape == (2, 1, 3, 8, 8) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out[1, 0, 2, 3, 4], images[1, 0, 3, 4, 2] / 255.0)


def test_prepare_images_orders_cameras_and_names_missing_ones() -> None:
    vision = VisionConfig(cameras=("wrist", "scene"), image_size=16, stem_channels=(8,), patch_size=2)
    frames = {"scene": np.zeros((16, 16, 3), np.uint8), "wrist": np.full((16, 16, 3), 7, np.uint8)}
    out = prepare_images(frames, vision)
    assert out.shape == (2, 16, 16, 3) and out[0].max() == 7 and out[1].max() == 0
    with pytest.raises(InputError, match="wrist"):
        prepare_images({"scene": frames["scene"]}, vision)
    with pytest.raises(InputError, match="uint8"):
        prepare_images({**frames, "wrist": frames["wrist"].astype(np.float32)}, vision)
    with pytest.raises(InputError, match="RGB"):
        prepare_images({**frames, "wrist": np.zeros((16, 16), np.uint8)}, vision)


def test_prepare_inputs_rejects_untrustworthy_observations() -> None:
    config = preset("tiny")
    tokenizer, normalizer = ByteTokenizer(config.tokenizer), Normalizer.for_model(config)
    image = {"main": np.zeros((32, 32, 3), np.uint8)}
    good = Observation(images=image, proprio=np.zeros(3), instruction="go", stamp=2.5)
    inputs = prepare_inputs([good, good], config, tokenizer, normalizer)
    assert inputs.images.shape == (2, 1, 3, 32, 32) and inputs.tokens.shape == (2, 12)
    assert inputs.stamps.tolist() == [2.5, 2.5]
    for bad, match in [
        (dataclasses.replace(good, proprio=np.array([0.0, np.inf, 0.0])), "proprio"),
        (dataclasses.replace(good, proprio=np.zeros(4)), "proprio"),
        (dataclasses.replace(good, instruction="   "), "instruction"),
        (dataclasses.replace(good, images={}), "camera"),
    ]:
        with pytest.raises(InputError, match=match):
            prepare_inputs([bad], config, tokenizer, normalizer)


def test_random_shift_translates_within_the_pad() -> None:
    images = np.zeros((1, 16, 16, 3), np.uint8)
    images[0, 8, 8] = 255
    rng = np.random.default_rng(0)
    for _ in range(10):
        shifted = random_shift(images, 2, rng)
        (ys, xs) = np.nonzero(shifted[0, :, :, 0])
        assert shifted.shape == images.shape and len(ys) == 1
        assert abs(int(ys[0]) - 8) <= 2 and abs(int(xs[0]) - 8) <= 2
    np.testing.assert_array_equal(random_shift(images, 0, rng), images)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    brightness=st.floats(0.0, 0.2),
    contrast=st.floats(0.0, 0.5),
    level=st.floats(0.0, 1.0),
)
def test_random_exposure_is_one_affine_map_per_camera_within_range(
    seed: int, brightness: float, contrast: float, level: float
) -> None:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, size=(3, 2, 3, 6, 6)).astype(np.float32)
    images[:, :, :, 0, 0] = level
    out = random_exposure(images, brightness, contrast, rng)
    assert out.shape == images.shape and out.dtype == np.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    for b in range(3):
        for c in range(2):
            # recover the camera's gain and offset from two unclipped pixels; every pixel obeys them
            x, y = images[b, c].ravel(), out[b, c].ravel()
            inside = (y > 1e-4) & (y < 1 - 1e-4)
            if inside.sum() < 2:
                continue
            xs, ys = x[inside], y[inside]
            i, j = int(np.argmin(xs)), int(np.argmax(xs))
            if xs[j] - xs[i] < 0.1:
                continue
            gain = (ys[j] - ys[i]) / (xs[j] - xs[i])
            offset = ys[i] - gain * xs[i]
            assert 1 - contrast - 1e-4 <= gain <= 1 + contrast + 1e-4
            assert -brightness - 1e-4 <= offset <= brightness + 1e-4
            np.testing.assert_allclose(y, np.clip(x * gain + offset, 0.0, 1.0), atol=1e-4)


def test_random_exposure_off_is_identity_and_rejects_bad_ranges() -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 1.0, size=(2, 1, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(random_exposure(images, 0.0, 0.0, rng), images)
    shifted = random_exposure(images, 0.05, 0.0, rng)
    assert not np.array_equal(shifted, images)
    for brightness, contrast in [(-0.1, 0.0), (0.0, -0.1), (0.0, 1.0)]:
        with pytest.raises(InputError, match="random_exposure"):
            random_exposure(images, brightness, contrast, rng)
    with pytest.raises(InputError, match="B, C, 3, S, S"):
        random_exposure(images[0], 0.1, 0.1, rng)


@settings(max_examples=50, deadline=None)
@given(text=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12))
def test_tokenizer_round_trips_ascii(text: str) -> None:
    tokenizer = ByteTokenizer(TokenizerConfig(max_tokens=12, lowercase=False))
    ids = tokenizer.encode(text)
    assert ids.shape == (12,) and ids.dtype == np.int64 and ids.max() < tokenizer.vocab_size
    assert tokenizer.decode(ids) == text


def test_tokenizer_folds_case_whitespace_and_truncates() -> None:
    tokenizer = ByteTokenizer(TokenizerConfig(max_tokens=8))
    np.testing.assert_array_equal(tokenizer.encode("Open  the\tDrawer"), tokenizer.encode("open the drawer"))
    assert tokenizer.decode(tokenizer.encode("open the drawer")) == "open the"
    assert tokenizer.decode(tokenizer.encode("é")) == "é"
    with pytest.raises(InputError, match="instruction"):
        tokenizer.encode("")


def test_scratchpad_noise_is_per_seed_and_truncated() -> None:
    noise = scratchpad_noise([3, 7, 3], 16, 32)
    assert noise.shape == (3, 16, 32) and noise.dtype == np.float32
    assert np.abs(noise).max() <= NOISE_CLIP
    np.testing.assert_array_equal(noise[0], noise[2])
    np.testing.assert_array_equal(noise[1], scratchpad_noise([7], 16, 32)[0])
    assert not np.array_equal(noise[0], noise[1])
    assert abs(float(scratchpad_noise(list(range(20)), 16, 32).std()) - 0.88) < 0.05  # truncated normal std
