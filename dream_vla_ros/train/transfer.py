"""Fine-tuning start: copy what fits from a trained model into a new one, and say what was re-initialised."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Per-camera embedding: one row per camera of ``vision.cameras``, matched by camera name across models.
CAMERA_EMBEDDING = "vision.camera"


@dataclass
class TransferReport:
    copied: list[str] = field(default_factory=list)
    reinitialised: list[tuple[str, str]] = field(default_factory=list)  # (name, why)

    def lines(self) -> list[str]:
        out = [f"init: copied {len(self.copied)} tensors from the initial checkpoint"]
        out += [f"init: re-initialised {name} ({why})" for name, why in self.reinitialised]
        return out


def _cameras(model: torch.nn.Module) -> tuple[str, ...]:
    return tuple(model.config.vision.cameras) if hasattr(model, "config") else ()


def transfer_weights(target: torch.nn.Module, source: torch.nn.Module) -> TransferReport:
    """Copy every tensor of ``source`` whose name and shape match ``target``; report the others.

    A different joint set changes the proprio and action projections, a different image size the vision
    position embeddings, so exactly those layers start fresh. The camera embedding is matched row by row by
    camera name: cameras both models read keep their rows (in the target's order), new cameras start fresh.
    """
    report = TransferReport()
    source_state = source.state_dict()
    target_state = target.state_dict()
    source_cameras, target_cameras = _cameras(source), _cameras(target)
    for name, tensor in target_state.items():
        if name not in source_state:
            report.reinitialised.append((name, "not in the initial checkpoint"))
        elif name == CAMERA_EMBEDDING and source_cameras != target_cameras and source_cameras and target_cameras:
            rows = tensor.clone()
            new = []
            for i, camera in enumerate(target_cameras):
                if camera in source_cameras:
                    rows[i] = source_state[name][source_cameras.index(camera)]
                else:
                    new.append(camera)
            target_state[name] = rows
            if new:
                report.reinitialised.append((name, f"rows of the new camera(s) {', '.join(new)}"))
            else:
                report.copied.append(name)
        elif source_state[name].shape != tensor.shape:
            shape_from, shape_to = list(source_state[name].shape), list(tensor.shape)
            report.reinitialised.append((name, f"shape {shape_from} -> {shape_to}"))
        else:
            target_state[name] = source_state[name].clone()
            report.copied.append(name)
    target.load_state_dict(target_state)
    return report
