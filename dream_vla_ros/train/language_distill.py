"""Teaching a new instruction encoder to a trained model without touching its skills (torch).

The teacher is a trained checkpoint (the byte-token model shipped before WordLlama). The student shares all its
weights except the instruction encoder. Training is on text alone, without images: the student's instruction
tokens for any phrasing of a task (its own phrasings and generated paraphrases, :class:`PhrasingPool`) regress
onto the teacher's instruction tokens for the task's first training phrasing. The student's trunk, which is
the teacher's, then receives the tokens it was trained on, whatever the operator's wording. A short
behaviour-cloning pass can follow (``train_only``), with the rest of the model still frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.policy.model import VlaModel
from dream_vla_ros.policy.tokenizer import make_tokenizer
from dream_vla_ros.train.instructions import PhrasingPool


@dataclass(frozen=True)
class DistillResult:
    """Mean squared token error relative to the targets' mean square: at the start and at the end."""

    steps: int
    start_error: float
    final_error: float


def distill_instruction_encoder(student: VlaModel, teacher: VlaModel, pool: PhrasingPool, steps: int,
                                batch_size: int = 256, lr: float = 3e-3, seed: int = 0,
                                log: Callable[[str], None] = print) -> DistillResult:
    """Train ``student.trunk.text_words`` so its tokens match the teacher's (see the module docstring)."""
    if student.trunk.text_words is None:
        raise ConfigError("language teacher: the student model has no WordLlama instruction encoder")
    if student.config.tokenizer.trunk_tokens != teacher.config.tokenizer.trunk_tokens:
        raise ConfigError(f"language teacher: {teacher.config.tokenizer.trunk_tokens} instruction tokens, the "
                          f"student has {student.config.tokenizer.trunk_tokens}")
    tasks = sorted(t for t in pool.canonical if pool.canonical[t])
    if not tasks:
        raise ConfigError("language teacher: the dataset records no training phrasing to distil")
    teacher_tokenizer = make_tokenizer(teacher.config.tokenizer)
    student_tokenizer = make_tokenizer(student.config.tokenizer)
    with torch.no_grad():
        ids = torch.from_numpy(teacher_tokenizer.encode_batch([pool.canonical[t][0] for t in tasks]))
        targets = teacher.trunk.instruction_tokens(ids).float()  # [tasks, Q, W]
    scale = float(targets.pow(2).mean())
    encoder = student.trunk.text_words
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    errors: list[float] = []
    encoder.train()
    for step in range(steps):
        for group in optimizer.param_groups:  # cosine from lr to 5% of it
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * step / max(1, steps))))
        picks = rng.integers(len(tasks), size=batch_size)
        texts = [pool.draw(tasks[i], rng) for i in picks]
        tokens = torch.from_numpy(student_tokenizer.encode_batch(texts))
        loss = (encoder(tokens) - targets[torch.from_numpy(picks)]).pow(2).mean() / scale
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        errors.append(float(loss.detach()))
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"language distillation: step {step + 1}/{steps}, relative token error {np.mean(errors[-50:]):.4f}")
    return DistillResult(steps, float(np.mean(errors[:10])), float(np.mean(errors[-50:])))
