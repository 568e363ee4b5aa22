"""Observation -> model inputs with numpy only (no torch; frames that need resizing go through :mod:`.resize`).

Training, torch inference and the ONNX/TensorRT engines call the same functions, so a frame is resized the same
way everywhere:

- :func:`prepare_image`: centre crop (``crop_fraction`` of the short side), resize to ``image_size``
  (:func:`.resize.resize`: ``INTER_AREA``, ``INTER_LINEAR`` when enlarging); uint8 [S, S, 3] stays compact
  for datasets.
- :func:`prepare_images`: one array [C, S, S, 3] in the config's camera order.
- :func:`images_to_float`: uint8 [..., S, S, 3] -> float32 [..., 3, S, S] in [0, 1], the model's image input.
- :func:`prepare_inputs`: a whole batch of observations -> the arrays ``encode`` takes.
- :func:`random_shift`: training augmentation (edge-padded random translation, DrQ style).
- :func:`random_exposure`: training augmentation (per-camera brightness offset and contrast gain), so a
  model does not depend on one renderer's or camera's exposure.
- :func:`scratchpad_noise`: the recurrent decoder's initial noise from per-sample seeds (engines feed the
  same noise, so every backend gives the same chunk for the same seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dream_vla_ros.errors import InputError
from dream_vla_ros.policy.config import ModelConfig, VisionConfig
from dream_vla_ros.policy.normalization import Normalizer
from dream_vla_ros.policy.observation import Observation
from dream_vla_ros.policy.tokenizer import Tokenizer


def prepare_image(image: np.ndarray, size: int, crop_fraction: float = 1.0, name: str = "image") -> np.ndarray:
    """RGB uint8 [H, W, 3] of any size -> centre-cropped, resized uint8 [size, size, 3]."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(f"{name}: expected an RGB image [H, W, 3], got shape {list(array.shape)}")
    if array.dtype != np.uint8:
        raise InputError(f"{name}: expected dtype uint8, got {array.dtype}")
    h, w = array.shape[:2]
    side = max(1, round(min(h, w) * crop_fraction))
    top, left = (h - side) // 2, (w - side) // 2
    square = array[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    from dream_vla_ros.policy.resize import resize  # OpenCV, loaded with the first frame to resize

    return resize(square, size, size)


def prepare_images(images: Mapping[str, np.ndarray], vision: VisionConfig) -> np.ndarray:
    """Camera name -> image mapping -> uint8 [C, S, S, 3] in ``vision.cameras`` order."""
    missing = [c for c in vision.cameras if c not in images]
    if missing:
        raise InputError(f"images: missing camera {missing[0]!r}; the model reads {list(vision.cameras)}")
    return np.stack(
        [prepare_image(images[c], vision.image_size, vision.crop_fraction, f"images[{c!r}]") for c in vision.cameras]
    )


def images_to_float(images: np.ndarray) -> np.ndarray:
    """uint8 [..., S, S, 3] -> float32 [..., 3, S, S] scaled to [0, 1]."""
    array = np.asarray(images)
    return np.ascontiguousarray(np.moveaxis(array, -1, -3), dtype=np.float32) / np.float32(255.0)


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Translate every camera image of uint8 [C, S, S, 3] by up to ``pad`` px (edge padding); pad 0 = copy."""
    if pad <= 0:
        return images.copy()
    c, s = images.shape[0], images.shape[1]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.empty_like(images)
    for i in range(c):
        dy, dx = rng.integers(0, 2 * pad + 1, size=2)
        out[i] = padded[i, dy : dy + s, dx : dx + s]
    return out


def random_exposure(images: np.ndarray, brightness: float, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """float32 [B, C, 3, S, S] in [0, 1] -> ``clip(x * gain + offset, 0, 1)``, one draw per sample and camera.

    gain ~ Uniform(1 - contrast, 1 + contrast), offset ~ Uniform(-brightness, brightness) (1.0 = full scale,
    so 0.03 is about 8 grey levels). Both 0 returns a copy.
    """
    if brightness < 0 or contrast < 0 or contrast >= 1:
        raise InputError(f"random_exposure: need brightness >= 0 and 0 <= contrast < 1, got {brightness}, {contrast}")
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 5:
        raise InputError(f"random_exposure: expected [B, C, 3, S, S], got shape {list(array.shape)}")
    draws = (array.shape[0], array.shape[1], 1, 1, 1)
    gain = rng.uniform(1.0 - contrast, 1.0 + contrast, size=draws).astype(np.float32)
    offset = rng.uniform(-brightness, brightness, size=draws).astype(np.float32)
    return np.clip(array * gain + offset, 0.0, 1.0)


NOISE_CLIP = 2.0
"""The scratchpad noise is a standard normal truncated to [-NOISE_CLIP, NOISE_CLIP]."""


def scratchpad_noise(seeds: Sequence[int], rows: int, width: int) -> np.ndarray:
    """float32 [B, rows, width]: truncated standard normal, sample i drawn from ``seeds[i]`` alone."""
    out = np.empty((len(seeds), rows, width), dtype=np.float32)
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(int(seed))
        x = rng.standard_normal((rows, width))
        outside = np.abs(x) > NOISE_CLIP
        while outside.any():  # rejection sampling keeps the truncated normal exact
            x[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(x) > NOISE_CLIP
        out[i] = x
    return out


def check_proprio(proprio: np.ndarray, num_joints: int) -> np.ndarray:
    """Joint positions [J] as float64; a wrong length or a non-finite value raises InputError."""
    array = np.asarray(proprio, dtype=np.float64)
    if array.shape != (num_joints,):
        raise InputError(f"proprio: expected {num_joints} joint positions, got shape {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise InputError("proprio: contains NaN or infinite values")
    return array


@dataclass(frozen=True)
class ModelInputs:
    """A batch of observations as the model's ``encode`` takes them (numpy).

    images: float32 [B, C, 3, S, S] in [0, 1]; tokens: int64 [B, L]; proprio: float32 [B, J] normalised;
    proprio_raw: float64 [B, J] physical (for de-normalising delta actions); stamps: [B] seconds.
    """

    images: np.ndarray
    tokens: np.ndarray
    proprio: np.ndarray
    proprio_raw: np.ndarray
    stamps: np.ndarray


def prepare_inputs(
    observations: Sequence[Observation], config: ModelConfig, tokenizer: Tokenizer, normalizer: Normalizer
) -> ModelInputs:
    """Observations -> :class:`ModelInputs`; anything untrustworthy raises InputError."""
    if not observations:
        raise InputError("observations: empty batch")
    images = np.stack([prepare_images(o.images, config.vision) for o in observations])
    proprio_raw = np.stack([check_proprio(o.proprio, config.num_joints) for o in observations])
    return ModelInputs(
        images=images_to_float(images),
        tokens=tokenizer.encode_batch([o.instruction for o in observations]),
        proprio=normalizer.normalize_proprio(proprio_raw),
        proprio_raw=proprio_raw,
        stamps=np.array([float(o.stamp) for o in observations]),
    )
