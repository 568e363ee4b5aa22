"""A torch engine whose failures are chosen by the goal's first word (a custom backend for the fault tests).

``raise ...``: infer raises RuntimeError; ``nan ...``: the chunk has a NaN; ``shape ...``: a joint column is
missing. Any other goal runs the real torch engine unchanged. Loaded by the policy node as
``backend: faulty_engine:FaultyEngine`` (this directory on PYTHONPATH).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dream_vla_ros.engines.torch_engine import TorchEngine


class FaultyEngine:
    def __init__(self, model_dir, **settings) -> None:
        self._inner = TorchEngine(model_dir, **settings)

    @property
    def name(self) -> str:
        return f"faulty {self._inner.name}"

    @property
    def metadata(self):
        return self._inner.metadata

    def infer(self, observation):
        word = observation.instruction.split()[0] if observation.instruction.split() else ""
        if word == "raise":
            raise RuntimeError("injected engine failure")
        prediction = self._inner.infer(observation)
        if word == "nan":
            positions = prediction.positions.copy()
            positions[1, 1] = np.nan
            return dataclasses.replace(prediction, positions=positions)
        if word == "shape":
            return dataclasses.replace(prediction, positions=prediction.positions[:, :-1])
        return prediction
