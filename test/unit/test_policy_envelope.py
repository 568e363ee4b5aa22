"""The joint envelope: fitted from training data, kept in the checkpoint config, enforced on predictions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dream_vla_ros.configuration import to_mapping
from dream_vla_ros.errors import ConfigError, InputError
from dream_vla_ros.policy.config import JointEnvelope, model_config_from_mapping, preset
from dream_vla_ros.policy.envelope import confine, fit_envelope

ENVELOPE = JointEnvelope(position_min=(-1.0, 0.0, 0.5), position_max=(1.0, 0.0, 2.0))


def test_fit_spans_the_rows_of_every_array_and_skips_empty_ones():
    a = np.array([[0.0, 1.0], [2.0, -1.0]])
    b = np.array([[-3.0, 0.5]])
    envelope = fit_envelope([a, np.empty((0, 2)), b], quantile=0.0)
    assert envelope == JointEnvelope((-3.0, -1.0), (2.0, 1.0))
    assert fit_envelope([]) == JointEnvelope()
    with pytest.raises(InputError, match="NaN"):
        fit_envelope([np.array([[np.nan, 0.0]])])
    with pytest.raises(InputError, match=r"\[2, 3\] joints"):
        fit_envelope([a, np.zeros((1, 3))])
    with pytest.raises(InputError, match="quantile"):
        fit_envelope([a], quantile=0.5)


def test_a_few_outlier_rows_do_not_widen_the_envelope():
    rows = np.linspace(0.0, 1.0, 100_001)[:, None]
    outliers = np.array([[-5.0], [7.0]])
    envelope = fit_envelope([rows, outliers])  # the default quantile, 1e-4
    assert envelope.position_min[0] == pytest.approx(1e-4, abs=1e-5)
    assert envelope.position_max[0] == pytest.approx(1.0 - 1e-4, abs=1e-5)


def test_confine_clips_beyond_the_margin_and_counts():
    positions = np.array([[1.05, 0.2, 0.0], [0.0, -0.05, 1.0]])
    clipped, count = confine(positions, ENVELOPE, margin=0.1)
    np.testing.assert_allclose(clipped, [[1.05, 0.1, 0.4], [0.0, -0.05, 1.0]])
    assert count == 2
    assert confine(positions, ENVELOPE, margin=-1.0)[1] == 0  # off
    assert confine(positions, JointEnvelope(), margin=0.1)[1] == 0  # not recorded
    with pytest.raises(InputError, match="2 joints"):
        confine(np.zeros((4, 2)), ENVELOPE, 0.1)


@given(arrays(np.float64, (5, 3), elements=st.floats(-10, 10)), st.floats(0.0, 1.0))
def test_confined_positions_lie_within_the_margin_and_inside_ones_are_untouched(positions, margin):
    clipped, count = confine(positions, ENVELOPE, margin)
    low, high = np.array(ENVELOPE.position_min) - margin, np.array(ENVELOPE.position_max) + margin
    assert np.all(clipped >= low) and np.all(clipped <= high)
    inside = (positions >= low) & (positions <= high)
    np.testing.assert_array_equal(clipped[inside], positions[inside])
    assert count == int(np.count_nonzero(~inside))


def test_union_and_validation():
    other = JointEnvelope((-2.0, 0.1, 0.0), (0.0, 0.2, 1.0))
    assert ENVELOPE.union(other) == JointEnvelope((-2.0, 0.0, 0.0), (1.0, 0.2, 2.0))
    assert ENVELOPE.union(JointEnvelope()) == ENVELOPE and JointEnvelope().union(ENVELOPE) == ENVELOPE
    with pytest.raises(ConfigError, match="must not exceed"):
        JointEnvelope((1.0,), (0.0,))
    with pytest.raises(ConfigError, match="2 entries"):
        JointEnvelope((0.0,), (1.0, 2.0))
    with pytest.raises(ConfigError, match=r"envelope\.position_min"):
        preset("tiny", envelope=JointEnvelope((0.0,), (1.0,)))  # tiny has 3 joints


def test_the_envelope_round_trips_through_the_checkpoint_config_and_old_configs_have_none():
    config = preset("tiny", envelope=ENVELOPE)
    mapping = to_mapping(config)
    assert model_config_from_mapping(mapping).envelope == ENVELOPE
    mapping.pop("envelope")  # a config.json written before the envelope was recorded
    assert model_config_from_mapping(mapping).envelope == JointEnvelope()
