"""The generated phrasing family: varied, bounded, seeded, and never a held-out phrasing."""

from __future__ import annotations

import random

import pytest

from dream_vla_ros.sim import paraphrases as P
from dream_vla_ros.sim.tasks import MT10, TASKS

HELDOUT = {P.normalize(p) for spec in TASKS.values() for p in spec.heldout}


def test_no_template_or_wrapper_uses_a_word_only_heldout_phrasings_have():
    words = {w for task in MT10 for t in P.templates(task) for w in P.normalize(t).split()}
    words |= {w for group in (P._PREFIXES, P._SUFFIXES, P._PREAMBLES) for s in group for w in P.normalize(s).split()}
    assert {"shove", "disc", "grab", "sash", "get", "nudge", "hit", "fit"} <= P.heldout_only_words()
    assert not words & P.heldout_only_words()


@pytest.mark.parametrize("task", MT10)
def test_generated_phrasings_never_normalise_to_a_heldout_one(task):
    rng = random.Random(f"test:{task}")
    generated = [P.paraphrase(task, rng) for _ in range(3000)]
    assert not {P.normalize(g) for g in generated} & HELDOUT
    assert all(0 < len(g) <= P.MAX_CHARS for g in generated)
    assert len({P.normalize(g) for g in generated}) > 200  # a family, not a handful
    assert any(g != g.lower() for g in generated) and any("please" in g.lower() for g in generated)
    assert max(len(g) for g in generated) > 120  # preambles make some long


def test_family_is_seeded_distinct_and_starts_with_the_plain_templates():
    family = P.phrasing_family("drawer-open", 100)
    assert family == P.phrasing_family("drawer-open", 100) != P.phrasing_family("drawer-open", 100, seed=1)
    assert len({P.normalize(f) for f in family}) == 100
    assert family[:12] == list(P.templates("drawer-open"))
    assert set(TASKS["drawer-open"].train) <= set(P.templates("drawer-open"))  # the training phrasings are in it
