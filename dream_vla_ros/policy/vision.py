"""Vision encoder: a small conv stem + patchify convolution -> patch tokens, trained from scratch (torch).

Images come in as float32 [B, C, 3, S, S] in [0, 1] (see ``preprocess.images_to_float``); every camera goes
through the same stem, then gets a learned 2-D position embedding and a per-camera embedding. No normalisation
layer in the stem (batch statistics would make a sample's output depend on its batch). A pretrained encoder can
be plugged in from a local safetensors file (``VisionConfig.pretrained_path``); nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dream_vla_ros.errors import CheckpointError
from dream_vla_ros.policy.config import VisionConfig

PIXEL_MEAN = 0.45
PIXEL_STD = 0.25


class ConvPatchEncoder(nn.Module):
    """[B, C, 3, S, S] -> [B, C * P, width] patch tokens (P = ``vision.tokens_per_camera``)."""

    def __init__(self, vision: VisionConfig, width: int) -> None:
        super().__init__()
        self.vision = vision
        layers: list[nn.Module] = []
        channels = 3
        for out in vision.stem_channels:
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GELU()]
            channels = out
        self.stem = nn.Sequential(*layers)
        self.patchify = nn.Conv2d(channels, width, vision.patch_size, stride=vision.patch_size)
        self.norm = nn.LayerNorm(width)
        self.position = nn.Parameter(torch.zeros(vision.tokens_per_camera, width))
        self.camera = nn.Parameter(torch.zeros(len(vision.cameras), width))
        nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.trunc_normal_(self.camera, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cameras = len(self.vision.cameras)
        x = (images.flatten(0, 1) - PIXEL_MEAN) / PIXEL_STD  # [B*C, 3, S, S]
        x = self.patchify(self.stem(x)).flatten(2).transpose(1, 2)  # [B*C, P, W]
        x = self.norm(x) + self.position
        x = x.unflatten(0, (-1, cameras)) + self.camera[:, None, :]  # [B, C, P, W]
        return x.flatten(1, 2)

    def load_pretrained(self, path: str | Path) -> None:
        """Load encoder weights from a local safetensors file (same names and shapes as this module)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"vision.pretrained_path: {path} does not exist (weights are never downloaded)")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"vision.pretrained_path: {path} is not a readable safetensors file ({exc})"
            ) from None
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(f"{path}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}")
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise CheckpointError(
                    f"{path}: tensor {name} has shape {list(tensor.shape)}, the encoder needs {list(own[name].shape)}"
                )
        self.load_state_dict({k: v.float() for k, v in state.items()})
