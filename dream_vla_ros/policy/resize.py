"""Resizing camera frames with OpenCV: the one resampling rule of model inputs and recorded datasets.

Shrinking uses ``INTER_AREA`` (each output pixel averages its footprint, so nothing aliases), enlarging
``INTER_LINEAR``. ``policy.preprocess`` (numpy-only) imports this module on the first frame that needs resizing;
OpenCV stays the resampler because a numpy rewrite would not reproduce its fixed-point rounding bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, C] -> [height, width, C]: ``INTER_AREA`` when a side shrinks, else ``INTER_LINEAR``."""
    shrinking = height < image.shape[0] or width < image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interpolation)
