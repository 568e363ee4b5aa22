"""Adaptive halting of the recurrent core (torch): the change metric and the host-side loop.

The change of sample i at iteration k is the mean squared difference between consecutive decoded normalised
chunks (``metric="action"``, RD-VLA's MSE proxy for the KL between predictions) or consecutive scratchpads
(``metric="latent"``), optionally divided by the mean square of the previous value (``relative``). Sample i
stops at the first k >= k_min with change < delta, or at k_max. In a batch, finished samples are frozen
(their state is carried unchanged) while the others continue, so each sample gets the k and the actions it
would get alone. ``delta = 0`` turns halting off: exactly k_max iterations, reason "fixed".

The loop only needs a step function with the signature of ``model.CoreStepGraph`` -- torch module, ONNX
Runtime session or TensorRT engine alike -- and reads back one change scalar per sample per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dream_vla_ros.policy.config import HaltingConfig
from dream_vla_ros.policy.observation import CONVERGED, FIXED, MAX_ITERATIONS

EPS = 1e-8

StepFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def change_metric(new: torch.Tensor, old: torch.Tensor, relative: bool) -> torch.Tensor:
    """Mean squared change per sample: [B, ...] x [B, ...] -> [B] (relative: divided by mean(old^2) + eps).

    Written as sum / count (ReduceSum) so the step graph also converts to ONNX opset 17.
    """
    count = new[0].numel()
    change = (new - old).square().flatten(1).sum(dim=1) / count
    if relative:
        change = change / (old.square().flatten(1).sum(dim=1) / count + EPS)
    return change


@dataclass(frozen=True)
class HaltingResult:
    """Outcome of a halting loop for a batch of B samples.

    scratchpad, actions: final state and normalised chunk of every sample (at its own k).
    iterations: int64 [B]; reasons: B strings; changes: float [k_run, B], the change of every iteration that
    ran (NaN after a sample stopped).
    """

    scratchpad: torch.Tensor
    actions: torch.Tensor
    iterations: torch.Tensor
    reasons: tuple[str, ...]
    changes: torch.Tensor


def run_halting_loop(
    step: StepFn,
    scratchpad: torch.Tensor,
    actions: torch.Tensor,
    prelude_state: torch.Tensor,
    kv: tuple[torch.Tensor, ...],
    halting: HaltingConfig,
) -> HaltingResult:
    """Iterate ``step(scratchpad, actions, prelude_state, *kv) -> (scratchpad, actions, change)`` per sample.

    ``actions`` is the previous decode the first change is measured against (any tensor of the right shape;
    with k_min >= 2 it never decides anything).
    """
    batch = scratchpad.shape[0]
    active = [True] * batch
    converged = [False] * batch
    iterations = [0] * batch
    keep_s = keep_a = None  # per-sample masks, only once some sample has stopped
    changes: list[torch.Tensor] = []
    for k in range(1, halting.k_max + 1):
        new_scratchpad, new_actions, change = step(scratchpad, actions, prelude_state, *kv)
        if keep_s is None:
            scratchpad, actions = new_scratchpad, new_actions
        else:
            scratchpad = torch.where(keep_s, new_scratchpad, scratchpad)
            actions = torch.where(keep_a, new_actions, actions)
        iterations = [n + 1 if a else n for n, a in zip(iterations, active, strict=True)]
        changes.append(change.float())
        if halting.delta > 0.0 and k >= halting.k_min:
            below = (change < halting.delta).tolist()  # the one host read-back per iteration
            stopped = [a and b for a, b in zip(active, below, strict=True)]
            if any(stopped):
                converged = [c or s for c, s in zip(converged, stopped, strict=True)]
                active = [a and not s for a, s in zip(active, stopped, strict=True)]
                if not any(active):
                    break
                flags = torch.tensor(active, device=scratchpad.device)
                keep_s = flags.view(-1, *([1] * (scratchpad.dim() - 1)))
                keep_a = flags.view(-1, *([1] * (actions.dim() - 1)))
    counts = torch.tensor(iterations, dtype=torch.int64)
    history = torch.stack(changes).cpu()
    ran = torch.arange(1, history.shape[0] + 1)[:, None] <= counts[None, :]
    history = torch.where(ran, history, torch.full_like(history, float("nan")))
    if halting.delta > 0.0:
        reasons = tuple(CONVERGED if c else MAX_ITERATIONS for c in converged)
    else:
        reasons = (FIXED,) * batch
    return HaltingResult(scratchpad, actions, counts, reasons, history)
