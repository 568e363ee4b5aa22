"""Fine-tuning start: copy what fits from a trained model into a new one, and say what was re-initialised."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TransferReport:
    copied: list[str] = field(default_factory=list)
    reinitialised: list[tuple[str, str]] = field(default_factory=list)  # (name, why)

    def lines(self) -> list[str]:
        out = [f"init: copied {len(self.copied)} tensors from the initial checkpoint"]
        out += [f"init: re-initialised {name} ({why})" for name, why in self.reinitialised]
        return out


def transfer_weights(target: torch.nn.Module, source: torch.nn.Module) -> TransferReport:
    """Copy every tensor of ``source`` whose name and shape match ``target``; report the others.

    A different joint set changes the proprio and action projections, a different image size the vision
    position embeddings, so exactly those layers start fresh.
    """
    report = TransferReport()
    source_state = source.state_dict()
    target_state = target.state_dict()
    for name, tensor in target_state.items():
        if name not in source_state:
            report.reinitialised.append((name, "not in the initial checkpoint"))
        elif source_state[name].shape != tensor.shape:
            shape_from, shape_to = list(source_state[name].shape), list(tensor.shape)
            report.reinitialised.append((name, f"shape {shape_from} -> {shape_to}"))
        else:
            target_state[name] = source_state[name].clone()
            report.copied.append(name)
    target.load_state_dict(target_state)
    return report
