"""The VLA: vision encoder + trunk + action decoder, and its export-friendly graphs (torch).

Pure tensor functions, no value-dependent Python control flow inside (the halting loop lives outside, in
``halting.run_halting_loop`` / ``discrete_decoder.unmask``):

- recurrent decoder:
  - :class:`EncodeGraph` ``(images, tokens, proprio, noise) -> (prelude_state, scratchpad0, k_0, v_0, ...)``:
    vision, trunk, prelude and the core's context keys/values, once per chunk;
  - :class:`CoreStepGraph` ``(scratchpad, actions, prelude_state, k_0, v_0, ...) -> (scratchpad, actions,
    change)``: one core iteration, its Coda decode and the halting scalar per sample (metric fixed per graph);
  - :class:`CodaGraph` ``scratchpad -> actions``.
- discrete decoder: :class:`DiscreteEncodeGraph` ``(images, tokens, proprio) -> (rows, k_0, v_0, ...)`` and
  :class:`DiscreteStepGraph` ``(values, rows, k_0, v_0, ...) -> logits``.

Shapes: images float32 [B, C, 3, S, S] in [0, 1]; tokens int64 [B, L]; proprio float32 [B, J] normalised; noise
float32 [B, H, w] (standard normal truncated at +-2, see ``preprocess.scratchpad_noise``); actions [B, H, J] normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.policy.config import HaltingMetric, ModelConfig
from dream_vla_ros.policy.discrete_decoder import DiscreteDecoder
from dream_vla_ros.policy.halting import change_metric
from dream_vla_ros.policy.layers import init_weights
from dream_vla_ros.policy.recurrent_decoder import RecurrentDecoder
from dream_vla_ros.policy.trunk import Trunk
from dream_vla_ros.policy.vision import ConvPatchEncoder


class VlaModel(nn.Module):
    """Observation tensors -> normalised action chunk. Build with :func:`build_model`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = ConvPatchEncoder(config.vision, config.trunk.width)
        self.trunk = Trunk(config)
        self.decoder: RecurrentDecoder | DiscreteDecoder
        if config.decoder.kind == "recurrent":
            self.decoder = RecurrentDecoder(config)
        else:
            self.decoder = DiscreteDecoder(config)
        init_weights(self)

    @property
    def kind(self) -> str:
        return self.config.decoder.kind

    def noise_shape(self, batch: int) -> tuple[int, int, int]:
        return (batch, self.config.chunk_length, self.config.decoder.width)

    def features(
        self, images: torch.Tensor, tokens: torch.Tensor, proprio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vision + trunk ("trunk-only" cost): -> (mid, final) features [B, T, W]."""
        return self.trunk(self.vision(images), tokens, proprio)

    def recurrent(self) -> RecurrentDecoder:
        if not isinstance(self.decoder, RecurrentDecoder):
            raise ConfigError(f"decoder.kind: this model's decoder is {self.kind!r}, not 'recurrent'")
        return self.decoder

    def discrete(self) -> DiscreteDecoder:
        if not isinstance(self.decoder, DiscreteDecoder):
            raise ConfigError(f"decoder.kind: this model's decoder is {self.kind!r}, not 'discrete'")
        return self.decoder

    def encode(
        self, images: torch.Tensor, tokens: torch.Tensor, proprio: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Recurrent decoder, once per chunk: -> (prelude_state, scratchpad0, kv)."""
        mid, final = self.features(images, tokens, proprio)
        return self.recurrent().prepare(mid, final, proprio, noise)


class EncodeGraph(nn.Module):
    """``(images, tokens, proprio, noise) -> (prelude_state, scratchpad0, k_0, v_0, ...)``."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor, proprio: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        prelude_state, scratchpad, kv = self.model.encode(images, tokens, proprio, noise)
        return (prelude_state, scratchpad, *kv)


class CoreStepGraph(nn.Module):
    """``(scratchpad, actions, prelude_state, *kv) -> (scratchpad, actions, change [B])`` for one metric.

    ``actions`` (the previous decode) only feeds the "action" metric; with "latent" an ONNX exporter drops
    the unused input, so engines feed the inputs their session lists.
    """

    def __init__(self, model: VlaModel, metric: HaltingMetric = "action", relative: bool = False) -> None:
        super().__init__()
        self.decoder = model.recurrent()
        self.metric = metric
        self.relative = relative

    def forward(
        self, scratchpad: torch.Tensor, actions: torch.Tensor, prelude_state: torch.Tensor, *kv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        new_scratchpad = self.decoder.step(scratchpad, prelude_state, kv)
        new_actions = self.decoder.decode(new_scratchpad)
        if self.metric == "action":
            change = change_metric(new_actions, actions, self.relative)
        else:
            change = change_metric(new_scratchpad, scratchpad, self.relative)
        return new_scratchpad, new_actions, change


class CodaGraph(nn.Module):
    """``scratchpad [B, H, w] -> actions [B, H, J]`` (normalised)."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        self.decoder = model.recurrent()

    def forward(self, scratchpad: torch.Tensor) -> torch.Tensor:
        return self.decoder.decode(scratchpad)


class DiscreteEncodeGraph(nn.Module):
    """``(images, tokens, proprio) -> (rows, k_0, v_0, ...)`` of the discrete decoder."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        self.model = model
        self.decoder = model.discrete()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, proprio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, final = self.model.features(images, tokens, proprio)
        rows, kv = self.decoder.prepare(final, proprio)
        return (rows, *kv)


class DiscreteStepGraph(nn.Module):
    """``(values [B, H, J] int64, rows, *kv) -> logits [B, H, J, bins]``."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        self.decoder = model.discrete()

    def forward(self, values: torch.Tensor, rows: torch.Tensor, *kv: torch.Tensor) -> torch.Tensor:
        return self.decoder.logits(values, rows, kv)


def build_model(config: ModelConfig, *, load_pretrained: bool = True) -> VlaModel:
    """A freshly initialised model; the vision encoder loads ``vision.pretrained_path`` when set and asked to."""
    model = VlaModel(config)
    if load_pretrained and config.vision.pretrained_path:
        model.vision.load_pretrained(config.vision.pretrained_path)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
