"""Teaching the WordLlama encoder to a trained byte-token model on text alone: the student's instruction tokens
come to match the teacher's, paraphrases and held-out phrasings included, and nothing else changes."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from dream_vla_ros.errors import ConfigError
from dream_vla_ros.policy.config import preset
from dream_vla_ros.policy.model import build_model
from dream_vla_ros.policy.tokenizer import make_tokenizer
from dream_vla_ros.sim.paraphrases import paraphrase
from dream_vla_ros.sim.tasks import TASKS
from dream_vla_ros.train.instructions import phrasing_pool
from dream_vla_ros.train.language_distill import distill_instruction_encoder
from dream_vla_ros.train.transfer import transfer_weights


def test_student_tokens_match_the_teachers_and_its_other_weights_stay():
    torch.manual_seed(0)
    teacher = build_model(preset("tiny"), load_pretrained=False).eval()
    with torch.no_grad():  # a trained teacher's phrasings give distinct tokens; random small embeddings do not
        teacher.trunk.text_embed.weight.mul_(50.0)
    words = dataclasses.replace(preset("tiny").tokenizer, kind="wordllama", max_tokens=128,
                                queries=teacher.config.tokenizer.trunk_tokens)
    student = build_model(dataclasses.replace(preset("tiny"), tokenizer=words), load_pretrained=False)
    transfer_weights(student, teacher)
    frozen = {k: v.clone() for k, v in student.state_dict().items() if not k.startswith("trunk.text_words")}
    tasks = ("push", "pick-place", "drawer-open")
    pool = phrasing_pool({t: list(TASKS[t].train) for t in tasks}, 100)
    result = distill_instruction_encoder(student, teacher, pool, 250, batch_size=64, lr=3e-3, log=lambda _: None)
    assert result.final_error < 0.1 * result.start_error, result
    assert all(torch.equal(student.state_dict()[k], v) for k, v in frozen.items())
    with torch.no_grad():  # fresh paraphrases (not the training ones) land nearest their own task's tokens
        targets = teacher.trunk.instruction_tokens(torch.from_numpy(
            make_tokenizer(teacher.config.tokenizer).encode_batch([TASKS[t].train[0] for t in tasks])))
        rng = random.Random(5)
        for i, task in enumerate(tasks):
            got = student.trunk.instruction_tokens(torch.from_numpy(
                make_tokenizer(words).encode_batch([paraphrase(task, rng) for _ in range(20)])))
            distances = ((got[:, None] - targets[None]) ** 2).mean(dim=(2, 3))  # [goals, tasks]
            assert (distances.argmin(dim=1) == i).float().mean() >= 0.9, (task, distances)


def test_a_byte_student_is_refused():
    tiny = build_model(preset("tiny"), load_pretrained=False)
    with pytest.raises(ConfigError, match="no WordLlama"):
        distill_instruction_encoder(tiny, tiny, phrasing_pool({"push": ["push the puck"]}, 0), 1)
